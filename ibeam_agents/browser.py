"""Chromium, chromedriver and the X display for one login attempt.

``open_browser(options)`` yields a Selenium WebDriver and always cleans up:
the driver quits, any chromium or chromedriver process of ours that outlives it
is killed (found by process session and by the unique profile directory, never
by name), an Xvfb we started is stopped, and the temporary profile is removed.

Chromium is told to trust only the gateway's own certificate (its SPKI hash,
read from the gateway before the browser starts) instead of ignoring every
certificate error, and talks to chromedriver over a pipe, so no DevTools port
is ever opened.

A browser can also start ahead of its login, while a gateway the agent just
started boots (``start_warm_browser``, pinned from the keystore on disk).  The
login takes it once (``take_warm_browser``) if it still runs and pins the
certificate the gateway shows; otherwise it is closed and a fresh one starts.
Not taken within a minute, or at shutdown, it is closed all the same.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import html
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit
from urllib.request import ProxyHandler, build_opener

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    JavascriptException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from ibeam_agents.errors import (
    BrowserUnavailable,
    GatewayNotRunning,
    GatewayUnreachable,
)
from ibeam_agents.selectors import (
    MARK_SCRIPT,
    PAGE_SCRIPT,
    PageSnapshot,
    parse_snapshot,
    script_spec,
)

if TYPE_CHECKING:
    from ibeam_agents.login import LoginOptions

log = logging.getLogger(__name__)

# Selenium logs every command with its payload at DEBUG, typed passwords and
# codes included: keep it quiet whatever level the agent runs at.
logging.getLogger("selenium").setLevel(logging.WARNING)

WINDOW_SIZE = (1280, 1024)
# Page dumps kept in the outputs dir (each a screenshot and an HTML file).
MAX_DUMPS = 20
DUMP_SUFFIXES = (".png", ".html")
VERSION_TIMEOUT = 20.0
DRIVER_START_TIMEOUT = 10.0
CERT_TIMEOUT = 10.0
X_LOCK_DIR = Path("/tmp")
X_SOCKET_DIR = Path("/tmp/.X11-unix")
# Chromium's $TMPDIR inside the profile, and the longest temporary dir that
# leaves its socket path (TMPDIR/.org.chromium.Chromium.XXXXXX/SingletonSocket)
# inside the 108 bytes a Unix socket allows.
BROWSER_TMP = ".t"
MAX_TEMP_BASE = 32
# The gateway's own keystore and password when conf.yaml names none.
DEFAULT_SSL_CERT = "vertx.jks"
DEFAULT_SSL_PASSWORD = "mywebapi"
X_SERVER_NAMES = ("Xvfb", "Xorg", "X", "Xvnc", "Xephyr", "Xwayland", "Xtigervnc")

# Flags Chromium needs to start and stay quiet in a container on a closed network.
CHROMIUM_FLAGS = (
    "--no-sandbox",  # root in containers; the sandbox needs user namespaces
    "--disable-dev-shm-usage",  # /dev/shm is 64 MB in Docker by default
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,PasswordLeakDetection",
    "--password-store=basic",  # no keyring daemon to ask under Xvfb
    "--metrics-recording-only",
    "--mute-audio",
    "--remote-debugging-pipe",  # chromedriver talks over a pipe: no DevTools port
)

# Selenium Manager must never run: the driver path is always given, and this
# tells Selenium's own tooling to stay offline should anything reach it.
SELENIUM_OFFLINE_ENV = {"SE_OFFLINE": "true", "SE_AVOID_STATS": "true"}


def _version_of(path: str, what: str, setting: str) -> str:
    try:
        done = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise BrowserUnavailable(
            f"{what} at {path} ({setting}) did not run: {type(err).__name__}: {err}"
        ) from err
    match = re.search(r"\b(\d+)\.(\d+)\.(\d+)\.(\d+)\b", done.stdout)
    if done.returncode != 0 or match is None:
        raise BrowserUnavailable(
            f"{what} at {path} ({setting}) printed no version and exited with "
            f"status {done.returncode}; reinstall it or fix {setting}"
        )
    return match.group(0)


def _check_executable(path: str, what: str, setting: str) -> None:
    if not path or not os.path.isfile(path):
        raise BrowserUnavailable(
            f"{what} not found at {path!r}; install it or set {setting}"
        )
    if not os.access(path, os.X_OK):
        raise BrowserUnavailable(f"{what} at {path} is not executable ({setting})")


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Straight to the loopback port, whatever *_proxy variables say.
_DIRECT = build_opener(ProxyHandler({}))


def _driver_ready(port: int) -> bool:
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}/status", timeout=1.0) as reply:
            return bool(json.load(reply).get("value", {}).get("ready"))
    except (OSError, ValueError, AttributeError):
        return False


def check_driver_starts(driver: str, timeout: float = DRIVER_START_TIMEOUT) -> None:
    """Start chromedriver alone (no browser) and wait until it says it is ready.

    A driver that prints the right version but dies when it is really started
    (a broken install, a missing library) is caught here, before any login.
    """
    port = _free_local_port()
    env = dict(os.environ)
    env.update(SELENIUM_OFFLINE_ENV)
    try:
        process = subprocess.Popen(
            [driver, f"--port={port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as err:
        raise BrowserUnavailable(
            f"chromedriver at {driver} (IBEAM_CHROME_DRIVER_PATH) did not start: {err}"
        ) from err
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrowserUnavailable(
                    f"chromedriver at {driver} (IBEAM_CHROME_DRIVER_PATH) exited at "
                    f"once with status {process.returncode}; reinstall it or fix "
                    "IBEAM_CHROME_DRIVER_PATH"
                )
            if _driver_ready(port):
                return
            time.sleep(0.1)
        raise BrowserUnavailable(
            f"chromedriver at {driver} (IBEAM_CHROME_DRIVER_PATH) did not become "
            f"ready within {timeout:g} s"
        )
    finally:
        _kill_processes([process.pid])
        process.wait()


# Set once chromedriver failed to start: until it starts again, every preflight
# starts it alone first, so a broken driver never costs an Xvfb and a browser.
_DRIVER_STATE = {"suspect": False}


def preflight_browser(
    options: LoginOptions,
    *,
    start_driver: bool = True,
    warm: bool = False,
    spki: str | None = None,
) -> str:
    """Check browser and driver exist, agree and start; return the browser version.

    With start_driver=False (each login) the driver is only started here while
    the last start failed; otherwise the login's own start is the test.  With
    warm=True the test is a warm browser for the coming login, pinned to spki
    (``start_warm_browser``); if it does not get as far as a running driver,
    the driver is started alone as without it, and fails the same way.
    """
    binary, driver = options.chrome_binary_path, options.chrome_driver_path
    _check_executable(binary, "the browser", "IBEAM_CHROME_BINARY_PATH")
    _check_executable(driver, "chromedriver", "IBEAM_CHROME_DRIVER_PATH")

    browser_version = _version_of(binary, "the browser", "IBEAM_CHROME_BINARY_PATH")
    driver_version = _version_of(driver, "chromedriver", "IBEAM_CHROME_DRIVER_PATH")
    browser_major = browser_version.split(".")[0]
    driver_major = driver_version.split(".")[0]
    if browser_major != driver_major:
        raise BrowserUnavailable(
            f"chromedriver {driver_version} ({driver}) does not match the browser "
            f"{browser_version} ({binary}); install the chromedriver of major "
            f"version {browser_major} or set IBEAM_CHROME_DRIVER_PATH to it"
        )
    if warm and start_warm_browser(options, spki):
        _DRIVER_STATE["suspect"] = False
        return browser_version
    if start_driver or _DRIVER_STATE["suspect"]:
        try:
            check_driver_starts(driver)
        except BrowserUnavailable:
            _DRIVER_STATE["suspect"] = True
            raise
        _DRIVER_STATE["suspect"] = False
    return browser_version


# --- X display -------------------------------------------------------------


def parse_display(display: str) -> tuple[str, int]:
    """Split ``host:n.screen`` into host and display number."""
    host, sep, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not sep or not number.isdigit():
        raise BrowserUnavailable(
            f"X display {display!r} is not of the form :N; fix IBEAM_DISPLAY or DISPLAY"
        )
    return host, int(number)


def display_answers(display: str, timeout: float = 3.0) -> bool:
    """Whether an X server answers the connection handshake on ``display``."""
    try:
        host, number = parse_display(display)
    except BrowserUnavailable:
        return False
    if host in ("", "unix"):
        family, address = socket.AF_UNIX, str(X_SOCKET_DIR / f"X{number}")
    else:
        family, address = socket.AF_INET, (host, 6000 + number)
    # Client hello: little-endian, protocol 11.0, no authorisation data.
    hello = b"l\x00" + struct.pack("<HHHH", 11, 0, 0, 0) + b"\x00\x00"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(hello)
            reply = sock.recv(1)
    except OSError:
        return False
    # 0 refused (e.g. auth needed), 1 accepted, 2 authenticate: all mean alive.
    return reply[:1] in (b"\x00", b"\x01", b"\x02")


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _is_x_server(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.name() in X_SERVER_NAMES
    except psutil.Error:
        return False


def clear_stale_x_locks(lock_dir: Path = X_LOCK_DIR) -> list[int]:
    """Remove X lock files (and sockets) whose owner is no X server; return numbers.

    A lock outlives its server after a crash or a container restart, and when its
    pid now belongs to another process Xvfb refuses that display (S15).
    """
    cleared = []
    for lock in sorted(lock_dir.glob(".X*-lock")):
        number = lock.name[2:-5]
        if not number.isdigit():
            continue
        pid = _lock_owner(lock)
        if pid is not None and _is_x_server(pid):
            continue
        socket_path = lock_dir / ".X11-unix" / f"X{number}"
        try:
            lock.unlink()
            socket_path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("browser: cannot clear stale X lock %s: %s", lock, err)
            continue
        log.info("browser: cleared stale X lock %s (pid %s is no X server)", lock, pid)
        cleared.append(int(number))
    return cleared


@dataclass
class _Display:
    name: str
    server: Any = None  # pyvirtualdisplay.Display when we started it


def _start_xvfb() -> _Display:
    from pyvirtualdisplay import Display
    from pyvirtualdisplay.abstractdisplay import XStartError, XStartTimeoutError

    clear_stale_x_locks()
    try:
        server = Display(backend="xvfb", size=WINDOW_SIZE, manage_global_env=False)
        server.start()
    except (OSError, XStartError, XStartTimeoutError) as err:
        raise BrowserUnavailable(
            f"could not start Xvfb: {type(err).__name__}: {err}; install xvfb or "
            "set IBEAM_DISPLAY to a running X display"
        ) from err
    name = server.new_display_var
    if not display_answers(name):
        _stop_xvfb(_Display(name, server))
        raise BrowserUnavailable(f"Xvfb started on {name} but does not answer")
    log.debug("browser: started Xvfb on %s (pid %s)", name, _xvfb_pid(server))
    return _Display(name, server)


def _xvfb_pid(server: Any) -> int | None:
    process = getattr(getattr(server, "_obj", None), "_subproc", None)
    return getattr(process, "pid", None)


def _stop_xvfb(display: _Display) -> None:
    pid = _xvfb_pid(display.server)
    try:
        display.server.stop()
    except Exception as err:  # the display must go even if stop() trips
        log.warning("browser: stopping Xvfb on %s failed: %s", display.name, err)
    if pid is not None:
        _kill_processes([pid])


def acquire_display(wanted: str | None) -> _Display:
    """Use the wanted display (or $DISPLAY) if it answers, else start Xvfb."""
    name = wanted or os.environ.get("DISPLAY") or None
    if name is None:
        return _start_xvfb()
    if display_answers(name):
        return _Display(name)
    log.warning("browser: X display %s does not answer; starting Xvfb instead", name)
    return _start_xvfb()


# --- processes ---------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie has ended; its parent reaps it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_processes(pids: list[int], timeout: float = 10.0) -> None:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            process.send_signal(signal.SIGKILL)
            alive.append(process)
        except psutil.Error:
            continue
    if alive:
        psutil.wait_procs(alive, timeout=timeout)


def descendants(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid``."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _processes_of(session_id: int | None, profile: str) -> list[int]:
    """Live processes in chromedriver's session or using our profile dir."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        pid = process.info["pid"]
        if pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = process.info["cmdline"] or []
        if any(profile in arg for arg in cmdline):
            found.append(pid)
            continue
        if session_id is None:
            continue
        try:
            if os.getsid(pid) == session_id:
                found.append(pid)
        except OSError:
            continue
    return found


