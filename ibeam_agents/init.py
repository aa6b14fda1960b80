"""The appliance's init step: prepare the gateway's files before anything starts.

Run as ``python -m ibeam_agents init`` by the image's entrypoint and by the demo,
before supervisord starts the gateway.  It

1. takes ``conf.yaml`` from the inputs dir when there is one (it wins, as in the
   original IBeam), or renders ``templates/conf.yaml.j2`` from the environment,
   and says which; a conf.yaml left where it is not read (a sub-folder of the
   inputs dir, the gateway dir's top, a misspelt name) or a hand-edited
   ``root/conf.yaml`` that is about to be replaced is named in a warning;
2. installs certificates from the inputs dir (a PEM pair, or IBeam's
   ``cacert.jks`` + ``cacert.pem``) and wires ``sslCert``/``sslPwd``;
3. lints the result (see ``conflint``) and prints the effective file;
4. with ``--check-agent`` (the entrypoint's way), reads the agent's settings and
   credentials as the agent will, so that a setting the agent refuses stops the
   appliance here instead of after supervisord has started everything;
5. writes the keystore, the agent's CA file and ``root/conf.yaml`` atomically,
   and only once every check has passed.

Bad input ends it with one line naming the input and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ibeam_agents import certs, conflint
from ibeam_agents.errors import AgentError, ConfigError

log = logging.getLogger("ibeam.init")

DEFAULT_GATEWAY_DIR = "/srv/clientportal.gw"
DEFAULT_INPUTS_DIR = "/srv/inputs"
DEFAULT_PORT = 5000
DEFAULT_UPSTREAM = "https://api.ibkr.com"
# Loopback for the agent plus the private networks that container bridges use
# (Docker 172.17-31.x, podman 10.88.x): clients arrive from the bridge address.
# 172.16.0.0/12 has no single pattern in the gateway's syntax, hence the list.
DEFAULT_ALLOW = (
    "127.0.0.1",
    "10.*",
    *(f"172.{n}.*" for n in range(16, 32)),
    "192.168.*",
)
# The gateway's own self-signed keystore (expired; clients must not verify it).
DEFAULT_SSL_CERT = "vertx.jks"
DEFAULT_SSL_PWD = "mywebapi"
CONF_NAME = "conf.yaml"
# sha256 of the root/conf.yaml the init step wrote last, to notice hand edits.
MARK_NAME = ".ibeam-init.sha256"
# Names people give conf.yaml by mistake (compared in lower case).
MISNAMED = ("conf.yml", "conf.yaml.txt", "conf.yaml.yaml", "config.yaml", "config.yml")
# IBKR's shipped root/conf.yaml, as far as the init step cares.
STOCK_LISTEN_PORT = 5000
STOCK_IPS = {"allow": ["192.*", "131.216.*", "127.0.0.1"], "deny": ["212.90.324.10"]}
TEMPLATE_NAME = "conf.yaml.j2"
TEMPLATE_DIRS = (
    Path(__file__).resolve().parent.parent / "templates",
    Path("/etc/ibeam/templates"),
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SSL_PWD_LINE = re.compile(r"^(\s*sslPwd\s*:).*$", re.MULTILINE)


@dataclass
class Plan:
    """Everything the init step will write, decided before anything is written."""

    conf_text: str
    conf_source: str
    tls: certs.TlsMaterial | None = None
    notes: list[str] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    """Run the init step; return the exit status (0, 1 runtime, 2 bad input)."""
    args = _parse_args(argv)
    _setup_logging()
    try:
        run(
            gateway_dir=Path(args.gateway_dir),
            inputs_dir=Path(args.inputs_dir),
            agent_env=Path(args.agent_env) if args.agent_env else None,
            environ=os.environ,
            check_agent=args.check_agent,
        )
    except AgentError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 1
    return 0


def run(
    *,
    gateway_dir: Path,
    inputs_dir: Path,
    environ: Mapping[str, str],
    agent_env: Path | None = None,
    check_agent: bool = False,
) -> Plan:
    """Decide, check, print and then write the gateway's files."""
    root = gateway_dir / "root"
    if not root.is_dir():
        raise ConfigError(
            f"IBEAM_GATEWAY_DIR={gateway_dir} has no root/ directory: point it at "
            "the unzipped clientportal.gw (the directory holding bin/run.sh)"
        )
    plan = make_plan(inputs_dir=inputs_dir, environ=environ)
    if check_agent:
        check_agent_input(plan, environ=environ)
    plan.notes.extend(misplaced_notes(inputs_dir, gateway_dir, plan))
    for note in plan.notes:
        log.warning("%s", note)
    log.info("conf.yaml from %s; effective %s:", plan.conf_source, root / CONF_NAME)
    print(mask_secrets(plan.conf_text), end="", flush=True)
    write_plan(plan, root=root, agent_env=agent_env, environ=environ)
    return plan


