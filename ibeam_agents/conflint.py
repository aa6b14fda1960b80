"""Check a gateway conf.yaml before the gateway reads it.

The gateway binds conf.yaml to a Java bean and exits on any key it does not know.
Its IP filter understands only ``a.*``, ``a.b.*``, ``a.b.c.*`` and literal
addresses: a CIDR entry is compared as text and never matches, and ``"*"`` breaks
the filter so that every request gets a 500.  The agent talks to the gateway from
127.0.0.1, so loopback must pass the filter.  (Entries are regular expressions
to the gateway; the documented forms are the ones above.)  ``lint`` turns these
into one clear error, or into a corrected copy of the configuration plus notes.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ibeam_agents.errors import ConfigError

# Properties of ibgroup.web.core.clientportal.gw.Config (read from the 2023 jar):
# any other top-level key makes the gateway exit at start.
KNOWN_KEYS = frozenset(
    {
        "ip2loc",
        "proxyRemoteSsl",
        "proxyRemoteHost",
        "listenPort",
        "listenSsl",
        "ccp",
        "svcEnvironment",
        "sslCert",
        "sslPwd",
        "authDelay",
        "portalBaseURL",
        "serverOptions",
        "cors",
        "webApps",
        "ips",
        "tst",
        "ssoPing",
        "twsBaseURL",
    }
)
IPS_KEYS = frozenset({"allow", "deny"})
LOOPBACK = "127.0.0.1"

_PATTERN_RE = re.compile(r"^(\d{1,3})(?:\.(\d{1,3})){0,2}\.\*$")
_PREFIX_PATTERNS = {8: 1, 16: 2, 24: 3}


@dataclass
class LintResult:
    """The configuration as the gateway should get it, and what was said about it."""

    config: dict[str, Any]
    changed: bool = False
    notes: list[str] = field(default_factory=list)


def split_entries(value: str) -> list[str]:
    """Split an address list given as one string (commas and/or spaces)."""
    return [part for part in re.split(r"[,\s]+", value.strip()) if part]


def is_pattern(entry: str) -> bool:
    """Whether entry is something the gateway's filter can match at all."""
    if _PATTERN_RE.match(entry):
        return all(int(octet) <= 255 for octet in entry[:-2].split("."))
    try:
        ipaddress.IPv4Address(entry)
    except ValueError:
        return False
    return True


def matches(entry: str, address: str) -> bool:
    """Whether an ips entry matches an IPv4 address, as the gateway's filter does.

    The gateway compiles each entry as a (Java) regular expression and matches it
    against the whole address, which is why ``10.*`` works at all (and why it
    also covers 100.x to 109.x).
    """
    try:
        return re.fullmatch(entry, address) is not None
    except re.error:
        return False


def translate_entry(entry: str, *, where: str, deny: bool = False) -> str | None:
    """Return the gateway pattern for one ips entry (None: drop it).

    Raises ConfigError for "*" and for networks the gateway syntax cannot express.
    """
    if entry.strip() == "*":
        raise ConfigError(
            f'{where} entry "*" makes the gateway answer 500 to every request: '
            "list networks instead, e.g. 127.0.0.1 and 10.*"
        )
    if "/" not in entry:
        return entry
    network = _parse_network(entry, where=where)
    if network.prefixlen == 32:
        return str(network.network_address)
    if network.prefixlen in _PREFIX_PATTERNS:
        octets = str(network.network_address).split(".")
        return ".".join(octets[: _PREFIX_PATTERNS[network.prefixlen]]) + ".*"
    if network.prefixlen == 0 and deny:
        return None
    if network.prefixlen == 0:
        raise ConfigError(
            f"{where} entry {entry} (every address) cannot be written in the "
            "gateway's syntax: remove the ips section to turn the filter off, "
            "or list networks such as 10.*"
        )
    raise ConfigError(
        f"{where} entry {entry} cannot be written in the gateway's syntax, which "
        "only has a.*, a.b.*, a.b.c.* and single addresses (CIDR /8, /16, /24, /32): "
        f"list the networks it covers instead, e.g. {_example_split(network)}"
    )


def translate_entries(
    entries: Iterable[str], *, where: str, deny: bool = False
) -> tuple[list[str], list[str]]:
    """Translate a list of ips entries; return the new list and notes on changes."""
    result: list[str] = []
    notes: list[str] = []
    for raw in entries:
        entry = str(raw).strip()
        translated = translate_entry(entry, where=where, deny=deny)
        if translated is None:
            notes.append(
                f"{where}: dropped {entry}: the allow list already refuses every "
                "address it does not name (and the gateway never matched CIDR)"
            )
            continue
        if translated != entry:
            notes.append(f"{where}: {entry} written as {translated} for the gateway")
        if not is_pattern(translated):
            notes.append(f"{where}: entry {translated!r} never matches any address")
        result.append(translated)
    return result, notes


