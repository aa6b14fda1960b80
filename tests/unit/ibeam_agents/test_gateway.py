"""Gateway control pieces that need no gateway: selection, ports, XML-RPC faults."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

import pytest
from supervisor.xmlrpc import Faults

from ibeam_agents.errors import ConfigError, SupervisorError
from ibeam_agents.gateway import (
    StandaloneGateway,
    SupervisorGateway,
    make_gateway,
    port_answers,
)
from ibeam_agents.settings import Settings


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_make_gateway_picks_supervisor_or_standalone(tmp_path):
    plain = Settings(gateway_dir=tmp_path, outputs_dir=tmp_path)
    standalone = make_gateway(plain)
    assert isinstance(standalone, StandaloneGateway)
    assert standalone.port == 5000 and standalone.host == "localhost"
    supervised = make_gateway(
        plain.with_changes(supervisor_url="unix:///tmp/s.sock", supervisor_program="gw")
    )
    assert isinstance(supervised, SupervisorGateway)
    assert supervised.program == "gw" and not supervised.owned


def test_port_answers(listener):
    assert port_answers("127.0.0.1", listener)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert not port_answers("127.0.0.1", port)


def test_standalone_names_a_foreign_port_holder(listener, tmp_path):
    gateway = StandaloneGateway(
        tmp_path, process_match="no-such-process-xyz", port=listener
    )
    holder = gateway.foreign_listener()
    assert holder is not None and f"pid {os.getpid()}" in holder
    assert not gateway.running() and gateway.pid() is None
    assert gateway.memory_bytes() is None
    gateway.stop()  # nothing to stop is fine


def test_standalone_wait_ready_times_out_with_the_setting_named(tmp_path):
    ticks = iter(range(1000))
    gateway = StandaloneGateway(
        tmp_path,
        process_match="no-such-process-xyz",
        port=1,
        startup_timeout=3,
        clock=lambda: float(next(ticks)),
        sleep=lambda s: None,
    )
    with pytest.raises(Exception, match="IBEAM_GATEWAY_STARTUP"):
        gateway.wait_ready()


def _gateway_dir(tmp_path, script: str):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "run.sh").write_text(script)
    return tmp_path


def test_standalone_counts_its_start_script_before_the_gateway_shows(tmp_path):
    """bin/run.sh takes a moment before the JVM (with the process match on its
    command line) exists; a start checked in that moment is not an exit."""
    marker = f"gateway-match-{os.getpid()}"
    script = (
        f'sleep 1\nexec "{sys.executable}" -c "import time; time.sleep(60)" {marker}\n'
    )
    gateway = StandaloneGateway(
        _gateway_dir(tmp_path, script), process_match=marker, port=1, stop_grace=3
    )
    try:
        gateway.start()
        assert gateway.processes() == []  # only the script runs yet
        assert gateway.running()
        deadline = time.monotonic() + 20
        while not gateway.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.pid() is not None
    finally:
        gateway.stop()
    assert not gateway.running()


def test_standalone_start_script_that_exits_is_not_running(tmp_path):
    gateway = StandaloneGateway(
        _gateway_dir(tmp_path, "exit 3\n"), process_match="no-such-xyz", port=1
    )
    gateway.start()
    deadline = time.monotonic() + 20
    while gateway.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gateway.running()


class _FakeSupervisor:
    """The few supervisor.* calls the agent makes, with supervisord's faults."""

    def __init__(self):
        self.state = "RUNNING"
        self.pid = 4242

    def getProcessInfo(self, name):  # noqa: N802
        if self.state == "SHUTDOWN":
            raise xmlrpc.client.Fault(Faults.SHUTDOWN_STATE, "SHUTDOWN_STATE")
        if name != "gateway":
            raise xmlrpc.client.Fault(Faults.BAD_NAME, f"BAD_NAME: {name}")
        pid = self.pid if self.state == "RUNNING" else 0
        return {"name": name, "statename": self.state, "pid": pid}

    def startProcess(self, name, wait):  # noqa: N802
        if self.state == "RUNNING":
            raise xmlrpc.client.Fault(Faults.ALREADY_STARTED, "ALREADY_STARTED")
        self.state, self.pid = "RUNNING", self.pid + 1
        return True

    def stopProcess(self, name, wait):  # noqa: N802
        if self.state != "RUNNING":
            raise xmlrpc.client.Fault(Faults.NOT_RUNNING, "NOT_RUNNING")
        self.state = "STOPPED"
        return True


class _Quiet(SimpleXMLRPCRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def fake_supervisor():
    server = SimpleXMLRPCServer(
        ("127.0.0.1", 0), requestHandler=_Quiet, logRequests=False
    )
    fake = _FakeSupervisor()
    server.register_function(fake.getProcessInfo, "supervisor.getProcessInfo")
    server.register_function(fake.startProcess, "supervisor.startProcess")
    server.register_function(fake.stopProcess, "supervisor.stopProcess")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_supervisor_gateway_over_http(fake_supervisor):
    fake, url = fake_supervisor
    gateway = SupervisorGateway(url, "gateway", port=1)
    assert gateway.running() and gateway.pid() == 4242
    gateway.start()  # already started: fine
    gateway.restart()
    assert gateway.pid() == 4243
    gateway.stop()
    gateway.stop()  # not running: fine
    assert not gateway.running() and gateway.pid() is None


def test_supervisor_gateway_bad_program_is_a_config_error(fake_supervisor):
    _, url = fake_supervisor
    with pytest.raises(ConfigError, match="IBEAM_SUPERVISOR_PROGRAM=nope"):
        SupervisorGateway(url, "nope", port=1).running()


def test_supervisor_gateway_unreachable_is_a_supervisor_error(tmp_path):
    gateway = SupervisorGateway(f"unix://{tmp_path}/missing.sock", port=1, timeout=1)
    with pytest.raises(SupervisorError, match="IBEAM_SUPERVISOR_URL"):
        gateway.state()


def test_supervisor_shutting_down_is_a_supervisor_error(fake_supervisor):
    fake, url = fake_supervisor
    fake.state = "SHUTDOWN"
    gateway = SupervisorGateway(url, "gateway", port=1)
    with pytest.raises(SupervisorError, match="shutting down"):
        gateway.pid()


def test_supervisor_foreign_listener_outside_the_program_tree(
    fake_supervisor, listener
):
    fake, url = fake_supervisor
    fake.pid = 999_999_999  # a program that is not the listener
    gateway = SupervisorGateway(url, "gateway", port=1, listen_port=listener)
    holder = gateway.foreign_listener()
    assert holder is not None and f"pid {os.getpid()}" in holder
    fake.pid = os.getpid()
    assert gateway.foreign_listener() is None


def test_make_gateway_takes_the_listen_port_from_conf_yaml(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "conf.yaml").write_text("listenPort: 5055\n")
    settings = Settings(
        gateway_dir=tmp_path,
        outputs_dir=tmp_path,
        gateway_base_url="https://127.0.0.1:6000",
    )
    gateway = make_gateway(settings)
    assert gateway.port == 6000 and gateway.listen_port == 5055
