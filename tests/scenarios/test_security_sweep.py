"""Security sweep: what a run leaves visible on the machine holds no secret.

Two real runs, each shared by the tests below it (module-scoped fixtures):

- standalone: the agent (`python -m ibeam_agents`) starts the simulated gateway
  itself and goes through a TOTP code check that hangs (the page is saved with
  everything typed in), a password + TOTP login, a competing session, a dropped
  brokerage session, a spurious bad-password answer, an unrecognised login page
  (saved again) and expired sessions;
- appliance: `scripts/demo.sh` (what `make demo` runs: the image's entrypoint
  functions, the init step and supervisord with the image's supervisord.conf)
  with certificates in the inputs dir, up to a TOTP login.

Secrets are fresh random values (password, TOTP secret, user name, account and
user ids); the TOTP codes valid during the run and the session ids the
simulator handed out are added afterwards.  Every log line, every file in the
outputs dir (PNG bytes and HTML), the health server's answers, the rendered
conf.yaml, agent.env and supervisord.conf, and the process table (every command
line; the environment of the gateway, Xvfb, Chromium and chromedriver) are
searched for them.  The agent itself is started with its secrets in its
environment, the worst case, so its children are checked for inheriting them.

The image's non-root user is checked by tests/image/test_image.py
(`test_image_runs_everything_as_unprivileged_user`); here only the Dockerfile is
read, so that the image is not rebuilt.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from gateway_sim.harness import SimGateway
from ibeam_agents import certs, init
from tests.support import procs
from tests.support.agent import REPO, AgentProcess, http, kill_gateways
from tests.support.needs import require_binaries
from tests.support.ports import free_port
from tests.support.sweep import ProcessSampler, Secrets, wait_until

pytestmark = pytest.mark.scenario

MARKER_VAR = "SWEEP_MARKER"
#: the appliance run's own process, started with the secrets as `docker run -e`
#: starts the entrypoint (it and its subshells); every program it runs must be clean
STARTED_WITH_SECRETS = str(REPO / "scripts" / "demo.sh")
HEALTH_ROUTES = ("/status", "/metrics", "/readyz", "/livez")


@dataclass
class Run:
    """What one run left behind, collected for the tests."""

    secrets: Secrets
    log: str = ""
    answers: list[str] = field(default_factory=list)
    files: dict[Path, bytes] = field(default_factory=dict)
    modes: dict[Path, int] = field(default_factory=dict)
    sampler: ProcessSampler | None = None
    extra: dict = field(default_factory=dict)

    def collect(self, *paths: Path) -> None:
        for top in paths:
            found = [top] if top.is_file() else sorted(top.rglob("*"))
            for path in found:
                if path.is_file():
                    self.files[path] = path.read_bytes()
                    self.modes[path] = stat.S_IMODE(path.stat().st_mode)


def health_answers(port: int) -> list[str]:
    return [
        http("GET", f"http://127.0.0.1:{port}{route}")[1].decode(errors="replace")
        for route in HEALTH_ROUTES
    ]


# -- the standalone run -----------------------------------------------------------


def drive_standalone(agent: AgentProcess, sim: SimGateway, run: Run) -> None:
    """Logins, session states and two saved pages, waiting for each to settle.

    The first login's code check hangs (the simulator starts with a long TOTP
    latency), so the login stops at its step timeout and saves the page with
    the user name, password and code typed in.  TOTP codes are used once each,
    so after the second login the account drops its second factor: the later
    logins need not wait for a fresh 30 s step.
    """
    state = sim.state

    def settle(what: str, predicate, timeout: float = 90) -> None:
        agent.wait_for(lambda s: s["ready"] and predicate(state()), timeout, what)
        run.answers.extend(health_answers(agent.health_port))

    agent.wait_for(
        lambda s: s["failures"]["by_class"].get("LoginTimeout", 0) >= 1,
        90,
        "a login stuck at the code check",
    )
    run.answers.extend(health_answers(agent.health_port))
    sim.faults(totp_latency_ms=0)
    settle("the first login", lambda s: s["login_successes"] == 1, 120)
    run.extra["activate_get"] = agent.get("/activate")[0]
    run.extra["deactivate_get"] = agent.get("/deactivate")[0]

    inits = state()["ssodh_inits"]
    sim.compete()
    settle("a session taken back", lambda s: s["ssodh_inits"] > inits)

    reauths = state()["reauthentications"]
    sim.drop()
    settle("a reauthentication", lambda s: s["reauthentications"] > reauths)

    sim.set_accounts([{**run.secrets.account(), "second_factor": "none"}])
    sim.faults(spurious_bad_password=1)
    sim.expire()
    settle("a login after a refused one", lambda s: s["login_successes"] == 2)

    sim.faults(login_page="unrecognised")
    sim.expire(style="401")
    agent.wait_for(
        lambda s: s["failures"]["by_class"].get("PageNotRecognised", 0) >= 1,
        90,
        "an unrecognised page",
    )
    run.answers.extend(health_answers(agent.health_port))
    sim.faults(login_page="current")
    settle("a login after the unknown page", lambda s: s["login_successes"] == 3)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Run:
    require_binaries("chromium", "chromedriver", "Xvfb")
    tmp = tmp_path_factory.mktemp("sweep")
    run = Run(Secrets.fresh())
    sim = SimGateway(
        tmp / "gw",
        accounts=[run.secrets.account()],
        faults={"auth_delay_ms": 300, "totp_latency_ms": 30000},
    ).install()
    env = {
        "IBEAM_TWO_FA_HANDLER": "TOTP",
        "IBEAM_TOTP_SECRET": run.secrets.totp_secret,
        "IBEAM_EXTERNAL_REQUEST_HEADERS": run.secrets.headers(),
        "IBEAM_PAGE_LOAD_TIMEOUT": "6",
        "IBEAM_OAUTH_TIMEOUT": "8",
    }
    started = time.time()
    with procs.tracking(MARKER_VAR) as snap:
        # Built inside the block: the agent's environment carries the marker.
        agent = AgentProcess(
            sim, tmp, env=env, account=run.secrets.user, password=run.secrets.password
        )
        marker = (MARKER_VAR, snap.token.partition("=")[2])
        sampler = ProcessSampler(
            run.secrets,
            marker=marker,
            check_environ=lambda process, kind: process.pid != agent.process.pid,
        )
        try:
            with sampler, agent:
                drive_standalone(agent, sim, run)
                run.extra["session_ids"] = sim.state()["session_ids"]
                run.extra["exit"] = agent.terminate()[0]
        finally:
            kill_gateways(sim.root)
        procs.assert_none_left(snap)
    run.secrets.add_codes(started, time.time())
    run.secrets.add_session_ids(run.extra["session_ids"])
    run.log = agent.log()
    run.sampler = sampler
    run.collect(agent.outputs)
    return run


@pytest.mark.timeout(600)
def test_sweep_standalone_logs_and_outputs_hold_no_secret(standalone):
    """Log lines, health answers and every output file (PNG, HTML, budget)."""
    run = standalone
    assert run.extra["exit"] == 0
    assert len(run.extra["session_ids"]) >= 3
    assert run.secrets.codes
    names = [path.name for path in run.files]
    assert sum(name.endswith(".png") for name in names) >= 2, names
    assert sum(name.endswith(".html") for name in names) >= 2, names
    assert run.secrets.found_in(run.log) == []
    for answer in run.answers:
        assert run.secrets.found_in(answer) == [], answer[:200]
    for path, data in run.files.items():
        assert run.secrets.found_in(data) == [], path


@pytest.mark.timeout(600)
def test_sweep_standalone_process_table_holds_no_secret(standalone):
    """Command lines everywhere; environments of the gateway, Xvfb, browser, driver."""
    sampler = standalone.sampler
    for kind in ("gateway", "Xvfb", "chromium", "chromedriver"):
        assert sampler.saw(kind), f"never sampled {kind}: {sorted(sampler.seen)}"
    assert sorted(map(str, sampler.findings)) == []


@pytest.mark.timeout(600)
def test_sweep_standalone_saved_pages_and_budget_are_owner_only(standalone):
    private = [
        path for path in standalone.modes if path.suffix in (".png", ".html", ".json")
    ]
    assert private
    for path in private:
        assert standalone.modes[path] & 0o077 == 0, (
            f"{path} {oct(standalone.modes[path])}"
        )


@pytest.mark.timeout(600)
def test_sweep_health_server_state_changing_routes_refuse_get(standalone):
    assert standalone.extra["activate_get"] == 405
    assert standalone.extra["deactivate_get"] == 405


# -- the appliance run ------------------------------------------------------------


def free_display() -> str:
    for number in range(420, 600):
        if (
            not Path(f"/tmp/.X{number}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{number}").exists()
        ):
            return f":{number}"
    raise RuntimeError("no free X display between :420 and :599")


def appliance_env(scratch: Path, secrets: Secrets, marker: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IBEAM_", "GATEWAY_SIM_")) and key != "DISPLAY"
    }
    env.update(
        PATH=f"{REPO / '.venv' / 'bin'}:{env['PATH']}",
        IBEAM_DEMO_DIR=str(scratch),
        IBEAM_DEMO_DISPLAY=free_display(),
        IBEAM_INPUTS_DIR=str(scratch / "inputs"),
        IBEAM_GATEWAY_PORT=str(free_port()),
        IBEAM_HEALTH_SERVER_PORT=str(free_port()),
        GATEWAY_SIM_CONTROL_PORT=str(free_port()),
        GATEWAY_SIM_FAULTS='{"auth_delay_ms": 300}',
        IBEAM_ACCOUNT=secrets.user,
        IBEAM_PASSWORD=secrets.password,
        IBEAM_TWO_FA_HANDLER="TOTP",
        IBEAM_TOTP_SECRET=secrets.totp_secret,
        IBEAM_EXTERNAL_REQUEST_HEADERS=secrets.headers(),
        IBEAM_MAINTENANCE_INTERVAL="2",
        IBEAM_LOG_LEVEL="DEBUG",
    )
    env[MARKER_VAR] = marker
    return env


def stop_appliance(process: subprocess.Popen, marker: str) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_VAR) == marker:
                proc.kill()
        except psutil.Error:
            continue


@pytest.fixture(scope="module")
def appliance() -> Run:
    require_binaries("chromium", "chromedriver", "Xvfb")
    scratch = Path(tempfile.mkdtemp(prefix="ibs-"))  # unix socket paths are short
    run = Run(Secrets.fresh())
    SimGateway(scratch / "clientportal.gw", accounts=[run.secrets.account()]).install()
    (scratch / "inputs").mkdir()
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (scratch / "inputs" / "cert.pem").write_bytes(cert_pem)
    (scratch / "inputs" / "key.pem").write_bytes(key_pem)
    marker = uuid.uuid4().hex
    env = appliance_env(scratch, run.secrets, marker)
    health = int(env["IBEAM_HEALTH_SERVER_PORT"])
    log_path = scratch / "appliance.log"
    started = time.time()
    sampler = ProcessSampler(
        run.secrets,
        marker=(MARKER_VAR, marker),
        check_environ=lambda process, kind: (
            STARTED_WITH_SECRETS not in process.cmdline()
        ),
    )
    with log_path.open("ab") as log_file, sampler:
        process = subprocess.Popen(
            [str(REPO / "scripts" / "demo.sh")],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: http("GET", f"http://127.0.0.1:{health}/readyz")[0] == 200,
                240,
                "the appliance's /readyz",
                lambda: log_path.read_text(errors="replace"),
            )
            run.answers.extend(health_answers(health))
            control = f"http://127.0.0.1:{env['GATEWAY_SIM_CONTROL_PORT']}"
            run.extra["state"] = http("GET", control + "/sim/state")[1]
        finally:
            stop_appliance(process, marker)
    state = yaml.safe_load(run.extra["state"])
    run.secrets.add_codes(started, time.time())
    run.secrets.add_session_ids(state["session_ids"])
    run.extra["login_successes"] = state["login_successes"]
    run.log = log_path.read_text(errors="replace")
    run.sampler = sampler
    secrets_dir = scratch / "run" / "secrets"
    run.extra["secret_files"] = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in [secrets_dir, *secrets_dir.iterdir()]
    }
    run.collect(
        scratch / "clientportal.gw" / "root",
        scratch / "run" / "agent.env",
        scratch / "outputs",
        REPO / "supervisord.conf",
    )
    shutil.rmtree(scratch, ignore_errors=True)
    return run


BROWSER_SIDE = ("gateway", "Xvfb", "chromium", "chromedriver")


@pytest.mark.timeout(600)
def test_sweep_appliance_children_carry_no_secret(appliance):
    """Under supervisord: gateway, Xvfb, Chromium and chromedriver environments."""
    assert appliance.extra["login_successes"] >= 1
    sampler = appliance.sampler
    for kind in BROWSER_SIDE:
        assert sampler.saw(kind), f"never sampled {kind}: {sorted(sampler.seen)}"
    found = [str(f) for f in sampler.findings if f.name in BROWSER_SIDE]
    assert sorted(found) == []


@pytest.mark.timeout(600)
def test_sweep_appliance_every_program_inherits_no_secret(appliance):
    """Only the agent needs credentials: no other program may inherit one.

    The entrypoint moves every secret into an owner-only file before the init
    step and supervisord start, so supervisord's environment, which each program
    inherits (the event listener whole), holds only `_FILE` paths; the agent
    reads the files, and even its own environment holds no secret."""
    sampler = appliance.sampler
    for kind in ("supervisord", "eventlistener", "agent"):
        assert sampler.saw(kind), f"never sampled {kind}: {sorted(sampler.seen)}"
    assert sorted(str(f) for f in sampler.findings) == []


@pytest.mark.timeout(600)
def test_sweep_appliance_log_and_rendered_files_hold_no_secret(appliance):
    """supervisord's output (init step, agent, gateway), conf.yaml, agent.env, pages."""
    run = appliance
    assert run.secrets.found_in(run.log) == []
    for answer in run.answers:
        assert run.secrets.found_in(answer) == [], answer[:200]
    names = {path.name for path in run.files}
    assert {"conf.yaml", "agent.env", "supervisord.conf"} <= names, names
    for path, data in run.files.items():
        assert run.secrets.found_in(data) == [], path


