"""Search what a run leaves visible on the machine for secrets (the security sweep).

    secrets = Secrets.fresh()               # unique values, so no false alarms
    with ProcessSampler(secrets, marker=("TEST_PROCS_TOKEN", token)) as sampler:
        run_the_agent()
    assert sampler.findings == []
    assert secrets.found_in(log_text) == []

`ProcessSampler` reads, every few tenths of a second, the command line of every
process on the machine and the environment of the processes a test started
(those carrying its marker variable), so it sees the browser and its driver,
which live only while a login runs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets as random
import threading
import time
from dataclasses import dataclass, field

import psutil
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

TOTP_STEP = 30


@dataclass
class Secrets:
    """The values that must never be visible, each with a label for messages."""

    user: str
    password: str
    totp_secret: str
    account_id: str
    user_id: int
    header_token: str
    codes: set[str] = field(default_factory=set)
    session_ids: list[str] = field(default_factory=list)

    @classmethod
    def fresh(cls) -> Secrets:
        """Random values (the password full of shell-hostile characters)."""
        token = random.token_hex(5)
        return cls(
            user=f"sweep{token}",
            password=f"Sw{token}$\"d#1\\a&b|c'z",
            totp_secret=base64.b32encode(random.token_bytes(20)).decode(),
            account_id=f"U{random.randbelow(9_000_000) + 1_000_000}",
            user_id=random.randbelow(900_000_000) + 100_000_000,
            header_token=random.token_urlsafe(18),
        )

    def headers(self) -> str:
        """IBEAM_EXTERNAL_REQUEST_HEADERS carrying the token (a secret setting)."""
        return json.dumps({"Authorization": f"Bearer {self.header_token}"})

    def account(self) -> dict:
        """The simulator's accounts-file entry for this user (TOTP second factor)."""
        return {
            "user": self.user,
            "password": self.password,
            "second_factor": "totp",
            "totp_secret": self.totp_secret,
            "account_id": self.account_id,
            "user_id": self.user_id,
        }

    def add_codes(self, start: float, end: float) -> None:
        """Every TOTP code valid from start to end, one step either side."""
        key = base64.b32decode(self.totp_secret)
        totp = TOTP(key, 6, SHA1(), TOTP_STEP, enforce_key_length=False)
        at = start - TOTP_STEP
        while at <= end + TOTP_STEP:
            self.codes.add(totp.generate(at).decode())
            at += TOTP_STEP

    def add_session_ids(self, ids: list[str]) -> None:
        for sid in ids:
            self.session_ids.append(sid)
            # iserver/accounts shows a dotted form of the same id
            self.session_ids.append(f"{sid[:7]}.{sid[7:15]}")

    def labelled(self, *, codes: bool = True) -> list[tuple[str, re.Pattern]]:
        """(label, pattern) for each value; codes only match as whole numbers."""
        plain = [
            ("password", self.password),
            ("TOTP secret", self.totp_secret),
            ("user name", self.user),
            ("account id", self.account_id),
            ("request header", self.header_token),
        ]
        plain += [("session id", sid) for sid in self.session_ids]
        found = [(label, re.compile(re.escape(value))) for label, value in plain]
        digits = [("user id", str(self.user_id))]
        if codes:
            digits += [("code", code) for code in sorted(self.codes)]
        found += [(label, re.compile(rf"(?<!\d){v}(?!\d)")) for label, v in digits]
        return found

    def found_in(self, data: bytes | str, *, codes: bool = True) -> list[str]:
        """Labels of the secrets that occur in data."""
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        return [label for label, reg in self.labelled(codes=codes) if reg.search(text)]


@dataclass(frozen=True)
class Finding:
    pid: int
    name: str
    where: str  # "cmdline" or "environ"
    labels: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}) {self.where}: {', '.join(self.labels)}"


class ProcessSampler(threading.Thread):
    """Watch the process table in the background while a run goes on."""

    def __init__(
        self,
        secrets: Secrets,
        *,
        marker: tuple[str, str],
        check_environ=lambda process, kind: True,
        interval: float = 0.2,
    ) -> None:
        """check_environ(process, kind) says whose environment must be clean."""
        super().__init__(daemon=True, name="process-sampler")
        self.secrets = secrets
        self.marker = marker
        self.check_environ = check_environ
        self.interval = interval
        self.findings: set[Finding] = set()
        self.seen: dict[str, set[int]] = {}
        self.rounds = 0
        self._halt = threading.Event()

    def __enter__(self) -> ProcessSampler:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        """One pass over every process."""
        self.rounds += 1
        for process in psutil.process_iter():
            if process.pid == os.getpid():
                continue
            try:
                self._check(process)
            except psutil.Error:
                continue

    def _check(self, process: psutil.Process) -> None:
        cmdline = process.cmdline()
        name = process.name()
        ours = process.environ().get(self.marker[0]) == self.marker[1]
        # Codes are 6-digit numbers: only look for them in our own processes.
        labels = self.secrets.found_in(" ".join(cmdline), codes=ours)
        if labels:
            kind = describe(name, cmdline, name)
            self.findings.add(Finding(process.pid, kind, "cmdline", tuple(labels)))
        if not ours:
            return
        program = os.path.basename(cmdline[0]) if cmdline else name
        kind = describe(name, cmdline, program)
        self.seen.setdefault(kind, set()).add(process.pid)
        if not self.check_environ(process, kind):
            return
        environ = "\0".join(f"{k}={v}" for k, v in process.environ().items())
        labels = self.secrets.found_in(environ)
        if labels:
            self.findings.add(Finding(process.pid, kind, "environ", tuple(labels)))

    def saw(self, kind: str) -> bool:
        return bool(self.seen.get(kind))


def describe(name: str, cmdline: list[str], program: str) -> str:
    """A kind for a process: chromium, chromedriver, Xvfb, gateway, agent, ..."""
    joined = " ".join(cmdline)
    if "ibgroup.web.core.clientportal.gw.GatewayStart" in joined:
        return "gateway"
    if "ibeam_agents.eventlistener" in joined:
        return "eventlistener"
    if "-m ibeam_agents" in joined or joined.endswith("-m ibeam_agents"):
        return "agent"
    for kind in ("chromedriver", "chromium", "chrome", "Xvfb", "supervisord"):
        if name.startswith(kind) or program.startswith(kind):
            return "chromium" if kind == "chrome" else kind
    return program


def wait_until(predicate, timeout: float, what: str, log=lambda: "") -> None:
    """Poll predicate every 0.2 s; fail naming what (and a log tail) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log()[-6000:]}")
