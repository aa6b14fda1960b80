"""The container image: build it with the simulator as gateway (`make build-sim`),
run it as a user would (env file, published ports) and stop it."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.needs import require
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IBEAM_TEST_IMAGE", "ibeam-appliance:sim")
# The password of the simulator's demo account, written bare as the README says.
ENV_FILE = "IBEAM_ACCOUNT=demo\nIBEAM_PASSWORD=demo\nIBEAM_LOG_LEVEL=INFO\n"

pytestmark = pytest.mark.image


def engine() -> str | None:
    """The engine the Makefile would use, or None when there is none that works."""
    done = subprocess.run(
        [str(REPO / "scripts" / "engine.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    name = done.stdout.strip()
    if done.returncode != 0 or not name:
        return None
    works = subprocess.run([name, "info"], capture_output=True, timeout=120)
    return name if works.returncode == 0 else None


@pytest.fixture(scope="module")
def built_image() -> Iterator[str]:
    """Build the simulator image once per module, through the Makefile's script."""
    name = engine()
    require(name is not None, "no working container engine (docker or podman)")
    done = subprocess.run(
        [str(REPO / "scripts" / "build.sh"), "sim", IMAGE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    yield name


@dataclass
class Container:
    engine: str
    name: str
    gateway_port: int
    health_port: int

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.engine, *args], capture_output=True, text=True, timeout=timeout
        )

    def exec(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("exec", self.name, *args)

    def logs(self) -> str:
        done = self.run("logs", self.name)
        return done.stdout + done.stderr


@pytest.fixture
def start_container(built_image, tmp_path) -> Iterator:
    """Yield a function that runs an image detached, with an env file and ports
    published on 127.0.0.1; every container is removed afterwards."""
    env_file = tmp_path / "env.list"
    env_file.write_text(ENV_FILE)
    boxes: list[Container] = []

    def start(image: str = IMAGE) -> Container:
        box = Container(
            engine=built_image,
            name=f"ibeam-test-{uuid.uuid4().hex[:10]}",
            gateway_port=free_port(),
            health_port=free_port(),
        )
        boxes.append(box)
        started = box.run(
            "run",
            "-d",
            "--name",
            box.name,
            "--env-file",
            str(env_file),
            "-p",
            f"127.0.0.1:{box.gateway_port}:5000",
            "-p",
            f"127.0.0.1:{box.health_port}:5001",
            image,
        )
        assert started.returncode == 0, started.stderr
        return box

    try:
        yield start
    finally:
        for box in boxes:
            box.run("rm", "-f", "-t", "0", box.name)


@pytest.fixture
def container(start_container) -> Container:
    """The simulator image, running."""
    return start_container()


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(box: Container, timeout: float = 420) -> None:
    """Wait for the agent's /readyz through the published health port."""
    url = f"http://127.0.0.1:{box.health_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(url, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        state = box.run("inspect", "--format", "{{.State.Running}}", box.name)
        if state.stdout.strip() == "false":
            break
        time.sleep(2)
    pytest.fail(f"{url} never answered 200; container log:\n{box.logs()[-8000:]}")


def gateway_messages(box: Container) -> str:
    """Read the gateway's message logs (logs/gw.message.*.log) out of the container."""
    done = subprocess.run(
        [box.engine, "cp", f"{box.name}:/srv/clientportal.gw/logs", "-"],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = []
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        for member in archive.getmembers():
            if member.isfile() and "gw.message." in member.name:
                lines.append(
                    archive.extractfile(member).read().decode(errors="replace")
                )
    return "".join(lines)


@pytest.mark.timeout(3000)
def test_image_serves_authenticated_gateway_and_logs_out_on_stop(container):
    wait_ready(container)

    status, body = http_get(
        f"https://127.0.0.1:{container.gateway_port}/v1/api/one/user"
    )
    assert status == 200, body
    assert json.loads(body)["username"] == "demo"

    programs = container.exec("supervisorctl", "status")
    assert programs.returncode == 0, programs.stdout + programs.stderr
    for program in ("xvfb", "gateway", "agent", "fatal"):
        assert any(
            line.split()[:2] == [program, "RUNNING"]
            for line in programs.stdout.splitlines()
        ), programs.stdout

    stopped = container.run("stop", "-t", "10", container.name, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    exit_code = container.run(
        "inspect", "--format", "{{.State.ExitCode}}", container.name
    )
    assert exit_code.stdout.strip() == "0", container.logs()[-4000:]
    assert "POST /v1/api/logout" in gateway_messages(container), container.logs()[
        -4000:
    ]
    assert "logged out" in container.logs()


@pytest.mark.timeout(3000)
def test_image_runs_everything_as_unprivileged_user(container):
    wait_ready(container)
    assert container.exec("id", "-u").stdout.strip() == "1000"
    pid1 = container.exec("cat", "/proc/1/status").stdout
    uid_line = next(line for line in pid1.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1000"] * 4
    assert "supervisord" in container.exec("cat", "/proc/1/cmdline").stdout
    health = container.exec("python", "/usr/local/lib/ibeam/healthcheck.py")
    assert health.returncode == 0, health.stdout + health.stderr


@pytest.mark.timeout(3000)
def test_image_declares_ports_volumes_and_healthcheck(built_image):
    done = subprocess.run(
        [built_image, "image", "inspect", IMAGE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)[0]
    config = image["Config"]
    assert {"5000/tcp", "5001/tcp"} <= set(config["ExposedPorts"])
    assert {"/srv/inputs", "/srv/outputs"} <= set(config["Volumes"])
    assert config["User"] == "ibeam"
    # docker keeps it in Config, podman beside it
    health = config.get("Healthcheck") or image.get("Healthcheck") or {}
    assert "healthcheck.py" in " ".join(health.get("Test", []))
    labels = config.get("Labels") or {}
    assert labels.get("org.opencontainers.image.title") == "ibeam-appliance"


@pytest.mark.timeout(3000)
def test_image_refuses_bad_setting_with_one_line(built_image, tmp_path):
    env_file = tmp_path / "env.list"
    env_file.write_text(ENV_FILE + "IBEAM_GATEWAY_ALLOW=10.*\n")
    done = subprocess.run(
        [built_image, "run", "--rm", "--env-file", str(env_file), IMAGE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "ConfigError: IBEAM_GATEWAY_ALLOW does not include 127.0.0.1, so the agent "
        "cannot reach the gateway (404 Access Denied): add 127.0.0.1 to "
        "IBEAM_GATEWAY_ALLOW"
    )


def zip_gateway_from(engine: str, image: str) -> bytes:
    """Zip an image's /srv/clientportal.gw the way IBKR ships clientportal.gw.zip."""
    created = subprocess.run(
        [engine, "create", image], capture_output=True, text=True, timeout=120
    )
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    try:
        tar = subprocess.run(
            [engine, "cp", f"{cid}:/srv/clientportal.gw", "-"],
            capture_output=True,
            timeout=120,
            check=True,
        ).stdout
    finally:
        subprocess.run([engine, "rm", cid], capture_output=True, timeout=120)
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(tar)) as archive,
        zipfile.ZipFile(buffer, "w") as zipped,
    ):
        for member in archive.getmembers():
            if member.isfile():
                zipped.writestr(member.name, archive.extractfile(member).read())
    return buffer.getvalue()


@pytest.fixture
def zip_server() -> Iterator:
    """Yield a function that serves bytes on 127.0.0.1 and returns their URL."""
    servers = []

    def serve(body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/clientportal.gw.zip"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(3000)
def test_image_ibkr_target_installs_gateway_zip(
    built_image, start_container, zip_server
):
    # `make build` downloads IBKR's zip; here a zip of the simulator's gateway
    # directory stands in for it, served on 127.0.0.1 (the build shares the
    # host's network for that).
    body = zip_gateway_from(built_image, IMAGE)
    url = zip_server(body)
    tag = "ibeam-appliance:test-ibkr"
    done = subprocess.run(
        [
            str(REPO / "scripts" / "build.sh"),
            "ibkr",
            tag,
            "--network",
            "host",
            "--build-arg",
            f"GATEWAY_URL={url}",
            "--build-arg",
            f"GATEWAY_SHA256={hashlib.sha256(body).hexdigest()}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    try:
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        box = start_container(tag)
        wait_ready(box)
        owner = box.exec("stat", "-c", "%U", "/srv/clientportal.gw/bin/run.sh")
        assert owner.stdout.strip() == "ibeam"
        status, body = http_get(f"https://127.0.0.1:{box.gateway_port}/v1/api/one/user")
        assert status == 200, body
    finally:
        subprocess.run(
            [built_image, "rmi", "-f", tag], capture_output=True, timeout=300
        )