@pytest.mark.timeout(600)
def test_sweep_appliance_secret_files_are_owner_only(appliance):
    """conf.yaml (keystore password), the keystore, agent.env and the agent's
    secret files (and their directory): owner-only."""
    by_name = {path.name: mode for path, mode in appliance.modes.items()}
    for name in ("conf.yaml", "ibeam-keystore.p12", "agent.env"):
        assert name in by_name, sorted(by_name)
        assert by_name[name] & 0o077 == 0, f"{name} {oct(by_name[name])}"
    secret_files = appliance.extra["secret_files"]
    given = {"IBEAM_ACCOUNT", "IBEAM_PASSWORD", "IBEAM_TOTP_SECRET"}
    assert given | {"IBEAM_EXTERNAL_REQUEST_HEADERS"} <= set(secret_files)
    assert "IBEAM_KEYSTORE_PASSWORD" not in secret_files  # the init step's only
    for name, mode in secret_files.items():
        assert mode & 0o077 == 0, f"{name} {oct(mode)}"


# -- static checks ----------------------------------------------------------------


def _private_or_loopback(entry: str) -> bool:
    """Whether a gateway pattern (a.*, a.b.*, a.b.c.*, a.b.c.d) stays private."""
    parts = entry.split(".")
    if parts[-1] == "*":
        parts = parts[:-1]
    if not parts or not all(p.isdigit() for p in parts):
        return False
    prefix = len(parts) * 8
    network = ".".join(parts + ["0"] * (4 - len(parts)))
    net = ipaddress.ip_network(f"{network}/{prefix}")
    return net.is_loopback or (net.is_private and net.prefixlen >= 8)


