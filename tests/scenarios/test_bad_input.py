"""Bad input: every setting given invalid values ends with one line and exit 2.

Cases come from docs/settings.md: each row's "accepted" column is matched
against the rules below to make invalid values of each applicable kind (wrong
type, out of range, unknown choice, unreadable secret file, both VAR and
VAR_FILE), so a new row is covered as soon as it is documented; a row no rule
understands fails `test_bad_input_every_setting_has_cases` until it gets a rule
or a stated exemption.  Combinations (contradicting settings, missing pieces)
and input files (malformed conf.yaml, a key that is not the certificate's, an
expired certificate) are listed by hand.

Agent settings go through the command line's own path in-process (`cli.main`,
with `GatewayClient.maintain` replaced by a trap that fails the test if
validation lets the value through); appliance settings through `init.main`.
A subset runs as real processes (`python -m ibeam_agents`, `... init`) and is
watched while it runs: no child process at all (gateway, browser, Xvfb), the
health port never listening.  Every case checks that the gateway's conf.yaml is
byte-identical afterwards and nothing else was written.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from gateway_sim.harness import SimGateway
from ibeam_agents import certs, cli, init, keeper, logs
from tests.support import procs
from tests.support.agent import REPO
from tests.support.ports import free_port

pytestmark = pytest.mark.scenario

DOC = REPO / "docs" / "settings.md"
FILE = "<a regular file>"  # replaced by the path of a plain text file
MISSING = "/nonexistent/ibeam-bad-input"
BASE_SECRET_VALUES = {"IBEAM_ACCOUNT": "bad-input-user", "IBEAM_PASSWORD": "bi-pw-1"}

# Settings with no invalid value of their own, and why.
EXEMPT = {
    "IBEAM_GATEWAY_PROCESS_MATCH": "free text",
    "IBEAM_TWO_FA_SELECT_TARGET": "free text (an option's label)",
    "IBEAM_SUPERVISOR_PROGRAM": "any name; supervisord says at run time if it has none",
    "IBEAM_CHROME_DRIVER_PATH": "environment, not configuration: the browser "
    "preflight reports it as BrowserUnavailable in /status, no login (S13)",
    "IBEAM_CHROME_BINARY_PATH": "as IBEAM_CHROME_DRIVER_PATH",
    "IBEAM_RUN_DIR": "read by the entrypoint shell only (tests/image/)",
}

# (pattern on the "accepted" column, [(kind, value), ...]); first match wins.
RULES: list[tuple[str, list[tuple[str, str]]]] = [
    (r"^boolean", [("unknown choice", "maybe")]),
    (r"whole number 0-65535", [("wrong type", "port"), ("out of range", "65536")]),
    (r"whole number ≥ 0", [("wrong type", "2.5"), ("out of range", "-1")]),
    (r"whole number ≥ 1", [("wrong type", "three"), ("out of range", "0")]),
    (r"numbers? > 0", [("wrong type", "soon"), ("out of range", "0")]),
    (r"numbers? ≥ 0", [("wrong type", "soon"), ("out of range", "-1")]),
    (r"^port$", [("wrong type", "https"), ("out of range", "65536")]),
    (r"^directory$", [("wrong type", FILE)]),
    (r"^path( starting|$)", [("wrong type", "v1/api/x")]),
    (r"IANA zone", [("unknown choice", "Mars/Olympus_Mons")]),
    (
        r"HH:MM",
        [
            ("wrong type", "25:61"),
            ("unknown choice", "Funday 10:00"),
            ("out of range", "01:10"),
        ],
    ),
    (r"TYPE@@identifier", [("unknown choice", "BOGUS@@x"), ("wrong type", "ID@@")]),
    (r"TAG_NAME@@text", [("unknown choice", "ID@@x")]),
    (r"^base32", [("wrong type", "not base32!")]),
    (r"^JSON object", [("wrong type", "[1, 2]"), ("wrong type", "{broken")]),
    (r"module\.Class", [("wrong type", "nomodule")]),
    (r"^command line", [("wrong type", "'unbalanced")]),
    (r"^X display", [("wrong type", "display99")]),
    (r"host name", [("wrong type", "not a host!")]),
    (r"^Fernet key", [("wrong type", "not-a-fernet-key")]),
    (r"PEM file", [("unreadable file", MISSING), ("wrong type", FILE)]),
    (r"unix:///", [("wrong type", "ftp://x"), ("wrong type", "unix://")]),
    (r"http\(s\)://", [("wrong type", "ftp://example.com"), ("wrong type", "x:5")]),
    (r"gateway patterns", [("wrong type", "*"), ("out of range", "172.16.0.0/12")]),
    (r"`[^`]+`, `[^`]+`", [("unknown choice", "bogus")]),
]


@dataclass(frozen=True)
class Row:
    names: tuple[str, ...]
    accepted: str
    appliance: bool


@dataclass(frozen=True)
class Case:
    """One invalid input; env values of None remove the variable."""

    id: str
    env: dict[str, str | None]
    names: tuple[str, ...]  # one of them must appear in the error line
    appliance: bool = False
    secret: str | None = None  # must not appear in the error line
    inputs: dict[str, bytes] = field(default_factory=dict)
    gateway_conf: bytes | None = None


def documented_rows() -> list[Row]:
    rows, previous, appliance = [], "", False
    for line in DOC.read_text().splitlines():
        if line.startswith("## Appliance settings"):
            appliance = True
        if not line.startswith("| `IBEAM_"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        accepted = previous if cells[2] == "as above" else cells[2]
        previous = accepted
        names = tuple(re.findall(r"IBEAM_[A-Z0-9_]+", cells[0]))
        rows.append(Row(names, accepted, appliance))
    return rows


def cases_for(row: Row, name: str) -> list[Case]:
    cases = []
    if "**secret**" in row.accepted:
        file_name = f"{name}_FILE"
        cases.append(
            Case(
                f"{name}-unreadable-secret-file",
                {name: None, file_name: MISSING},
                (name,),
                row.appliance,
            )
        )
        cases.append(
            Case(
                f"{name}-both-var-and-file",
                {name: "secret-value-1", file_name: FILE},
                (name,),
                row.appliance,
                secret="secret-value-1",
            )
        )
    for pattern, values in RULES:
        if re.search(pattern, row.accepted):
            for kind, value in values:
                cases.append(
                    Case(
                        f"{name}-{kind.replace(' ', '-')}-{value}",
                        {name: value},
                        (name,),
                        row.appliance,
                        secret=value if "**secret**" in row.accepted else None,
                    )
                )
            break
    return cases


def documented_cases() -> list[Case]:
    return [
        case
        for row in documented_rows()
        for name in row.names
        if name not in EXEMPT
        for case in cases_for(row, name)
    ]


def input_cases() -> list[Case]:
    """Contradictions, missing pieces and bad input files."""
    good_cert, good_key = certs.make_self_signed(["localhost"])
    _, other_key = certs.make_self_signed(["localhost"])
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired_cert, expired_key = certs.make_self_signed(
        ["localhost"], days=1, not_before=old
    )
    agent = [
        Case(
            "paper-contradicts-live",
            {"IBEAM_TRADING_MODE": "live", "IBEAM_USE_PAPER_ACCOUNT": "true"},
            ("IBEAM_TRADING_MODE",),
        ),
        Case(
            "backoff-min-above-max",
            {"IBEAM_BACKOFF_MIN": "100", "IBEAM_BACKOFF_MAX": "10"},
            ("IBEAM_BACKOFF_MIN",),
        ),
        Case(
            "element-and-legacy-id-differ",
            {"IBEAM_SUBMIT_EL": "ID@@a", "IBEAM_SUBMIT_EL_ID": "b"},
            ("IBEAM_SUBMIT_EL",),
        ),
        Case(
            "totp-and-alias-differ",
            {"IBEAM_TOTP_SECRET": "JBSWY3DP", "IBEAM_PYOTP_SECRET": "KRSXG5A"},
            ("IBEAM_TOTP_SECRET",),
        ),
        Case(
            "google-msg-handler",
            {"IBEAM_TWO_FA_HANDLER": "GOOGLE_MSG"},
            ("IBEAM_TWO_FA_HANDLER",),
        ),
        Case(
            "key-without-password",
            {"IBEAM_KEY": "k" * 44, "IBEAM_PASSWORD": None},
            ("IBEAM_KEY", "IBEAM_PASSWORD"),
        ),
        Case("no-account-no-terminal", {"IBEAM_ACCOUNT": None}, ("IBEAM_ACCOUNT",)),
        Case(
            "fs-secrets-unreadable",
            {
                "IBEAM_SECRETS_SOURCE": "fs",
                "IBEAM_ACCOUNT": FILE,
                "IBEAM_PASSWORD": MISSING,
            },
            ("IBEAM_PASSWORD",),
        ),
        Case(
            "fs-secrets-value-instead-of-path",
            {
                "IBEAM_SECRETS_SOURCE": "fs",
                "IBEAM_ACCOUNT": FILE,
                "IBEAM_PASSWORD": "MySecretPw!",
            },
            ("IBEAM_PASSWORD",),
            secret="MySecretPw!",
        ),
        Case(
            "malformed-gateway-conf-yaml",
            {},
            ("conf.yaml",),
            gateway_conf=b"listenPort: [5000\n",
        ),
        Case(
            "gateway-conf-yaml-bad-port",
            {},
            ("listenPort",),
            gateway_conf=b"listenPort: high\n",
        ),
    ]
    for handler, needed in (
        ("TOTP", "IBEAM_TOTP_SECRET"),
        ("COMMAND", "IBEAM_TWO_FA_COMMAND"),
        ("EXTERNAL_REQUEST", "IBEAM_EXTERNAL_REQUEST_URL"),
        ("CUSTOM_HANDLER", "IBEAM_CUSTOM_TWO_FA_HANDLER"),
    ):
        agent.append(
            Case(
                f"{handler}-without-its-piece",
                {"IBEAM_TWO_FA_HANDLER": handler},
                (needed,),
            )
        )
    appliance = [
        Case(
            "allow-without-loopback",
            {"IBEAM_GATEWAY_ALLOW": "10.*"},
            ("IBEAM_GATEWAY_ALLOW",),
            True,
        ),
        Case(
            "deny-loopback",
            {"IBEAM_GATEWAY_DENY": "127.0.0.1"},
            ("IBEAM_GATEWAY_DENY",),
            True,
        ),
        Case(
            "malformed-inputs-conf-yaml",
            {},
            ("conf.yaml",),
            True,
            inputs={"conf.yaml": b"listenPort: [5000\n"},
        ),
        Case(
            "inputs-conf-yaml-not-a-mapping",
            {},
            ("conf.yaml",),
            True,
            inputs={"conf.yaml": b"- listenPort\n"},
        ),
        Case(
            "inputs-conf-yaml-unknown-key",
            {},
            ("conf.yaml",),
            True,
            inputs={"conf.yaml": b"listenPort: 5000\nlistenPortt: 5001\n"},
        ),
        Case(
            "key-not-the-certificates",
            {},
            ("key.pem",),
            True,
            inputs={"cert.pem": good_cert, "key.pem": other_key},
        ),
        Case(
            "expired-certificate",
            {},
            ("cert.pem",),
            True,
            inputs={"cert.pem": expired_cert, "key.pem": expired_key},
        ),
        Case("half-a-pem-pair", {}, ("key.pem",), True, inputs={"cert.pem": good_cert}),
        Case(
            "base-url-port-differs-from-conf",
            {"IBEAM_GATEWAY_BASE_URL": "https://localhost:5999"},
            ("IBEAM_GATEWAY_BASE_URL",),
            True,
        ),
    ]
    del good_key
    return agent + appliance


ALL_CASES = documented_cases() + input_cases()
# One case of each kind, run as a real process.
PROCESS_CASES = (
    "IBEAM_MAINTENANCE_INTERVAL-wrong-type-soon",
    "IBEAM_HEALTH_SERVER_PORT-out-of-range-65536",
    "IBEAM_TRADING_MODE-unknown-choice-bogus",
    "IBEAM_PASSWORD-unreadable-secret-file",
    "IBEAM_TOTP_SECRET-both-var-and-file",
    "malformed-gateway-conf-yaml",
    "IBEAM_GATEWAY_PORT-out-of-range-65536",
    "malformed-inputs-conf-yaml",
    "key-not-the-certificates",
    "expired-certificate",
)


# -- the pieces every case uses ---------------------------------------------------


@dataclass
class Setup:
    tmp: Path
    gateway: Path
    inputs: Path
    outputs: Path
    plain_file: Path
    health_port: int

    def environ(self, case: Case) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IBEAM_")}
        env.update(BASE_SECRET_VALUES)
        env.update(
            IBEAM_GATEWAY_DIR=str(self.gateway),
            IBEAM_INPUTS_DIR=str(self.inputs),
            IBEAM_OUTPUTS_DIR=str(self.outputs),
            IBEAM_HEALTH_SERVER_PORT=str(self.health_port),
        )
        for name, value in case.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = str(self.plain_file) if value == FILE else value
        return env

    def prepare(self, case: Case) -> None:
        self.inputs.mkdir(parents=True, exist_ok=True)
        for name, data in case.inputs.items():
            (self.inputs / name).write_bytes(data)
        if case.gateway_conf is not None:
            (self.gateway / "root" / "conf.yaml").write_bytes(case.gateway_conf)

    def snapshot(self) -> dict[str, bytes]:
        """Every file of the gateway dir, the run dir and the outputs dir."""
        found = {}
        for top in (self.gateway, self.tmp / "run", self.outputs):
            for path in sorted(top.rglob("*")) if top.exists() else ():
                if path.is_file():
                    found[str(path)] = path.read_bytes()
        return found


@pytest.fixture
def setup(tmp_path) -> Setup:
    gateway = SimGateway(tmp_path / "gw").install().root
    plain = tmp_path / "plain.txt"
    plain.write_text("just text\n")
    (tmp_path / "run").mkdir()
    return Setup(
        tmp_path, gateway, tmp_path / "inputs", tmp_path / "outputs", plain, free_port()
    )


def init_argv(setup: Setup) -> list[str]:
    return [
        "--gateway-dir",
        str(setup.gateway),
        "--inputs-dir",
        str(setup.inputs),
        "--agent-env",
        str(setup.tmp / "run" / "agent.env"),
    ]


def check_error(case: Case, code: int, stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, f"exit {code}, stderr {stderr!r}"
    assert len(lines) == 1, lines
    assert lines[0].split(":", 1)[0].endswith("Error"), lines[0]
    assert any(name in lines[0] for name in case.names), lines[0]
    if case.secret and len(case.secret) >= 3:
        assert case.secret not in lines[0], lines[0]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NotRefused(AssertionError):
    """The command line got past validation and would have started the agent."""


@pytest.fixture
def in_process(monkeypatch):
    """Run cli.main / init.main here, restoring logging and the environment."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def trap(self, **kwargs):
        raise NotRefused("validation passed: the agent would start now")

    monkeypatch.setattr(keeper.GatewayClient, "maintain", trap)
    yield monkeypatch
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.forget_secrets()


