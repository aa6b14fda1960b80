"""Command line of the simulator: `gateway-sim install` and `gateway-sim serve`.

install DIR     lay out a gateway directory (bin/run.sh, root/conf.yaml, a
                self-signed root/vertx.jks, sim/accounts.yaml)
serve [DIR]     start the gateway in DIR exactly as `cd DIR && bin/run.sh
                root/conf.yaml` does (same process command line)

Exit codes: 0 success, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

from .install import InstallError, install
from .server import MAIN_CLASS

RUNTIME_PATH = (
    "{root}:dist/ibgroup.web.core.iblink.router.clientportal.gw.jar:build/lib/runtime/*"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway-sim",
        description="Offline simulator of IBKR's Client Portal Web API Gateway.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("install", help="lay out a gateway directory")
    setup.add_argument("dir", help="the gateway directory to create")
    setup.add_argument("--accounts", metavar="FILE", help="accounts YAML to install")
    setup.add_argument("--force", action="store_true", help="replace a gateway in DIR")
    serve = commands.add_parser("serve", help="run the gateway installed in DIR")
    serve.add_argument(
        "dir", nargs="?", default=".", help="gateway directory (default .)"
    )
    serve.add_argument(
        "--conf", default="root/conf.yaml", help="config, relative to DIR"
    )
    serve.add_argument("--port", type=int, help="listen port (overrides listenPort)")
    serve.add_argument(
        "--control-port", type=int, help="control API port (default 5099)"
    )
    return parser


def serve_argv(conf: str, port: int | None, control_port: int | None) -> list[str]:
    """The arguments bin/run.sh gives the server module for this config."""
    root = os.path.dirname(conf) or "."
    argv = ["-server", "-cp", RUNTIME_PATH.format(root=root), MAIN_CLASS]
    argv += ["--conf", f"../{conf}"]
    if port is not None:
        argv += ["--port", str(port)]
    if control_port is not None:
        argv += ["--control-port", str(control_port)]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run the gateway-sim command line."""
    args = build_parser().parse_args(argv)
    if args.command == "install":
        try:
            target = install(args.dir, accounts_file=args.accounts, force=args.force)
        except InstallError as exc:
            print(f"gateway-sim install: {exc}", file=sys.stderr)
            return 2
        print(f"gateway installed in {target}")
        print(f"start it with: cd {target} && bin/run.sh root/conf.yaml")
        return 0
    if not os.path.isfile(os.path.join(args.dir, "bin", "run.sh")):
        print(
            f"gateway-sim serve: {args.dir} has no bin/run.sh: "
            "run gateway-sim install first",
            file=sys.stderr,
        )
        return 2
    os.chdir(args.dir)
    server_argv = serve_argv(args.conf, args.port, args.control_port)
    # Replace this process so its command line is the gateway's, as run.sh does.
    os.execv(sys.executable, [sys.executable, "-m", "gateway_sim.server", *server_argv])
    return 1
