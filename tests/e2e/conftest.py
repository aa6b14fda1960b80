"""Shared end-to-end fixtures: simulated gateways, an X display, a tracked Chromium."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_sim.harness import SimGateway
from tests.support import procs
from tests.support.needs import require, require_binaries

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without these Chromium stalls on this closed network (see docs/simulator.md).
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--ignore-certificate-errors",
    "--window-size=1280,900",
)


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., SimGateway]]:
    """Start simulators in tmp_path on free ports; all are stopped afterwards."""
    started: list[SimGateway] = []

    def start(**options: Any) -> SimGateway:
        gateway = SimGateway(tmp_path / f"gw{len(started)}", **options)
        started.append(gateway)
        gateway.install()
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., SimGateway]) -> SimGateway:
    """One simulator with IBKR's default conf.yaml and the demo account."""
    return sim_factory()


@pytest.fixture(scope="session")
def xdisplay() -> Iterator[str]:
    """A real X server (Xvfb) for the whole session; yields its DISPLAY."""
    require_binaries("Xvfb")
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=(1280, 900))
    display.start()
    try:
        yield os.environ["DISPLAY"]
    finally:
        display.stop()


@pytest.fixture
def chromium(xdisplay: str, tmp_path: Path) -> Iterator[Any]:
    """A visible Chromium on the X display; none of its processes may outlive it."""
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed")
    require(os.path.exists(CHROMEDRIVER), f"{CHROMEDRIVER} is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    with procs.tracking() as snap:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(30)
            yield driver
        finally:
            driver.quit()
    procs.assert_none_left(snap)