def lint(config: Any, *, source: str) -> LintResult:
    """Check a parsed conf.yaml; return the corrected copy or raise ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"{source} is not a YAML mapping of gateway settings: "
            "start from the gateway's default root/conf.yaml"
        )
    _check_keys(config, source=source)
    _check_listen(config, source=source)
    result = LintResult(config=copy.deepcopy(dict(config)))
    _lint_ips(result, source=source)
    return result


def _check_keys(config: Mapping, *, source: str) -> None:
    unknown = sorted(str(key) for key in config if key not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{source} has key {unknown[0]!r} that the gateway rejects at start: "
            "remove it (known keys: " + ", ".join(sorted(KNOWN_KEYS)) + ")"
        )
    ips = config.get("ips")
    if ips is not None and not isinstance(ips, Mapping):
        raise ConfigError(
            f"{source}: ips must be a mapping with allow and deny lists: "
            f"got {type(ips).__name__}"
        )
    unknown = sorted(str(key) for key in (ips or {}) if key not in IPS_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: ips has key {unknown[0]!r} that the gateway rejects: "
            "use only allow and deny"
        )


def _check_listen(config: Mapping, *, source: str) -> None:
    port = config.get("listenPort", 5000)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(
            f"{source}: listenPort must be a port number between 1 and 65535: "
            f"got {port!r}"
        )
    ssl = config.get("listenSsl", True)
    if not isinstance(ssl, bool):
        raise ConfigError(f"{source}: listenSsl must be true or false: got {ssl!r}")


def _lint_ips(result: LintResult, *, source: str) -> None:
    ips = result.config.get("ips")
    if not ips or ips.get("allow") is None or ips.get("deny") is None:
        result.notes.append(
            f"{source}: the IP filter is off (ips.allow or ips.deny missing): "
            "every address that reaches the port can use the session"
        )
        return
    lists = {}
    for name in ("allow", "deny"):
        entries = ips[name]
        if not isinstance(entries, list):
            raise ConfigError(
                f"{source}: ips.{name} must be a list of addresses: got {entries!r}"
            )
        where = f"{source}: ips.{name}"
        lists[name], notes = translate_entries(
            entries, where=where, deny=name == "deny"
        )
        result.notes.extend(notes)
        if lists[name] != [str(entry).strip() for entry in entries]:
            result.changed = True
    result.config["ips"] = {**ips, **lists}
    check_loopback(
        lists["allow"],
        lists["deny"],
        allow_name=f"{source}: ips.allow",
        deny_name=f"{source}: ips.deny",
    )


def check_loopback(
    allow: list[str], deny: list[str], *, allow_name: str, deny_name: str
) -> None:
    """Refuse lists that keep the agent (on 127.0.0.1) out of the gateway."""
    if any(matches(entry, LOOPBACK) for entry in deny):
        raise ConfigError(
            f"{deny_name} matches {LOOPBACK}, so the agent cannot reach the "
            "gateway: remove that entry"
        )
    if not any(matches(entry, LOOPBACK) for entry in allow):
        field = allow_name.rsplit(": ", 1)[-1]
        raise ConfigError(
            f"{allow_name} does not include {LOOPBACK}, so the agent cannot "
            f"reach the gateway (404 Access Denied): add 127.0.0.1 to {field}"
        )


def _example_split(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """Name the first wider-syntax networks that cover a CIDR block, as a hint."""
    if network.version != 4 or network.prefixlen == 0:
        return "10.*"
    target = min(p for p in (8, 16, 24, 32) if p >= network.prefixlen)
    subnets = list(network.subnets(new_prefix=target))
    shown = [translate_entry(str(net), where="") or "" for net in subnets[:2]]
    more = " ..." if len(subnets) > 2 else ""
    return ", ".join(shown) + more


def _parse_network(
    entry: str, *, where: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        raise ConfigError(
            f"{where} entry {entry} is not a valid network ({exc}): "
            "write it as a.b.c.0/24 with the host bits zero, or as a.b.c.*"
        ) from exc
    if network.version != 4:
        raise ConfigError(
            f"{where} entry {entry} is IPv6, which the gateway never sees "
            "(it listens on IPv4 only): remove it"
        )
    return network
