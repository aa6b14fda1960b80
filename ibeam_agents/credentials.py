"""Credentials for the login page: where they come from and how they are kept."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    """A user name and the plain password to type; the repr never shows either."""

    account: str = field(repr=False)
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return "Credentials(account='***', password='***')"
