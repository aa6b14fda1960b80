"""Read an env file the way `docker run --env-file` does (podman 4.3 agrees).

The rules, from the Docker CLI's env-file reader:

- the file is read line by line; a UTF-8 byte order mark on the first line is
  dropped, and a line that is not valid UTF-8 is an error;
- leading white space is dropped; an empty line, or one that then starts with
  ``#``, is skipped (a ``#`` later in a line is part of the value);
- ``NAME=value``: the value is everything after the first ``=``, taken as it
  is: no quote removal, no escapes, no variable expansion, trailing spaces kept;
- a name holding a space or a tab, or an empty name, is an error;
- ``NAME`` alone takes the value of NAME from the caller's environment, and is
  skipped when that is not set.

Compose's ``env_file`` and ``.env`` files follow other rules (quotes removed,
``$`` expanded); this is not a reader for those.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

BOM = "\ufeff"


class EnvFileError(ValueError):
    """A line docker would refuse; the message names the line."""


def parse_env_file(
    path: str | os.PathLike, lookup: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the variables docker would set from the env file at path."""
    lookup = os.environ if lookup is None else lookup
    data = Path(path).read_bytes()
    found: dict[str, str] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvFileError(f"{path}:{number}: not valid UTF-8") from exc
        if number == 1:
            line = line.removeprefix(BOM)
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not name:
            raise EnvFileError(f"{path}:{number}: no variable name")
        if " " in name or "\t" in name:
            raise EnvFileError(f"{path}:{number}: variable {name!r} has white space")
        if sep:
            found[name] = value
        elif name in lookup:
            found[name] = lookup[name]
    return found