# --- certificate pinning -----------------------------------------------------


def gateway_spki_hash(base_url: str) -> str | None:
    """Base64 SHA-256 of the gateway certificate's public key, for Chromium.

    Raises GatewayNotRunning / GatewayUnreachable when nothing answers, so a
    login against a dead gateway fails before any browser starts.
    """
    parts = urlsplit(base_url)
    if parts.scheme != "https":
        return None
    host = parts.hostname or "localhost"
    port = parts.port or 443
    try:
        pem = ssl.get_server_certificate((host, port), timeout=CERT_TIMEOUT)
    except ConnectionRefusedError as err:
        raise GatewayNotRunning(
            f"nothing listens on {host}:{port} (IBEAM_GATEWAY_BASE_URL)"
        ) from err
    except TimeoutError as err:
        raise GatewayUnreachable(
            f"the gateway at {host}:{port} did not complete a TLS handshake "
            f"within {CERT_TIMEOUT:g} s"
        ) from err
    except (OSError, ssl.SSLError) as err:
        raise GatewayUnreachable(
            f"the gateway at {host}:{port} gave no TLS certificate: {err}"
        ) from err
    return spki_hash(x509.load_pem_x509_certificate(pem.encode("ascii")))


def spki_hash(certificate: x509.Certificate) -> str:
    """Base64 SHA-256 of a certificate's public key, as Chromium's pin list takes it."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def keystore_spki_hash(gateway_dir: Path | str, base_url: str) -> str | None:
    """The pin of the certificate the gateway will show, read from its keystore.

    The warm browser starts before the gateway answers, so its pin comes from
    root/conf.yaml's sslCert / sslPwd (a JKS or PKCS12 file, looked up from the
    gateway dir, then root/, as the gateway does).  None over plain HTTP.
    Raises ValueError when the keystore cannot be read.
    """
    if urlsplit(base_url).scheme != "https":
        return None
    import yaml

    from ibeam_agents import certs
    from ibeam_agents.errors import AgentError

    conf_path = Path(gateway_dir) / "root" / "conf.yaml"
    try:
        conf = yaml.safe_load(conf_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{conf_path} cannot be read: {err}") from err
    if not isinstance(conf, dict):
        raise ValueError(f"{conf_path} is not a YAML mapping")
    if conf.get("listenSsl", True) is False:
        return None
    name = str(conf.get("sslCert") or DEFAULT_SSL_CERT)
    password = str(conf.get("sslPwd") or DEFAULT_SSL_PASSWORD)
    candidates = [Path(gateway_dir) / name, Path(gateway_dir) / "root" / name]
    path = next((item for item in candidates if item.is_file()), candidates[0])
    try:
        return spki_hash(certs.read_keystore(path, password))
    except (OSError, ValueError, AgentError) as err:
        raise ValueError(f"the keystore {path} cannot be read: {err}") from err
    except Exception as err:  # a corrupt JKS trips pyjks in many ways
        raise ValueError(f"the keystore {path} cannot be read: {err!r}") from err


# --- the browser -------------------------------------------------------------


@dataclass
class BrowserSession:
    """What one attempt started, so that cleanup can take all of it down."""

    profile: str
    display: _Display | None = None
    service: Service | None = None
    driver: Any = None
    driver_pid: int | None = None
    children: set[int] = field(default_factory=set)
    # The warm browser's starter and its closer may both close it.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def chrome_options(
    options: LoginOptions, profile: str, spki: str | None
) -> webdriver.ChromeOptions:
    """Chromium options for one attempt."""
    chrome = webdriver.ChromeOptions()
    chrome.binary_location = options.chrome_binary_path
    # Navigations and clicks return once the document is parsed, not after
    # every image and font: the flow reads the page as it fills in anyway.
    chrome.page_load_strategy = "eager"
    for flag in CHROMIUM_FLAGS:
        chrome.add_argument(flag)
    chrome.add_argument(f"--user-data-dir={profile}")
    chrome.add_argument(f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}")
    chrome.add_argument(f"--force-device-scale-factor={options.ui_scaling:g}")
    if spki:
        # Trust exactly the gateway's self-signed key, nothing else.
        chrome.add_argument(f"--ignore-certificate-errors-spki-list={spki}")
    chrome.add_experimental_option(
        "prefs",
        {
            "credentials_enable_service": False,
            "profile.password_manager_enabled": False,
        },
    )
    return chrome


def _browser_env(display: str, profile: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SELENIUM_OFFLINE_ENV)
    env["DISPLAY"] = display
    # Keep ~/.pki, ~/.cache, Chromium's temporary files (its shared memory
    # files, given --disable-dev-shm-usage) and its singleton socket inside the
    # profile we delete afterwards.
    env["HOME"] = profile
    env["XDG_CONFIG_HOME"] = os.path.join(profile, ".config")
    env["XDG_CACHE_HOME"] = os.path.join(profile, ".cache")
    env["TMPDIR"] = os.path.join(profile, BROWSER_TMP)
    os.makedirs(env["TMPDIR"], mode=0o700, exist_ok=True)
    return env


def _temp_base() -> str:
    """Where the attempt's profile goes: the temporary dir, unless its path is long.

    Chromium puts its singleton socket under $TMPDIR, and a Unix socket path
    must fit in 108 bytes; past that Chromium hangs for a minute and exits.
    """
    base = tempfile.gettempdir()
    if len(base) <= MAX_TEMP_BASE or not os.access("/tmp", os.W_OK | os.X_OK):
        return base
    log.debug("browser: temporary dir %s is too long for Chromium; using /tmp", base)
    return "/tmp"


class _DriverService(Service):
    """chromedriver that webdriver.Chrome may find already running.

    The warm start runs it first, so the preflight can vouch for it before
    Chromium has finished starting; starting it again would be a second driver.
    """

    def start(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            return
        super().start()


def _start_service(session: BrowserSession, options: LoginOptions) -> Service:
    """Start the attempt's chromedriver (once) and wait until it answers."""
    assert session.display is not None
    if session.service is not None:
        return session.service
    for key, value in SELENIUM_OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    service = _DriverService(
        options.chrome_driver_path,
        env=_browser_env(session.display.name, session.profile),
        popen_kw={"start_new_session": True},
    )
    # SE_CHROMEDRIVER in our environment would otherwise replace the path.
    service.path = options.chrome_driver_path
    session.service = service
    try:
        service.start()
    except WebDriverException as err:
        raise _unavailable(f"chromedriver did not start: {_first_line(err)}") from err
    except OSError as err:
        raise _unavailable(f"chromedriver did not start: {err}") from err
    finally:
        process = getattr(service, "process", None)
        session.driver_pid = getattr(process, "pid", None)
    return service


