"""S18: some minutes in, tickle answers 200 with `{"error":"no session"}` and
auth/status answers 401."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    http,
    log_times,
    running_sim,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

INTERVAL = 2.0
ROUTES = (
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("HEAD", "/status"),
    ("GET", "/status?x=%00"),
    ("GET", "/activate"),
    ("DELETE", "/readyz"),
    ("GET", "/" + "x" * 300),
)


class Hammer:
    """Threads that call every health route as fast as they can, and check each
    answer: a known status code, well-formed JSON from /status, never a 500 or a
    dropped connection."""

    def __init__(self, base: str, threads: int = 4) -> None:
        self.base = base
        self.stop = threading.Event()
        self.calls = 0
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self, offset: int) -> None:
        turn = offset
        while not self.stop.is_set():
            method, path = ROUTES[turn % len(ROUTES)]
            turn += 1
            problem = self._check(method, path)
            with self.lock:
                self.calls += 1
                if problem:
                    self.problems.append(problem)

    def _check(self, method: str, path: str) -> str | None:
        if method == "HEAD":
            request = urllib.request.Request(self.base + path, method="HEAD")
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return None if reply.status == 200 else f"HEAD {reply.status}"
            except OSError as exc:
                return f"HEAD {path}: {exc}"
        code, body = http(method, self.base + path)
        if code not in (200, 202, 404, 405, 503):
            return f"{method} {path[:40]}: {code} {body[:80]!r}"
        if path.startswith("/status") and code == 200:
            try:
                data = json.loads(body)
                assert isinstance(data["state"], str) and "ready" in data
            except (ValueError, KeyError, AssertionError) as exc:
                return f"/status not usable: {exc!r}"
        if path in ("/livez", "/readyz") and body not in (b"ok\n",) and code == 200:
            return f"{path}: 200 with {body!r}"
        return None


def test_s18_no_session_body_is_parsed_and_health_never_throws(tmp_path):
    """S18: a 200 tickle whose body says `no session` (auth/status 401) is read
    as NO_SESSION: not ready within one interval, then one full login; the health
    routes, hammered from four threads through the whole transition, answer
    every request with a proper code and body."""
    settings = {"IBEAM_MAINTENANCE_INTERVAL": str(INTERVAL)}
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path, env=settings) as agent:
            agent.wait_ready(90)
            with Hammer(agent.health_url) as hammer:
                time.sleep(INTERVAL)
                sim.expire(style="no_session")
                expired = time.time()
                tickle = sim.request("POST", "/v1/api/tickle")
                assert tickle.status_code == 200
                assert tickle.json() == {"error": "no session"}
                assert (
                    sim.request("POST", "/v1/api/iserver/auth/status").status_code
                    == 401
                )
                agent.wait_for(lambda s: not s["ready"], 3 * INTERVAL, "not ready")
                assert agent.get("/readyz")[0] == 503
                agent.wait_ready(90)
                time.sleep(1)
            state = sim.state()
            log = agent.log()

    assert hammer.calls > 200
    assert hammer.problems == []
    assert state["login_attempts"] == 2 and state["login_successes"] == 2
    lost = [line for line in log.splitlines() if "READY -> LOGGING_IN" in line]
    assert len(lost) == 1 and "NO_SESSION, HTTP 200, no session" in lost[0]
    assert log_times(log, "READY -> LOGGING_IN")[0] - expired <= INTERVAL + 1.0
    assert "Traceback" not in log
