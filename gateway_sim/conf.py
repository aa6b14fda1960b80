"""conf.yaml as the real gateway reads it: known keys, defaults, the IP filter.

The real gateway binds the file with SnakeYAML to a Java bean, so an unknown
top-level key aborts startup, and the IP lists are matched entry by entry as
Java regular expressions against the whole client address (an entry `*` does
not compile, which makes every request fail with 500).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_CLASS = "ibgroup.web.core.clientportal.gw.Config"

# Bean properties with a setter in the 2023 build (shared/reference/gateway.md §1.2).
DEFAULTS: dict[str, Any] = {
    "ip2loc": "US",
    "proxyRemoteSsl": True,
    "proxyRemoteHost": "gdcdyn.interactivebrokers.com",
    "listenPort": 5000,
    "listenSsl": True,
    "ccp": False,
    "svcEnvironment": "v1",
    "sslCert": "vertx.jks",
    "sslPwd": "mywebapi",
    "authDelay": 3000,
    "portalBaseURL": None,
    "serverOptions": None,
    "cors": None,
    "webApps": None,
    "ips": None,
    "tst": False,
    "ssoPing": 5,
    "twsBaseURL": "/tws.proxy",
}

_TYPES: dict[str, tuple[type, ...]] = {
    "ip2loc": (str,),
    "proxyRemoteSsl": (bool,),
    "proxyRemoteHost": (str,),
    "listenPort": (int,),
    "listenSsl": (bool,),
    "ccp": (bool,),
    "svcEnvironment": (str,),
    "sslCert": (str,),
    "sslPwd": (str,),
    "authDelay": (int,),
    "portalBaseURL": (str,),
    "serverOptions": (dict,),
    "cors": (dict,),
    "webApps": (list,),
    "ips": (dict,),
    "tst": (bool,),
    "ssoPing": (int,),
    "twsBaseURL": (str,),
}


class ConfError(Exception):
    """conf.yaml cannot be loaded; lines hold what the real gateway prints."""

    def __init__(self, lines: list[str]):
        super().__init__(lines[0] if lines else "configuration error")
        self.lines = lines


@dataclass
class GatewayConf:
    """The effective configuration of one gateway process."""

    values: dict[str, Any]
    path: str
    text: str = ""
    ip_filter: IpFilter = field(init=False)

    def __post_init__(self) -> None:
        self.ip_filter = IpFilter.from_conf(self.values.get("ips"))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def web_apps(self) -> list[dict[str, Any]]:
        """The webApps entries that name a mount."""
        apps = self.values.get("webApps") or []
        return [app for app in apps if isinstance(app, dict) and app.get("name")]

    @property
    def cors_origin(self) -> str:
        cors = self.values.get("cors") or {}
        return str(cors.get("origin.allowed", "*"))


def resolve(conf_arg: str, classpath: list[str]) -> str | None:
    """Find conf_arg like a class-path resource: relative to each directory entry."""
    for entry in classpath:
        if entry.endswith(".jar") or entry.endswith("*"):
            continue
        candidate = os.path.join(entry, conf_arg)
        if os.path.isfile(candidate):
            return candidate
    return None


def load(conf_arg: str, classpath: list[str]) -> GatewayConf:
    """Load the configuration the way GatewayStart does, or raise ConfError."""
    header = f"Failed to load configuration file: {conf_arg}"
    path = resolve(conf_arg, classpath)
    if path is None:
        raise ConfError([header, "java.io.IOException: Stream closed"])
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfError([header, str(exc)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfError([header, f"Can't construct a java object for {CONFIG_CLASS}"])
    _check_keys(data, node, text, header)
    values = dict(DEFAULTS)
    values.update(data)
    return GatewayConf(values=values, path=path, text=text)


def _bean_ref() -> str:
    return f"{CONFIG_CLASS}@{os.getpid() * 2654435761 % 2**32:x}"


def _check_keys(data: dict, node: Any, text: str, header: str) -> None:
    marks = _key_marks(node)
    for key, value in data.items():
        if key not in DEFAULTS:
            lines = [header, f"Cannot create property={key} for JavaBean={_bean_ref()}"]
            lines += _where(text, marks.get(str(key)))
            lines.append(f"Unable to find property '{key}' on class: {CONFIG_CLASS}")
            raise ConfError(lines)
        if _type_ok(key, value):
            continue
        lines = [header, f"Cannot create property={key} for JavaBean={_bean_ref()}"]
        lines += _where(text, marks.get(str(key)))
        expected = _TYPES[key][0].__name__
        lines.append(f"No single argument constructor found for {expected}: {value!r}")
        raise ConfError(lines)


def _type_ok(key: str, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return bool in _TYPES[key]
    return isinstance(value, _TYPES[key])


def _key_marks(node: Any) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark for key, _ in node.value}


def _where(text: str, mark: Any) -> list[str]:
    if mark is None:
        return []
    source = text.splitlines()[mark.line] if text else ""
    return [
        f" in 'reader', line {mark.line + 1}, column {mark.column + 1}:",
        f"    {source}",
        "    " + " " * mark.column + "^",
    ]


class IpFilter:
    """The gateway's IPv4 allow/deny lists (shared/reference/gateway.md §2.1)."""

    def __init__(self, allow: list[str] | None, deny: list[str] | None):
        self.enabled = allow is not None and deny is not None
        self.allow = [str(entry) for entry in allow or []]
        self.deny = [str(entry) for entry in deny or []]
        self.broken = False
        self._allow: list[re.Pattern] = []
        self._deny: list[re.Pattern] = []
        if self.enabled:
            try:
                self._allow = [re.compile(entry) for entry in self.allow]
                self._deny = [re.compile(entry) for entry in self.deny]
            except re.error:
                self.broken = True

    @classmethod
    def from_conf(cls, ips: Any) -> IpFilter:
        if not isinstance(ips, dict):
            return cls(None, None)
        return cls(_as_list(ips.get("allow")), _as_list(ips.get("deny")))

    def decide(self, address: str) -> str:
        """Return "allow", "deny" or "error" (a pattern that does not compile)."""
        if not self.enabled:
            return "allow"
        if self.broken:
            return "error"
        if any(pattern.fullmatch(address) for pattern in self._deny):
            return "deny"
        if any(pattern.fullmatch(address) for pattern in self._allow):
            return "allow"
        return "deny"


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return value
    return [value]