def _unavailable(message: str) -> BrowserUnavailable:
    """The error for a driver or browser that did not start; preflights recheck."""
    _DRIVER_STATE["suspect"] = True
    return BrowserUnavailable(message)


def _start_driver(session: BrowserSession, options: LoginOptions, spki: str | None):
    service = _start_service(session, options)
    try:
        driver = webdriver.Chrome(
            service=service, options=chrome_options(options, session.profile, spki)
        )
    except WebDriverException as err:
        raise _unavailable(
            f"Chromium did not start through chromedriver: {_first_line(err)}"
        ) from err
    except OSError as err:
        raise _unavailable(f"chromedriver did not start: {err}") from err
    session.driver = driver
    driver.set_page_load_timeout(options.page_load_timeout)
    if session.driver_pid is not None:
        session.children.update(descendants(session.driver_pid))
    return driver


def _first_line(err: WebDriverException) -> str:
    text = (getattr(err, "msg", None) or str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def close_session(session: BrowserSession) -> None:
    """Quit the driver and take down everything the attempt started (repeatable)."""
    with session.lock:
        _close_locked(session)


def _close_locked(session: BrowserSession) -> None:
    if session.driver_pid is not None:
        session.children.update(descendants(session.driver_pid))
    driver_runs = session.driver_pid is not None and _alive(session.driver_pid)
    if session.driver is not None and driver_runs:
        try:
            session.driver.quit()
        except Exception as err:  # a crashed browser still has to go
            log.debug("browser: quit failed: %s", err)
    elif session.service is not None:
        try:
            session.service.stop()
        except Exception as err:
            log.debug("browser: stopping chromedriver failed: %s", err)
    session.driver = session.service = None

    leftovers = set(_processes_of(session.driver_pid, session.profile))
    leftovers |= {pid for pid in session.children if _alive(pid)}
    if session.driver_pid is not None and _alive(session.driver_pid):
        leftovers.add(session.driver_pid)
    if leftovers:
        log.debug("browser: killing %d leftover processes", len(leftovers))
        _kill_processes(sorted(leftovers))

    if session.display is not None and session.display.server is not None:
        _stop_xvfb(session.display)
    session.display = None
    shutil.rmtree(session.profile, ignore_errors=True)


@contextmanager
def open_browser(
    options: LoginOptions,
    *,
    spki: str | None = None,
    session: BrowserSession | None = None,
) -> Iterator[Any]:
    """Yield a WebDriver for one attempt; everything it started is gone after.

    ``session`` is a browser already started for the attempt (the warm one
    from ``take_warm_browser``); it is closed afterwards all the same.
    """
    if session is None:
        _check_executable(
            options.chrome_binary_path, "the browser", "IBEAM_CHROME_BINARY_PATH"
        )
        _check_executable(
            options.chrome_driver_path, "chromedriver", "IBEAM_CHROME_DRIVER_PATH"
        )
        session = BrowserSession(profile=_new_profile())
    try:
        if session.driver is None:
            session.display = acquire_display(options.display)
            _start_driver(session, options, spki)
        yield session.driver
    finally:
        close_session(session)


def _new_profile() -> str:
    return tempfile.mkdtemp(prefix="ibeam-chrome-", dir=_temp_base())


# --- the warm browser --------------------------------------------------------

# A warm browser that no login took within this long is closed.
WARM_TTL = 60.0
# How long the preflight waits for the warm start's display and chromedriver.
WARM_DRIVER_WAIT = DRIVER_START_TIMEOUT + 10.0
# How long a login waits for a warm browser still starting.
WARM_TAKE_WAIT = 30.0
# How long closing waits for a warm start in progress before killing it.
WARM_CLOSE_WAIT = 5.0
WARM_PAGE = "about:blank"


def launch_key(options: LoginOptions) -> tuple:
    """What a browser is launched with besides its pin; a warm one must match."""
    return (
        options.chrome_binary_path,
        options.chrome_driver_path,
        options.display,
        options.ui_scaling,
    )


@dataclass
class _Warm:
    """A browser started before the login that will use it."""

    session: BrowserSession
    key: tuple
    spki: str | None
    started: float
    driver_done: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    driver_failed: bool = False  # the display or chromedriver did not start
    settled: bool = False  # the start ended (ready or failed); set under the lock
    cancelled: bool = False  # closed before it settled: its starter closes it
    ready_at: float | None = None


class _WarmSlot:
    """Room for one warm browser; every change happens under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warm: _Warm | None = None

    def put(self, warm: _Warm) -> _Warm | None:
        with self.lock:
            old, self.warm = self.warm, warm
        return old

    def pop(self, only: _Warm | None = None) -> _Warm | None:
        """Empty the slot and return what it held (only ``only``, if given)."""
        with self.lock:
            warm = self.warm
            if warm is None or (only is not None and warm is not only):
                return None
            self.warm = None
        return warm


_SLOT = _WarmSlot()


def start_warm_browser(
    options: LoginOptions, spki: str | None, *, wait: float = WARM_DRIVER_WAIT
) -> bool:
    """Start a browser for the coming login; True once its chromedriver runs.

    The X display and chromedriver start before this returns (what the
    preflight vouches for); Chromium goes on starting on a thread, with a fresh
    profile, pinned to ``spki``, and waits on a blank page for
    ``take_warm_browser``.  Not taken within WARM_TTL, it is closed.
    """
    warm = _Warm(
        session=BrowserSession(profile=_new_profile()),
        key=launch_key(options),
        spki=spki,
        started=time.monotonic(),
    )
    old = _SLOT.put(warm)
    if old is not None:
        _cancel(old)
    log.debug("warm browser: starting while the gateway starts")
    thread = threading.Thread(
        target=_warm_up, args=(warm, options), name="warm-browser", daemon=True
    )
    thread.start()
    if warm.driver_done.wait(wait) and not warm.driver_failed:
        return True
    if not warm.driver_failed:
        log.debug("warm browser: chromedriver not ready within %g s", wait)
    if _SLOT.pop(warm) is not None:
        _cancel(warm)
    return False


def _warm_up(warm: _Warm, options: LoginOptions) -> None:
    """The warm start's thread: start, park, and close if nobody takes it."""
    session = warm.session
    try:
        session.display = acquire_display(options.display)
        _start_service(session, options)
    except Exception as err:  # any failure only means the login starts fresh
        warm.driver_failed = True
        _settle(warm, f"{type(err).__name__}: {err}")
        return
    finally:
        warm.driver_done.set()
    try:
        driver = _start_driver(session, options, warm.spki)
        # The first command waits for Chromium to finish starting up: let it
        # be this one, off the login's path.
        driver.get(WARM_PAGE)
    except Exception as err:
        _settle(warm, f"{type(err).__name__}: {err}")
        return
    if not _settle(warm, None):
        return
    if warm.released.wait(WARM_TTL):
        return
    if _SLOT.pop(warm) is not None:
        log.info("warm browser: closed, no login took it within %g s", WARM_TTL)
        close_session(session)


def _settle(warm: _Warm, failure: str | None) -> bool:
    """Record how the start ended; False (everything closed) unless it is parked."""
    with _SLOT.lock:
        warm.failure = failure
        warm.settled = True
        keep = failure is None and not warm.cancelled
    if keep:
        warm.ready_at = time.monotonic()
        log.debug("warm browser: ready in %.1f s", warm.ready_at - warm.started)
    else:
        if failure is not None:
            log.debug(
                "warm browser: did not start (%s); a login starts its own", failure
            )
        close_session(warm.session)
        _SLOT.pop(warm)
    warm.done.set()
    return keep


def _cancel(warm: _Warm) -> None:
    """Close a warm browser that is out of the slot, started or not."""
    with _SLOT.lock:
        warm.cancelled = True
        parked = warm.settled and warm.failure is None
    warm.released.set()
    if parked:
        close_session(warm.session)


def take_warm_browser(
    options: LoginOptions, spki: str | None, *, wait: float = WARM_TAKE_WAIT
) -> BrowserSession | None:
    """The warm browser for this login, once, if it fits; else None (start fresh).

    It fits when it runs, was launched with the same settings, and pins
    ``spki``, the certificate the gateway shows now.  One that does not is
    closed here.
    """
    warm = _SLOT.pop()
    if warm is None:
        return None
    warm.released.set()
    if not warm.done.wait(wait):
        log.info("warm browser: still starting after %g s; starting a fresh one", wait)
        _cancel(warm)
        return None
    if warm.failure is not None:
        return None
    why = _unfit(warm, options, spki)
    if why is not None:
        log.info("warm browser: not used (%s); starting a fresh one", why)
        close_session(warm.session)
        return None
    warm.session.driver.set_page_load_timeout(options.page_load_timeout)
    log.info(
        "browser: using the warm browser (ready %.1f s before this login)",
        time.monotonic() - (warm.ready_at or warm.started),
    )
    return warm.session


def _unfit(warm: _Warm, options: LoginOptions, spki: str | None) -> str | None:
    if warm.key != launch_key(options):
        return "it was started with other browser settings"
    if warm.spki != spki:
        return "its pinned certificate is not the one the gateway shows"
    return session_trouble(warm.session)


def session_trouble(session: BrowserSession) -> str | None:
    """Why a started browser cannot be used (gone, killed), or None if it answers."""
    if session.driver is None:
        return "it has no driver"
    if session.driver_pid is None or not _alive(session.driver_pid):
        return "its chromedriver is gone"
    display = session.display
    if display is not None and display.server is not None:
        pid = _xvfb_pid(display.server)
        if pid is not None and not _alive(pid):
            return "its Xvfb is gone"
    try:
        session.driver.current_url  # noqa: B018 - a round trip to Chromium
    except WebDriverException as err:
        return f"Chromium does not answer: {_first_line(err)}"
    return None


def close_warm_browser(wait: float = WARM_CLOSE_WAIT) -> None:
    """Close the warm browser, if any, even one still starting (at shutdown)."""
    warm = _SLOT.pop()
    if warm is None:
        return
    _cancel(warm)
    if not warm.done.wait(wait):
        # Its start hangs: take its processes down now; the starter closes
        # again (harmlessly) when it returns.
        close_session(warm.session)
    log.debug("warm browser: closed")


# Whatever way the agent ends, a warm browser must not outlive it.
atexit.register(close_warm_browser)


# --- the page, as the login flow sees it ------------------------------------

# Characters that send_keys would turn into key presses or cannot type.
_UNTYPEABLE = re.compile("[\n\r\t\ue000-\uf8ff\U00010000-\U0010ffff]")

SET_VALUE_SCRIPT = r"""
const el = arguments[0], v = arguments[1];
const desc = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value');
if (desc && desc.set) { desc.set.call(el, v); } else { el.value = v; }
el.dispatchEvent(new Event('input', {bubbles: true}));
el.dispatchEvent(new Event('change', {bubbles: true}));
"""

# Longest a wait for the page goes without reading it again; and the shortest
# gap between two reads while the page keeps changing.
WAIT_SLICE = 0.25
MIN_READ_GAP = 0.02

# Calls back as soon as the page changes after the snapshot taken of it
# (arguments: its document id and mutation count, from PAGE_SCRIPT), or after
# arguments[2] ms.  A navigation ends it with an error, which is a change too.
CHANGE_SCRIPT = r"""
const [doc, seen, limit] = arguments;
const done = arguments[arguments.length - 1];
const w = window;
if ((w.__ibeamDoc || '') !== doc || (w.__ibeamMutations || 0) !== seen) {
  done(true);
} else {
  const kinds = ['readystatechange', 'input', 'change'];
  let over = false;
  const finish = (changed) => {
    if (over) return;
    over = true;
    observer.disconnect();
    clearTimeout(timer);
    for (const kind of kinds) document.removeEventListener(kind, wake, true);
    done(changed);
  };
  const wake = () => finish(true);
  const observer = new MutationObserver(wake);
  observer.observe(document, {subtree: true, childList: true, attributes: true,
                              characterData: true});
  for (const kind of kinds) document.addEventListener(kind, wake, true);
  const timer = setTimeout(() => finish(false), limit);
}
"""

FORM_BUTTON_SCRIPT = r"""
const form = arguments[0].form;
if (!form) return null;
const buttons = 'button[type=submit], input[type=submit], button:not([type])';
for (const b of form.querySelectorAll(buttons)) {
  if (b.getClientRects().length) return b;
}
return null;
"""

# Empty inputs holding a secret and mask secrets in the page text before a dump.
SCRUB_SCRIPT = r"""
const secrets = arguments[0].filter((s) => s);
for (const el of document.querySelectorAll('input, textarea')) {
  const v = el.value || '';
  if (el.type === 'password' || secrets.some((s) => v.includes(s))) {
    el.value = '';
    el.removeAttribute('value');
  }
}
const root = document.documentElement;
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
const nodes = [];
while (walker.nextNode()) nodes.push(walker.currentNode);
for (const node of nodes) {
  let t = node.nodeValue;
  for (const s of secrets) t = t.split(s).join('[redacted]');
  if (t !== node.nodeValue) node.nodeValue = t;
}
"""


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret, raw or in its usual encodings, with a marker."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        forms = {
            secret,
            html.escape(secret, quote=True),
            html.escape(secret, quote=False),
            quote(secret, safe=""),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
        }
        for form in sorted(forms, key=len, reverse=True):
            if form:
                text = text.replace(form, "[redacted]")
    return text


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# What chromedriver may answer when the document went away under a command
# (a navigation, or script replacing the page): besides the stale-element
# error, DevTools errors about a node or a script context that no longer
# exists.  None of these says the browser is in trouble.
_PAGE_CHANGE_SIGNS = (
    "does not belong to the document",
    "no node with given id",
    "cannot find context with specified id",
    "execution context was destroyed",
)