# -- the tests ------------------------------------------------------------------


def test_bad_input_every_setting_has_cases():
    """Each documented variable has invalid values of its kinds, or a reason not to."""
    rows = documented_rows()
    assert len(rows) > 50
    covered = {name for case in ALL_CASES for name in case.env}
    for row in rows:
        for name in row.names:
            if name in EXEMPT:
                continue
            assert cases_for(row, name), (
                f"{name} (accepted: {row.accepted!r}) has no invalid values: add a "
                "rule or an exemption to tests/scenarios/test_bad_input.py"
            )
            assert name in covered
    assert set(PROCESS_CASES) <= {case.id for case in ALL_CASES}


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_bad_input_is_refused_with_one_line(case, setup, in_process, capsys):
    """One line on stderr naming the input, exit 2, nothing started or written."""
    setup.prepare(case)
    before = setup.snapshot()
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    env = setup.environ(case)
    for name in [k for k in os.environ if k.startswith("IBEAM_")]:
        in_process.delenv(name)
    for name, value in env.items():
        in_process.setenv(name, value)
    capsys.readouterr()

    if case.appliance:
        code = init.main(init_argv(setup))
    else:
        code = cli.main([])
    check_error(case, code, capsys.readouterr().err)

    now = {p.pid for p in psutil.Process().children(recursive=True)}
    assert now <= children, "a process was started"
    assert not listening(setup.health_port)
    assert setup.snapshot() == before


