"""S23: the gateway becomes unreachable (connection refused, then requests that
hang) for a long while (20 minutes in the field, seconds here), then returns
with the session gone.

The agent reaches the gateway through a small TCP relay the test controls, as
it would over a network: the gateway process keeps running all along, only the
path to it refuses, hangs or forwards."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    log_times,
    metric,
    running_sim,
    wait_until,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

PHASE = 8.0  # seconds of refusing, then of hanging
SETTINGS = {
    "IBEAM_REQUEST_TIMEOUT": "2",
    # Shorter than the refusing phase: a gateway start that waits this long for
    # the port would end in a restart, which is exactly what must not happen.
    "IBEAM_GATEWAY_STARTUP": "4",
    "IBEAM_TRANSIENT_GRACE": "120",
    "IBEAM_LOG_LEVEL": "DEBUG",
}


class Relay:
    """TCP relay on 127.0.0.1: `forward` to a target, `refuse`, or `hang`."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.mode = "forward"
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.sockets.append(client)
                mode = self.mode
            if mode == "forward":
                threading.Thread(
                    target=self._forward, args=(client,), daemon=True
                ).start()
            # "hang": keep the connection open and never answer.

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self.lock:
            self.sockets.append(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(source, sink), daemon=True
            ).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop_connections(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def set(self, mode: str) -> None:
        """Switch mode; open connections are cut (a network change does that)."""
        with self.lock:
            self.mode = mode
        self._drop_connections()
        if mode == "refuse" and self.listener is not None:
            # shutdown() wakes the accepting thread and stops listening at once;
            # close() alone leaves the socket listening until accept returns.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        elif mode != "refuse" and self.listener is None:
            self._listen()

    def close(self) -> None:
        self.set("refuse")


def _identity(sim) -> list[str]:
    """User id, MAC address, account id and session id the gateway hands out."""
    body = sim.request("POST", "/v1/api/tickle").json()
    auth = body["iserver"]["authStatus"]
    accounts = sim.request("GET", "/v1/api/one/user").json()["accounts"]
    found = [str(body["userId"]), auth["MAC"], body["session"], *accounts]
    assert all(len(value) > 5 for value in found), found
    return found


def test_s23_unreachable_gateway_is_no_auth_failure_and_one_login_after(tmp_path):
    """S23: while the gateway refuses connections and then leaves requests
    hanging, the agent is degraded, not failing: no login attempt, nothing
    counted, no gateway restart before the grace; when the path returns with
    the session gone it logs in once.  Its log (captured without
    PYTHONUNBUFFERED) is written as things happen, has one line per state
    change rather than one per check, and never shows user ids, MAC addresses,
    account ids or session ids."""
    with running_sim(tmp_path) as sim:
        relay = Relay(sim.port)
        env = {**SETTINGS, "IBEAM_GATEWAY_BASE_URL": f"https://127.0.0.1:{relay.port}"}
        agent = AgentProcess(sim, tmp_path, env=env)
        agent.env.pop("PYTHONUNBUFFERED")
        pid = sim.pid
        try:
            with agent:
                agent.wait_ready(90)
                identity = _identity(sim)
                time.sleep(1)

                relay.set("refuse")
                outage = time.time()
                agent.wait_for(lambda s: s["degraded"], 10, "degraded")
                assert "READY -> DEGRADED" in agent.log()  # flushed at once
                time.sleep(PHASE)
                relay.set("hang")
                time.sleep(PHASE)
                status = agent.status()
                assert status["state"] == "DEGRADED" and not status["ready"]
                assert status["status"]["kind"] == "UNREACHABLE"
                assert sim.state()["login_attempts"] == 1
                assert sim.running() and sim.pid == pid

                sim.expire(style="401")  # it comes back without its session
                relay.set("forward")
                back = time.time()
                agent.wait_for(lambda s: not s["degraded"], 15, "the way back")
                status = agent.wait_ready(90)
                state = sim.state()
                restarts = sum(
                    metric(agent, f'ibeam_gateway_restarts_total{{reason="{why}"}}')
                    for why in ("recovery", "transient", "unreachable", "answer")
                )
                log = agent.log()
            assert sim.running() and sim.pid == pid
        finally:
            relay.close()

    assert state["login_attempts"] == 2 and state["login_successes"] == 2
    assert restarts == 0
    assert status["failures"]["budget"]["spent"] == 0
    login_starts = log_times(log, "-> LOGGING_IN")
    assert len(login_starts) == 2 and login_starts[1] > back
    degraded = log_times(log, "-> DEGRADED")
    assert len(degraded) == 1 and degraded[0] - outage < 5
    quiet = [
        line
        for line in log.splitlines()
        if "[DEBUG]" not in line and outage + 3 < _stamp(line) < back
    ]
    assert len(quiet) <= 1, quiet  # no line per check while it stays down
    assert "connection refused" in log
    for value in identity:
        assert value not in log, "an identifier reached the log"
    assert "demo" not in log.replace("demo account", "")


def _stamp(line: str) -> float:
    times = log_times(line, "")
    return times[0] if times else 0.0


def test_s23_relay_modes_behave_like_a_network(tmp_path):
    """The relay itself: forwards, refuses (connection refused) and hangs."""
    with running_sim(tmp_path) as sim:
        relay = Relay(sim.port)
        try:
            with socket.create_connection(("127.0.0.1", relay.port), timeout=2):
                pass
            relay.set("refuse")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", relay.port), timeout=2)
            relay.set("hang")
            conn = socket.create_connection(("127.0.0.1", relay.port), timeout=1)
            conn.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with pytest.raises(TimeoutError):
                conn.recv(10)
            conn.close()
            relay.set("forward")
            wait_until(lambda: _answers(relay.port), 5, "forwarding")
        finally:
            relay.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"\x16\x03\x01\x00\x05hello")  # any bytes reach the gateway
            conn.settimeout(2)
            return conn.recv(1) is not None
    except OSError:
        return False