def page_changed_under(err: WebDriverException) -> bool:
    """Whether err only means the page changed while a command ran."""
    if isinstance(err, StaleElementReferenceException):
        return True
    text = (getattr(err, "msg", None) or "").lower()
    return any(sign in text for sign in _PAGE_CHANGE_SIGNS)


class SeleniumPage:
    """The login flow's handle on the page: read it, type, click, dump."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self._refused: set[str] = set()

    def open(self, url: str) -> None:
        self.driver.get(url)

    def read(self, chains: Any) -> PageSnapshot:
        try:
            raw = self.driver.execute_script(PAGE_SCRIPT, script_spec(chains))
        except WebDriverException as err:
            if not (isinstance(err, JavascriptException) or page_changed_under(err)):
                raise
            # The document went away under the script (a navigation): treat
            # it as loading; the next poll reads the new page.
            log.debug("login page: read during a page change: %s", err.msg)
            return PageSnapshot(ready_state="loading")
        snapshot = parse_snapshot(raw or {}, chains)
        for entry in set(snapshot.invalid) - self._refused:
            self._refused.add(entry)
            log.warning("login page: the page refused the locator %s", entry)
        return snapshot

    def wait_for(self, predicate: Any, chains: Any, timeout: float) -> PageSnapshot:
        """Read the page as it changes until predicate(snapshot) holds or timeout.

        Returns the last snapshot.  Between reads the page itself says when it
        changed (CHANGE_SCRIPT); a change it cannot see (a property set by
        script) is still read within WAIT_SLICE.
        """
        deadline = time.monotonic() + timeout
        latest = self.read(chains)
        while not predicate(latest):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._await_change(latest, min(left, WAIT_SLICE))
            latest = self.read(chains)
        return latest

    def _await_change(self, seen: PageSnapshot, seconds: float) -> None:
        started = time.monotonic()
        try:
            self.driver.execute_async_script(
                CHANGE_SCRIPT, seen.document, seen.mutations, int(seconds * 1000)
            )
        except (JavascriptException, TimeoutException) as err:
            # The document went away under the script: a navigation, a change.
            log.debug("login page: wait ended by a page change: %s", err.msg)
        # A page that never stops changing (an animated spinner) is read at
        # most every MIN_READ_GAP, not on every mutation.
        rest = MIN_READ_GAP - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)

    def mark(self) -> tuple[str, int]:
        document, mutations = self.driver.execute_script(MARK_SCRIPT)
        return str(document), int(mutations)

    def type_exact(self, element: Any, text: str) -> bool:
        """Type text into element and check the field holds exactly it."""
        if element.get_property("value"):
            # Each call is a round trip to the browser: clear only what needs it.
            with contextlib.suppress(WebDriverException):
                element.clear()
        if not _UNTYPEABLE.search(text):
            try:
                element.send_keys(text)
            except WebDriverException as err:
                log.debug("login page: typing failed (%s), setting the value", err.msg)
        if element.get_property("value") == text:
            return True
        self.driver.execute_script(SET_VALUE_SCRIPT, element, text)
        return element.get_property("value") == text

    def click(self, element: Any) -> None:
        try:
            element.click()
        except (ElementClickInterceptedException, ElementNotInteractableException):
            self.js_click(element)

    def js_click(self, element: Any) -> None:
        self.driver.execute_script("arguments[0].click();", element)

    def press_enter(self, element: Any) -> None:
        element.send_keys(Keys.ENTER)

    def select(self, element: Any, index: int) -> None:
        Select(element).select_by_index(index)

    def form_submit_button(self, element: Any) -> Any:
        return self.driver.execute_script(FORM_BUTTON_SCRIPT, element)

    def dump(self, outputs_dir: Path, secrets: list[str], state: Any) -> list[str]:
        """Save a screenshot and the HTML with secrets removed; return the paths."""
        label = getattr(state, "value", None) or "page"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(outputs_dir) / f"login-{label}-{stamp}"
        try:
            Path(outputs_dir).mkdir(parents=True, exist_ok=True)
            self.driver.execute_script(SCRUB_SCRIPT, list(secrets))
            png = base.with_suffix(".png")
            _write_private(png, self.driver.get_screenshot_as_png())
            page = base.with_suffix(".html")
            html_text = redact(self.driver.page_source, list(secrets))
            _write_private(page, html_text.encode("utf-8"))
        except (OSError, WebDriverException) as err:
            log.warning("login page: could not save the page: %s", err)
            return []
        log.warning("login page: saved %s and %s (secrets removed)", png, page)
        prune_dumps(Path(outputs_dir))
        return [str(png), str(page)]


def prune_dumps(outputs_dir: Path, keep: int = MAX_DUMPS) -> None:
    """Delete all but the newest `keep` page dumps (screenshot and HTML pairs).

    A page that stays unrecognised for weeks is dumped at every attempt; the
    newest few say all there is to say, and the disk must not fill up.
    """
    dumps = sorted(
        (path for path in outputs_dir.glob("login-*") if path.suffix in DUMP_SUFFIXES),
        key=lambda path: path.name.rsplit("-", 2)[-2:],
        reverse=True,
    )
    for path in dumps[keep * len(DUMP_SUFFIXES) :]:
        with contextlib.suppress(OSError):
            path.unlink()
