"""The failure budget: how many more login failures may risk the account.

IBKR locks an account after a few bad logins.  Failures that could lead there
(bad credentials, second-factor timeouts, logins that never authenticate) spend
the budget; when it is spent, the agent stops logging in until an operator runs
``ibeam reset-failures``.  A success refills it.

The budget lives in a small JSON file (mode 0600) in the outputs dir, written
atomically, so restarts of the agent, of supervisord or of the container do not
refill it.  Every operation reads the file first, so a reset made by another
process is seen at once.  A login attempt *reserves* before it starts and
*settles* after; a reservation found on load (the agent died mid-attempt)
counts as spent, because the page may well have seen the password.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibeam_agents.errors import ProcessControlError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HISTORY_LENGTH = 20
INTERRUPTED = "Interrupted"


@dataclass(frozen=True)
class BudgetState:
    """A snapshot of the budget file."""

    spent: int
    limit: int
    locked: bool
    reason: str | None
    pending: str | None
    history: tuple[dict, ...]

    @property
    def exhausted(self) -> bool:
        return self.locked or self.spent >= self.limit

    @property
    def remaining(self) -> int:
        return 0 if self.locked else max(0, self.limit - self.spent)


class FailureBudget:
    """The on-disk failure budget (see the module docstring)."""

    def __init__(
        self, path: Path | str, limit: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self.limit = limit
        self._clock = clock

    # reading -----------------------------------------------------------------

    def _empty(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "spent": 0,
            "locked": False,
            "reason": None,
            "pending": None,
            "history": [],
        }

    def _load(self) -> dict[str, Any]:
        """The file's content; an unreadable file counts as a spent budget."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._empty()
        except OSError as exc:
            return self._unreadable(f"cannot be read ({exc.strerror})")
        try:
            data = json.loads(text)
            spent = int(data["spent"])
        except (ValueError, KeyError, TypeError):
            return self._unreadable("is not a budget file")
        state = self._empty()
        state.update({k: data.get(k, v) for k, v in state.items()})
        state["spent"] = max(0, spent)
        return state

    def _unreadable(self, why: str) -> dict[str, Any]:
        # Safety first: if we cannot tell how many failures there were, assume
        # the worst until an operator resets the file.
        log.error(
            "failure budget %s %s; logins stay stopped until `ibeam reset-failures`",
            self.path,
            why,
        )
        state = self._empty()
        state.update(locked=True, reason=f"budget file {why}")
        return state

    def _state(self, data: dict[str, Any]) -> BudgetState:
        return BudgetState(
            spent=data["spent"],
            limit=self.limit,
            locked=bool(data["locked"]),
            reason=data["reason"],
            pending=data["pending"],
            history=tuple(data["history"]),
        )

    def state(self) -> BudgetState:
        """The current budget, with a stale reservation counted as spent."""
        with self._locked():
            data = self._load()
            if data["pending"]:
                self._record(
                    data, INTERRUPTED, f"attempt ({data['pending']}) cut short"
                )
                data["pending"] = None
                self._save(data)
            return self._state(data)

    @property
    def spent(self) -> int:
        return self.state().spent

    @property
    def exhausted(self) -> bool:
        return self.state().exhausted

    @property
    def remaining(self) -> int:
        return self.state().remaining

    # changing ----------------------------------------------------------------

    def reserve(self, what: str = "login") -> BudgetState:
        """Mark an attempt as started; it counts as spent if we never settle."""
        with self._locked():
            data = self._load()
            if data["pending"]:
                self._record(
                    data, INTERRUPTED, f"attempt ({data['pending']}) cut short"
                )
            data["pending"] = what
            self._save(data)
            return self._state(data)

    def release(self) -> BudgetState:
        """The attempt ended without spending (success or a free failure)."""
        with self._locked():
            data = self._load()
            data["pending"] = None
            self._save(data)
            return self._state(data)

    def spend(self, kind: str, detail: str = "") -> BudgetState:
        """Count one failure of kind (an error class name) and settle the attempt."""
        with self._locked():
            data = self._load()
            data["pending"] = None
            self._record(data, kind, detail)
            self._save(data)
            state = self._state(data)
        log.warning(
            "failure budget: %d of %d spent (%s)", state.spent, state.limit, kind
        )
        return state

    def lock(self, reason: str) -> BudgetState:
        """Stop every login until reset (the account says it is locked)."""
        with self._locked():
            data = self._load()
            data.update(pending=None, locked=True, reason=reason)
            self._record(data, "AccountLocked", reason, count=False)
            self._save(data)
            return self._state(data)

    def succeed(self) -> BudgetState:
        """A login worked: the budget is full again."""
        with self._locked():
            data = self._load()
            changed = data["spent"] or data["pending"] or data["locked"]
            data.update(spent=0, pending=None, locked=False, reason=None)
            if changed:
                self._save(data)
            return self._state(data)

    def reset(self, by: str = "operator") -> BudgetState:
        """Refill the budget and lift a lock (``ibeam reset-failures``)."""
        with self._locked():
            data = self._load()
            if str(data["reason"] or "").startswith("budget file"):
                data = self._empty()
            data.update(spent=0, pending=None, locked=False, reason=None)
            self._record(data, "Reset", f"by {by}", count=False)
            self._save(data)
            return self._state(data)

    def _record(self, data: dict, kind: str, detail: str, *, count: bool = True):
        if count:
            data["spent"] += 1
        entry = {"kind": kind, "detail": detail[:200], "at": round(self._clock(), 3)}
        data["history"] = (list(data["history"]) + [entry])[-HISTORY_LENGTH:]

    # file handling -----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write between the agent and the CLI."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ProcessControlError(
                f"the failure budget cannot be kept in {self.path.parent} "
                f"({exc.strerror}); make IBEAM_OUTPUTS_DIR writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, data: dict) -> None:
        """Write atomically: a temporary file in the same dir, fsync, rename."""
        data["version"] = FORMAT_VERSION
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".budget-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ProcessControlError(
                f"the failure budget {self.path} cannot be written ({exc.strerror})"
            ) from exc
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def signature(self) -> tuple[int, int] | None:
        """(mtime_ns, size) of the file, to notice a reset made elsewhere."""
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size