# Agent cases the appliance's init step sees too.  Not: a gateway conf.yaml of
# the case's own (the init step replaces it), IBEAM_SUPERVISOR_URL (supervisord
# sets the agent's own, whatever the container was given).
INIT_AGENT_CASES = [
    case
    for case in ALL_CASES
    if not case.appliance
    and case.gateway_conf is None
    and "IBEAM_SUPERVISOR_URL" not in case.env
]


@pytest.mark.parametrize("case", INIT_AGENT_CASES, ids=lambda case: case.id)
def test_bad_input_agent_setting_stops_the_init_step(case, setup, in_process, capsys):
    """`init --check-agent` (the entrypoint's way) refuses what the agent would:
    one line, exit 2, before supervisord would start anything; nothing written."""
    setup.prepare(case)
    before = setup.snapshot()
    for name in [k for k in os.environ if k.startswith("IBEAM_")]:
        in_process.delenv(name)
    for name, value in setup.environ(case).items():
        in_process.setenv(name, value)
    capsys.readouterr()
    code = init.main([*init_argv(setup), "--check-agent"])
    captured = capsys.readouterr()
    check_error(case, code, captured.err)
    if case.secret and len(case.secret) >= 3:
        assert case.secret not in captured.out
    assert setup.snapshot() == before


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case",
    [case for case in ALL_CASES if case.id in PROCESS_CASES],
    ids=lambda case: case.id,
)
def test_bad_input_real_process_starts_nothing(case, setup):
    """The real program: watched while it runs, nothing starts, then exit 2."""
    setup.prepare(case)
    before = setup.snapshot()
    argv = [sys.executable, "-m", "ibeam_agents"]
    if case.appliance:  # as image/entrypoint.sh runs it
        argv = [sys.executable, "-m", "ibeam_agents", "init", *init_argv(setup)]
    with procs.tracking() as snap:
        env = setup.environ(case)
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started, listened = set(), False
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                kids = psutil.Process(process.pid).children(recursive=True)
                started |= {f"{kid.pid} {kid.name()}" for kid in kids}
            except psutil.Error:
                pass
            listened = listened or listening(setup.health_port)
            time.sleep(0.02)
        stdout, stderr = process.communicate(timeout=30)
        procs.assert_none_left(snap, names=(*procs.BROWSER_NAMES, "python", "bash"))
    check_error(case, process.returncode, stderr)
    assert started == set(), f"processes started: {started}"
    assert not listened
    assert setup.snapshot() == before
    if not case.appliance:
        assert "Traceback" not in stdout + stderr


@pytest.mark.parametrize(
    "command", [["ibeam_agents", "init"], ["ibeam_agents.init"]], ids=" ".join
)
def test_bad_input_ibeam_init_subcommand_passes_its_options(setup, command):
    """`ibeam init` (docs/agent.md) takes the init step's options, like the module."""
    case = next(c for c in ALL_CASES if c.id == "malformed-inputs-conf-yaml")
    setup.prepare(case)
    done = subprocess.run(
        [sys.executable, "-m", *command, *init_argv(setup)],
        cwd=REPO,
        env=setup.environ(case),
        capture_output=True,
        text=True,
        timeout=60,
    )
    check_error(case, done.returncode, done.stderr)
