"""What the bench reads from a simulator: its state, and the floor of this machine.

Readiness is the simulator's own view (`GET /sim/state`): authenticated,
connected, not competing.  The bench never asks a keeper whether it is ready.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml

from gateway_sim.harness import LOGIN_ROUTE, SimGateway, SimGatewayError

log = logging.getLogger(__name__)

FAST_POLL = 0.05
PORT_POLL = 0.005
FLOOR_TIMEOUT = 30.0
TICKLE = "/v1/api/tickle"


class BenchTimeout(RuntimeError):
    """Something a figure waits for did not happen in time."""


def ready(state: dict[str, Any] | None) -> bool:
    """The session is usable: authenticated, connected, not competing."""
    return bool(
        state
        and state["sso"]
        and state["authenticated"]
        and state["connected"]
        and not state["competing"]
    )


def total_requests(state: dict[str, Any]) -> int:
    return sum(state["requests"].values())


class Probe:
    """Reads one simulator's control API; None while it does not answer."""

    def __init__(self, sim: SimGateway):
        self.sim = sim

    def state(self) -> dict[str, Any] | None:
        try:
            return self.sim.state()
        except (SimGatewayError, ValueError):
            return None

    def wait(self, predicate, timeout: float, what: str, interval=FAST_POLL):
        """Poll until predicate(state); return (epoch seconds, state)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and predicate(state):
                return time.time(), state
            time.sleep(interval)
        raise BenchTimeout(f"{what} not seen within {timeout:g} s")


@dataclass
class Floor:
    """What no keeper can beat here: listen + authDelay + one login page trip."""

    listen_s: float
    auth_delay_s: float
    page_s: float
    faults: dict[str, Any]
    python_rss_mib: float | None = None  # a bare Python that could keep a gateway

    @property
    def cold_start_s(self) -> float:
        return self.listen_s + self.auth_delay_s + self.page_s

    @property
    def relogin_s(self) -> float:
        """A fresh login on a running gateway, started at once."""
        return self.auth_delay_s + self.page_s


def measure_floor(root: Path) -> Floor:
    """Start a simulator the way a keeper does and time the unavoidable parts."""
    sim = SimGateway(root).install()
    started = time.monotonic()
    sim.start(wait=False)
    try:
        listen = _wait_port(sim, started)
        page = _page_round_trip(sim)
        sim.wait_ready(FLOOR_TIMEOUT)
        faults = sim.faults()
        delay_ms = faults.get("auth_delay_ms")
        if delay_ms is None:
            delay_ms = _conf_auth_delay(sim)
    finally:
        sim.stop()
    return Floor(listen, delay_ms / 1000.0, page, faults, python_floor_mib())


# What any Python keeper needs: TLS to the gateway, HTTP both ways, JSON, logs.
KEEPER_STDLIB = "ssl, http.client, http.server, json, logging, threading, subprocess"


def python_floor_mib() -> float | None:
    """Resident memory of this Python with only a keeper's stdlib imported."""
    code = (
        f"import {KEEPER_STDLIB}\n"
        "print(int(open('/proc/self/statm').read().split()[1]))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        pages = int(done.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def port_accepts(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(sim: SimGateway, started: float) -> float:
    deadline = started + FLOOR_TIMEOUT
    while time.monotonic() < deadline:
        if port_accepts(sim.port):
            return time.monotonic() - started
        if not sim.running():
            raise BenchTimeout(f"the floor's simulator exited: {sim.console()[-500:]}")
        time.sleep(PORT_POLL)
    raise BenchTimeout(f"the floor's simulator did not listen in {FLOOR_TIMEOUT} s")


def _page_round_trip(sim: SimGateway) -> float:
    """One GET of the login page on a new connection (TLS handshake included)."""
    with requests.Session() as session, warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        started = time.monotonic()
        reply = session.get(sim.base_url + LOGIN_ROUTE, verify=False, timeout=10)
        took = time.monotonic() - started
    if reply.status_code != 200:
        raise BenchTimeout(f"login page answered HTTP {reply.status_code}")
    return took


def _conf_auth_delay(sim: SimGateway) -> int:
    conf = yaml.safe_load(sim.conf_path.read_text()) or {}
    return int(conf.get("authDelay") or 0)
