"""The `ibeam` command line.

With no flag: start the gateway if it is not running, authenticate if it is
not, then maintain until SIGTERM or SIGINT.  IBeam's flags keep their meaning;
subcommands cover the rest.  Errors end here, once: one line
``ClassName: message`` on stderr and the error's exit code (2 for bad
configuration, 1 otherwise).

A maintaining run (no flag, or -m) holds an exclusive lock on ``agent.lock`` in
the outputs dir, next to the failure budget, for as long as it runs: a second
agent on the same outputs dir would share the budget and the gateway, and log
the first one's session out when it stops.  One-shot flags and subcommands do
not take it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ibeam_agents import __version__, logs
from ibeam_agents.errors import AgentError, ConfigError
from ibeam_agents.settings import load_settings

if TYPE_CHECKING:
    from ibeam_agents.client import GatewayApi

EPILOG = """\
commands:
  encrypt-password   make IBEAM_PASSWORD (a Fernet token) and IBEAM_KEY from a password
  reset-failures     refill the failure budget after fixing what made logins fail
  status             print the running agent's /status; exit 0 when ready
  init               the appliance's init step (conf.yaml, certificates)

Settings are environment variables; see docs/settings.md.
"""


#: `--key` given without a value: ask for the key on the terminal
ASK_KEY = "\0ask"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibeam",
        description="Keep an IBKR Client Portal Gateway running and authenticated.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "-a",
        "--authenticate",
        action="store_true",
        help="start the gateway if needed, authenticate once, exit",
    )
    modes.add_argument(
        "-k", "--kill", action="store_true", help="log out and stop the gateway"
    )
    modes.add_argument(
        "-m",
        "--maintain",
        action="store_true",
        help="maintain only: first check after one interval",
    )
    modes.add_argument(
        "-s",
        "--start",
        action="store_true",
        help="start the gateway and exit once it answers",
    )
    modes.add_argument(
        "-t", "--tickle", action="store_true", help="tickle once and print the status"
    )
    modes.add_argument(
        "-c",
        "--check",
        action="store_true",
        help="print the status; exit 0 only when authenticated",
    )
    modes.add_argument(
        "-u", "--user", action="store_true", help="print the gateway's /one/user answer"
    )
    modes.add_argument(
        "-l",
        "--validate",
        action="store_true",
        help="renew the SSO session once (sso/validate)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    enc = sub.add_parser(
        "encrypt-password",
        help="make IBEAM_PASSWORD and IBEAM_KEY",
        description="Read a password (hidden prompt, or one line on stdin) and print "
        "IBEAM_PASSWORD (a Fernet token) and IBEAM_KEY. The key is new, unless one "
        "is given: --key, else IBEAM_KEY or IBEAM_KEY_FILE when set.",
    )
    enc.add_argument(
        "--key",
        nargs="?",
        const=ASK_KEY,
        metavar="KEY",
        help="reuse a Fernet key instead of making a new one; --key alone asks for "
        "it (hidden). A KEY written here is visible to other users of the machine "
        "(ps) and stays in the shell history: prefer the prompt or IBEAM_KEY_FILE",
    )
    sub.add_parser("reset-failures", help="refill the failure budget")
    status = sub.add_parser("status", help="print the running agent's status")
    status.add_argument("--url", help="health server URL (default from the settings)")
    # Listed for --help only: main() hands `init` and all that follows to the init
    # step's own parser, since argparse cannot pass options through a subparser.
    sub.add_parser("init", help="appliance init step", add_help=False)
    return parser


#: options of `ibeam` that may come before a subcommand
GLOBAL_FLAGS = ("-v", "--verbose")


def split_init(argv: Sequence[str]) -> list[str] | None:
    """Return the init step's arguments when argv runs `ibeam init`, else None."""
    for index, arg in enumerate(argv):
        if arg == "init":
            return list(argv[index + 1 :])
        if arg not in GLOBAL_FLAGS:
            return None
    return None


def _configure_logs(settings=None, verbose: bool = False) -> None:
    level = "DEBUG" if verbose else (settings.log_level if settings else "INFO")
    logs.configure_logging(level)