def make_plan(*, inputs_dir: Path, environ: Mapping[str, str]) -> Plan:
    """Build the effective conf.yaml and TLS material, checking every input."""
    host, base_port = _agent_target(environ)
    inputs_conf = inputs_dir / CONF_NAME
    if inputs_conf.is_file():
        plan = _plan_from_inputs(inputs_conf, inputs_dir=inputs_dir, environ=environ)
    else:
        plan = _plan_from_environment(inputs_dir=inputs_dir, environ=environ)
    _check_tls_use(plan, inputs_dir=inputs_dir, host=host)
    config = yaml.safe_load(plan.conf_text)
    port = config.get("listenPort", DEFAULT_PORT)
    if base_port is not None and base_port != port:
        raise ConfigError(
            f"IBEAM_GATEWAY_BASE_URL uses port {base_port} but conf.yaml "
            f"({plan.conf_source}) has listenPort {port}: unset "
            "IBEAM_GATEWAY_BASE_URL so the agent takes the port from conf.yaml"
        )
    return plan


def check_agent_input(plan: Plan, *, environ: Mapping[str, str]) -> None:
    """Read the agent's settings and credentials as the agent will; keep nothing.

    Under supervisord a setting the agent refuses shows only after every program
    has started, and ends as a FATAL agent with exit status 0 (a restart loop
    under a restart policy).  Checked here, it is one line and exit status 2.
    The agent finds the gateway's URL in the conf.yaml about to be written, so
    the check takes it from the plan; the CA file the plan writes is checked
    already; supervisord gives the agent its own socket address
    (IBEAM_SUPERVISOR_URL).  The credentials are read without a terminal, as
    under supervisord, decrypted when IBEAM_KEY is set, and dropped at once.
    """
    from ibeam_agents.credentials import load_credentials
    from ibeam_agents.settings import load_settings

    env = dict(environ)
    env.pop("IBEAM_SUPERVISOR_URL", None)
    if not (env.get("IBEAM_GATEWAY_BASE_URL") or "").strip():
        env["IBEAM_GATEWAY_BASE_URL"] = planned_base_url(plan)
    load_settings(env)
    load_credentials(env, interactive=False)


def planned_base_url(plan: Plan) -> str:
    """The URL the agent derives from the planned conf.yaml (as settings does)."""
    config = yaml.safe_load(plan.conf_text) or {}
    scheme = "http" if config.get("listenSsl", True) is False else "https"
    return f"{scheme}://localhost:{config.get('listenPort', DEFAULT_PORT)}"


def write_plan(
    plan: Plan,
    *,
    root: Path,
    environ: Mapping[str, str],
    agent_env: Path | None = None,
) -> None:
    """Write keystore, CA file, conf.yaml and the agent's environment file."""
    exports: dict[str, str] = {}
    if plan.tls is not None:
        write_atomic(root / plan.tls.keystore_name, plan.tls.keystore, mode=0o600)
        ca_path = root / certs.AGENT_CA_NAME
        write_atomic(ca_path, plan.tls.agent_ca, mode=0o644)
        if environ.get("IBEAM_GATEWAY_CA_CERT"):
            log.info("IBEAM_GATEWAY_CA_CERT is set: the agent keeps that file")
        else:
            exports["IBEAM_GATEWAY_CA_CERT"] = str(ca_path)
        log.info("TLS certificate from %s installed", plan.tls.origin)
    write_atomic(root / CONF_NAME, plan.conf_text.encode(), mode=0o600)
    write_atomic(root / MARK_NAME, _digest(plan.conf_text).encode(), mode=0o600)
    if agent_env is not None:
        write_atomic(agent_env, render_exports(exports).encode(), mode=0o600)