def test_sweep_default_allow_list_is_loopback_and_private(tmp_path):
    """The conf.yaml the init step renders by default lets no public address in."""
    plan = init.make_plan(inputs_dir=tmp_path, environ={})
    ips = yaml.safe_load(plan.conf_text)["ips"]
    allow = ips["allow"]
    assert "127.0.0.1" in allow
    for entry in allow:
        assert entry not in ("*", "0.0.0.0") and "/" not in entry, entry
        assert _private_or_loopback(entry), entry
    assert all(_private_or_loopback(e) or e == "0.0.0.0/0" for e in ips["deny"] or [])


def test_sweep_image_runs_as_non_root():
    """Dockerfile: the stages that ship end as an unprivileged user.

    The built image is checked by tests/image/test_image.py
    (test_image_runs_everything_as_unprivileged_user: uid 1000 for PID 1).
    """
    text = (REPO / "Dockerfile").read_text()
    image_test = (REPO / "tests" / "image" / "test_image.py").read_text()
    assert "def test_image_runs_everything_as_unprivileged_user" in image_test
    stages = re.split(r"(?m)^FROM ", text)[1:]
    users = {}
    for stage in stages:
        name = stage.split()[2] if " AS " in stage.splitlines()[0].upper() else "?"
        found = re.findall(r"(?m)^USER\s+(\S+)", stage)
        users[name.lower()] = found[-1] if found else None
    assert users.get("app") not in (None, "root", "0"), users
    for shipped in ("sim", "ibkr"):
        assert users.get(shipped) in (None, users["app"]), users