def _api(settings) -> GatewayApi:
    from ibeam_agents.client import GatewayApi, Routes

    ca = settings.gateway_ca_cert
    return GatewayApi(
        settings.base_url,
        timeout=settings.request_timeout,
        verify=str(ca) if ca else False,
        routes=Routes.from_settings(settings),
    )


def _terminal_available() -> bool:
    """Whether a hidden prompt can be shown (getpass reads /dev/tty)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _reused_key(args) -> str | None:
    """The key to reuse (--key, its prompt, or IBEAM_KEY(_FILE)), checked before
    any password is asked for; None for a new one."""
    from ibeam_agents.credentials import read_secret

    if args.key is None:
        source = os.environ.get("IBEAM_SECRETS_SOURCE", "").strip().lower()
        key = read_secret(os.environ, "IBEAM_KEY", file_source=source == "fs")
        if not key:
            return None
        from_file = bool(os.environ.get("IBEAM_KEY_FILE"))
        _checked_key(key, "the key in IBEAM_KEY_FILE" if from_file else "IBEAM_KEY")
        setting = "IBEAM_KEY_FILE" if from_file else "IBEAM_KEY"
        print(f"encrypting with the key of {setting}", file=sys.stderr)
        return key
    if args.key != ASK_KEY:
        return _checked_key(args.key, "--key")
    if not _terminal_available():
        raise ConfigError(
            "--key without a value asks for the key, but there is no terminal; "
            "set IBEAM_KEY_FILE (or IBEAM_KEY) to the key instead"
        )
    key = getpass.getpass("Fernet key to reuse: ").strip()
    if not key:
        raise ConfigError("no key was entered; omit --key to get a new one")
    return _checked_key(key, "the key entered")


def _checked_key(key: str, origin: str) -> str:
    from ibeam_agents.credentials import fernet_for

    fernet_for(key, origin, "give the key `ibeam encrypt-password` printed, or none")
    return key


def cmd_encrypt_password(args) -> int:
    from ibeam_agents.credentials import encrypt_password

    key = _reused_key(args)
    if sys.stdin.isatty():
        password = getpass.getpass("Password to encrypt: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ; run the command again")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("no password was given (type it, or pipe it on stdin)")
    token, key = encrypt_password(password, key)
    print(f"IBEAM_PASSWORD={token}")
    print(f"IBEAM_KEY={key}")
    return 0


def cmd_reset_failures(args) -> int:
    from ibeam_agents.budget import FailureBudget

    settings = load_settings()
    _configure_logs(settings, args.verbose)
    budget = FailureBudget(settings.budget_path, settings.max_failed_auth)
    before = budget.state()
    budget.reset("ibeam reset-failures")
    print(
        f"failure budget reset in {settings.budget_path} "
        f"(was {before.spent} of {before.limit} spent"
        f"{', locked' if before.locked else ''})"
    )
    return 0


def cmd_status(args) -> int:
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    url = args.url
    parts = urlsplit(url) if url is not None else None
    if parts is not None and (
        parts.scheme not in ("http", "https") or not parts.hostname
    ):
        raise ConfigError(
            f"--url must be the health server's http:// URL, such as "
            f"http://127.0.0.1:5001: got {url!r}"
        )
    if url is None:
        settings = load_settings()
        host = settings.health_server_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        url = f"http://{host}:{settings.health_server_port}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as reply:
            data = json.loads(reply.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"no agent answers at {url} ({exc})", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, sort_keys=True))
    ready = (
        data.get("state") == "READY"
        and (data.get("status") or {}).get("kind") == "AUTHENTICATED"
    )
    return 0 if ready else 1


def cmd_init(args) -> int:
    try:
        from ibeam_agents.init import main as init_main
    except ImportError as exc:
        raise AgentError(f"the init step is not installed ({exc})") from exc
    return init_main(list(getattr(args, "init_args", []))) or 0


#: the maintaining agent's lock file, in the outputs dir; it holds the pid
AGENT_LOCK_NAME = "agent.lock"


@contextlib.contextmanager
def agent_lock(outputs_dir: Path) -> Iterator[Path]:
    """Hold the one-agent lock of outputs_dir, or refuse naming the holder.

    flock(2), not a pid file: the kernel drops the lock when the holder exits,
    however it exits, so a stale file never blocks a start.  The descriptor is
    not inherited by the programs the agent starts (the browser, the gateway).
    """
    path = Path(outputs_dir) / AGENT_LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"IBEAM_OUTPUTS_DIR={outputs_dir}: the agent's lock {path} cannot be "
            f"opened ({exc.strerror}); point IBEAM_OUTPUTS_DIR at a directory "
            "this user can write"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise ConfigError(
                f"another agent (pid {holder if holder.isdigit() else 'unknown'}) "
                f"already runs with the outputs dir {outputs_dir} (it holds "
                f"{AGENT_LOCK_NAME}): stop it first; one agent keeps a gateway, and "
                "agents of different gateways need an IBEAM_OUTPUTS_DIR each"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"IBEAM_OUTPUTS_DIR={outputs_dir}: the agent's lock {path} cannot "
                f"be taken ({exc.strerror}); put the outputs dir on a local file "
                "system"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _one_call(args, settings) -> int:
    """-t, -c, -u, -l: one request to the gateway, printed."""
    from ibeam_agents.client import StatusKind

    with _api(settings) as api:
        if args.user:
            user = api.user()
            if user is None:
                # why: no session, or no gateway at all
                print(f"no user: {api.tickle().describe()}", file=sys.stderr)
                return 1
            print(json.dumps(user, indent=2, sort_keys=True))
            return 0
        if args.validate:
            result = api.validate()
            print(f"sso/validate: {'valid' if result and result.ok else 'not valid'}")
            return 0 if result and result.ok else 1
        status = api.tickle()
        print(status.describe())
        if args.tickle:
            down = (StatusKind.NOT_RUNNING, StatusKind.UNREACHABLE)
            return 1 if status.kind in down else 0
        return 0 if status.kind is StatusKind.AUTHENTICATED else 1


def _run(args) -> int:
    settings = load_settings()
    _configure_logs(settings, args.verbose)
    if args.tickle or args.check or args.user or args.validate:
        return _one_call(args, settings)
    if args.start or args.kill or args.authenticate:
        return _one_shot(args, settings)
    from ibeam_agents.keeper import GatewayClient

    # credentials first: bad input is refused before the outputs dir is touched;
    # building the client starts nothing
    client = GatewayClient.from_environment(settings=settings)
    client.check_startable()
    with agent_lock(settings.outputs_dir):
        return client.maintain(maintain_only=args.maintain)


def _one_shot(args, settings) -> int:
    """-s, -k, -a: start, stop or authenticate once (no agent lock)."""
    from ibeam_agents.keeper import GatewayClient

    client = GatewayClient.from_environment(
        settings=settings, with_credentials=args.authenticate
    )
    if args.start or args.authenticate:
        client.check_startable()
    if args.start:
        client.start()
        print(f"gateway answers at {settings.base_url} (pid {client.gateway.pid()})")
        return 0
    if args.kill:
        client.stop()
        return 0
    try:
        ok = client.authenticate()
    finally:
        client.close()
    print("authenticated" if ok else f"not authenticated: {client.watcher.state.name}")
    return 0 if ok else 1


def dispatch(args) -> int:
    commands = {
        "encrypt-password": cmd_encrypt_password,
        "reset-failures": cmd_reset_failures,
        "status": cmd_status,
        "init": cmd_init,
    }
    if args.command in commands:
        return commands[args.command](args)
    return _run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ibeam` and `python -m ibeam_agents`."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    init_args = split_init(argv)
    if init_args is not None:
        verbose = len(argv) - len(init_args) > 1  # a flag came before `init`
        args = argparse.Namespace(command="init", init_args=init_args, verbose=verbose)
    else:
        args = build_parser().parse_args(argv)
    _configure_logs(verbose=args.verbose)
    try:
        return dispatch(args)
    except AgentError as exc:
        print(f"{type(exc).__name__}: {logs.redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