def render_conf(
    *,
    listen_port: int,
    listen_ssl: bool,
    upstream: str,
    ssl_cert: str,
    ssl_pwd: str,
    allow: list[str],
    deny: list[str],
) -> str:
    """Render templates/conf.yaml.j2 with the given values."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(path) for path in template_dirs()]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = lambda value: json.dumps(str(value))
    try:
        template = env.get_template(TEMPLATE_NAME)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(
            f"{TEMPLATE_NAME} not found in {', '.join(map(str, template_dirs()))}: "
            "set IBEAM_TEMPLATES_DIR to the project's templates/ directory"
        ) from exc
    return template.render(
        listen_port=listen_port,
        listen_ssl=listen_ssl,
        upstream=upstream,
        ssl_cert=ssl_cert,
        ssl_pwd=ssl_pwd,
        allow=allow,
        deny=deny,
    )


def misplaced_notes(inputs_dir: Path, gateway_dir: Path, plan: Plan) -> list[str]:
    """Warnings for conf.yaml files the gateway will not get, naming each one."""
    used = inputs_dir / CONF_NAME
    notes = [
        f"{path} is not read: the init step takes conf.yaml only from {used} "
        "(else it renders one from the environment); move it there"
        for path in _stray_confs(inputs_dir, gateway_dir)
    ]
    edited = _hand_edit(gateway_dir / "root", plan)
    if edited:
        notes.append(
            f"{gateway_dir / 'root' / CONF_NAME} {edited}; it is replaced by the "
            f"conf.yaml from {plan.conf_source}: put yours in {used} to keep it"
        )
    return notes


def _stray_confs(inputs_dir: Path, gateway_dir: Path) -> list[Path]:
    """conf.yaml look-alikes in places the init step does not read."""
    found: list[Path] = []
    if inputs_dir.is_dir():
        for path in sorted(inputs_dir.iterdir()):
            lower = path.name.lower()
            misnamed = lower in MISNAMED or (
                lower == CONF_NAME and path.name != CONF_NAME
            )
            if path.is_file() and misnamed:
                found.append(path)
        for pattern in ("*/conf.y*ml", "*/*/conf.y*ml"):
            found += [
                path
                for path in sorted(inputs_dir.glob(pattern))
                if not any(part.startswith(".") for part in path.parts[-3:-1])
            ]
    found += [
        path
        for path in (gateway_dir / CONF_NAME, gateway_dir / "bin" / CONF_NAME)
        if path.is_file()
    ]
    return found


def _hand_edit(root: Path, plan: Plan) -> str | None:
    """Why root/conf.yaml looks hand-made, or None (ours, IBKR's, or identical)."""
    try:
        text = (root / CONF_NAME).read_text()
    except (OSError, UnicodeError):
        return None
    if text == plan.conf_text:
        return None
    try:
        mark = (root / MARK_NAME).read_text().strip()
    except OSError:
        mark = None
    if mark is not None:
        return None if mark == _digest(text) else "was edited after the init step"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return "is not IBKR's file nor one the init step wrote"
    if isinstance(data, dict) and (
        data.get("listenPort", STOCK_LISTEN_PORT) == STOCK_LISTEN_PORT
        and data.get("ips") == STOCK_IPS
    ):
        return None
    return "is not IBKR's file nor one the init step wrote"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def template_dirs() -> list[Path]:
    """Directories searched for templates, IBEAM_TEMPLATES_DIR first."""
    override = os.environ.get("IBEAM_TEMPLATES_DIR")
    return [Path(override)] if override else list(TEMPLATE_DIRS)


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace path with data: readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mask_secrets(conf_text: str) -> str:
    """Hide the keystore password in a conf.yaml before printing it."""
    return _SSL_PWD_LINE.sub(r'\1 "********"', conf_text)


def render_exports(values: Mapping[str, str]) -> str:
    """Write shell ``export`` lines for the entrypoint to source."""
    lines = ["# Written by the ibeam init step; sourced by the entrypoint.\n"]
    lines += [f"export {name}={shlex.quote(value)}\n" for name, value in values.items()]
    return "".join(lines)


def read_secret(environ: Mapping[str, str], name: str) -> str | None:
    """Read a secret from NAME or from the file named by NAME_FILE (not both)."""
    value, path = environ.get(name), environ.get(f"{name}_FILE")
    if value and path:
        raise ConfigError(f"{name} and {name}_FILE are both set: keep one of them")
    if not path:
        return value or None
    try:
        return Path(path).read_text().rstrip("\r\n")
    except PermissionError as exc:
        raise ConfigError(
            f"{name}_FILE: " + certs.unreadable_message(Path(path))
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{name}_FILE={path} cannot be read ({exc.strerror}): "
            "point it at a readable file"
        ) from exc


def _plan_from_inputs(
    conf_path: Path, *, inputs_dir: Path, environ: Mapping[str, str]
) -> Plan:
    try:
        text = certs.read_input(conf_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{conf_path} is not UTF-8 text: save it as UTF-8") from exc
    config = _parse_yaml(text, source=str(conf_path))
    ignored = [name for name in _RENDER_SETTINGS if environ.get(name)]
    notes = [
        f"{name} is ignored: {conf_path} wins over the environment" for name in ignored
    ]
    result = conflint.lint(config, source=str(conf_path))
    notes += result.notes
    changed = result.changed
    config = result.config
    tls = _find_tls(
        inputs_dir,
        environ=environ,
        keystore_password=read_secret(environ, "IBEAM_KEYSTORE_PASSWORD")
        or _str_or_none(config.get("sslPwd")),
    )
    if tls is not None and config.get("listenSsl", True):
        if (config.get("sslCert"), config.get("sslPwd")) != (
            tls.keystore_name,
            tls.password,
        ):
            config["sslCert"], config["sslPwd"] = tls.keystore_name, tls.password
            changed = True
            notes.append(f"{conf_path}: sslCert/sslPwd set to the installed keystore")
    if changed:
        text = _dump_yaml(config, source=conf_path)
    return Plan(conf_text=text, conf_source=str(conf_path), tls=tls, notes=notes)


def _plan_from_environment(*, inputs_dir: Path, environ: Mapping[str, str]) -> Plan:
    allow_raw = environ.get("IBEAM_GATEWAY_ALLOW")
    allow, notes = conflint.translate_entries(
        conflint.split_entries(allow_raw) if allow_raw else DEFAULT_ALLOW,
        where="IBEAM_GATEWAY_ALLOW",
    )
    deny, deny_notes = conflint.translate_entries(
        conflint.split_entries(environ.get("IBEAM_GATEWAY_DENY", "")),
        where="IBEAM_GATEWAY_DENY",
        deny=True,
    )
    conflint.check_loopback(
        allow, deny, allow_name="IBEAM_GATEWAY_ALLOW", deny_name="IBEAM_GATEWAY_DENY"
    )
    listen_ssl = _env_bool(environ, "IBEAM_GATEWAY_TLS", True)
    tls = _find_tls(
        inputs_dir,
        environ=environ,
        keystore_password=read_secret(environ, "IBEAM_KEYSTORE_PASSWORD"),
    )
    text = render_conf(
        listen_port=_env_port(environ, "IBEAM_GATEWAY_PORT", DEFAULT_PORT),
        listen_ssl=listen_ssl,
        upstream=_env_upstream(environ),
        ssl_cert=tls.keystore_name if tls else DEFAULT_SSL_CERT,
        ssl_pwd=tls.password if tls else DEFAULT_SSL_PWD,
        allow=allow,
        deny=deny,
    )
    source = "the environment (templates/conf.yaml.j2)"
    result = conflint.lint(_parse_yaml(text, source=source), source=source)
    return Plan(
        conf_text=text,
        conf_source=source,
        tls=tls,
        notes=notes + deny_notes + result.notes,
    )


def _find_tls(
    inputs_dir: Path, *, environ: Mapping[str, str], keystore_password: str | None
) -> certs.TlsMaterial | None:
    host, _ = _agent_target(environ)
    return certs.find_material(
        inputs_dir,
        host=host,
        keystore_password=keystore_password,
        new_password=secrets.token_urlsafe(24),
    )


def _check_tls_use(plan: Plan, *, inputs_dir: Path, host: str) -> None:
    config = yaml.safe_load(plan.conf_text)
    if plan.tls is not None and not config.get("listenSsl", True):
        raise ConfigError(
            f"certificates in {inputs_dir} but the gateway listens without TLS "
            f"(listenSsl false in {plan.conf_source}): remove the certificates or "
            "turn TLS on (IBEAM_GATEWAY_TLS=true)"
        )
    if plan.tls is not None:
        plan.notes.extend(plan.tls.notes)
        log.info("the agent will verify the gateway as %s", host)


def _agent_target(environ: Mapping[str, str]) -> tuple[str, int | None]:
    """Return the host the agent connects to and the port it names, if any."""
    base_url = environ.get("IBEAM_GATEWAY_BASE_URL")
    if not base_url:
        return "localhost", None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"IBEAM_GATEWAY_BASE_URL must look like https://localhost:5000: "
            f"got {base_url!r}"
        )
    return parts.hostname, parts.port


def _parse_yaml(text: str, *, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(
            f"{source} is not valid YAML{line}: fix the syntax (indent with spaces, "
            "quote values holding ':' or '#')"
        ) from exc


def _dump_yaml(config: Mapping, *, source: Path) -> str:
    out = io.StringIO()
    out.write(f"# {source} as corrected by the ibeam init step.\n")
    yaml.safe_dump(dict(config), out, sort_keys=False, default_flow_style=False)
    return out.getvalue()


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise ConfigError(f"{name} must be true or false: got {environ[name]!r}")


def _env_port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    raise ConfigError(f"{name} must be a port number between 1 and 65535: got {raw!r}")


def _env_upstream(environ: Mapping[str, str]) -> str:
    raw = environ.get("IBEAM_GATEWAY_UPSTREAM", "").strip() or DEFAULT_UPSTREAM
    if re.search(r"[\s\"']", raw) or not raw.startswith(("https://", "http://")):
        raise ConfigError(
            f"IBEAM_GATEWAY_UPSTREAM must be a URL such as {DEFAULT_UPSTREAM}: "
            f"got {raw!r}"
        )
    return raw


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _setup_logging() -> None:
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
        )
    )
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ibeam init",
        description="Render the gateway's conf.yaml and install certificates "
        "before the appliance starts.",
    )
    parser.add_argument(
        "--gateway-dir",
        default=os.environ.get("IBEAM_GATEWAY_DIR") or DEFAULT_GATEWAY_DIR,
        help="gateway directory (IBEAM_GATEWAY_DIR, default %(default)s)",
    )
    parser.add_argument(
        "--inputs-dir",
        default=os.environ.get("IBEAM_INPUTS_DIR") or DEFAULT_INPUTS_DIR,
        help="inputs dir: conf.yaml and certificates (IBEAM_INPUTS_DIR)",
    )
    parser.add_argument(
        "--agent-env",
        help="write shell exports for the agent (e.g. IBEAM_GATEWAY_CA_CERT) here",
    )
    parser.add_argument(
        "--check-agent",
        action="store_true",
        help="also check the agent's settings and credentials (read without a "
        "terminal), so that bad input stops here; the image's entrypoint does",
    )
    return parser.parse_args(argv)


#: settings that shape the rendered conf.yaml (ignored when inputs has conf.yaml)
_RENDER_SETTINGS = (
    "IBEAM_GATEWAY_PORT",
    "IBEAM_GATEWAY_TLS",
    "IBEAM_GATEWAY_ALLOW",
    "IBEAM_GATEWAY_DENY",
    "IBEAM_GATEWAY_UPSTREAM",
)


if __name__ == "__main__":
    sys.exit(main())
