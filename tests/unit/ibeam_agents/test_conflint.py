"""Lint rules for the gateway's conf.yaml."""

from __future__ import annotations

import pytest

from ibeam_agents import conflint
from ibeam_agents.errors import ConfigError


def base_config(**overrides):
    config = {
        "listenPort": 5000,
        "listenSsl": True,
        "sslCert": "vertx.jks",
        "ips": {"allow": ["127.0.0.1", "10.*"], "deny": []},
    }
    config.update(overrides)
    return config


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("10.0.0.0/8", "10.*"),
        ("192.168.0.0/16", "192.168.*"),
        ("172.17.0.0/24", "172.17.0.*"),
        ("10.1.2.3/32", "10.1.2.3"),
        ("10.*", "10.*"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_translate_entry_maps_cidr_to_pattern(entry, expected):
    assert conflint.translate_entry(entry, where="ips.allow") == expected


def test_translate_entry_refuses_slash_twelve_with_hint():
    with pytest.raises(ConfigError) as excinfo:
        conflint.translate_entry("172.16.0.0/12", where="ips.allow")
    message = str(excinfo.value)
    assert "172.16.0.0/12" in message
    assert "172.16.*, 172.17.*" in message


def test_translate_entry_refuses_host_bits_set():
    with pytest.raises(ConfigError, match="host bits"):
        conflint.translate_entry("10.1.0.0/8", where="ips.allow")


def test_translate_entry_refuses_star():
    with pytest.raises(ConfigError, match="500"):
        conflint.translate_entry("*", where="ips.allow")


def test_translate_entry_refuses_allow_everything():
    with pytest.raises(ConfigError, match="every address"):
        conflint.translate_entry("0.0.0.0/0", where="ips.allow")


def test_translate_entry_refuses_ipv6():
    with pytest.raises(ConfigError, match="IPv6"):
        conflint.translate_entry("fd00::/8", where="ips.allow")


def test_translate_entries_drops_deny_everything_with_note():
    entries, notes = conflint.translate_entries(
        ["212.90.32.10", "0.0.0.0/0"], where="ips.deny", deny=True
    )
    assert entries == ["212.90.32.10"]
    assert "dropped 0.0.0.0/0" in notes[0]


def test_translate_entries_notes_entries_that_never_match():
    entries, notes = conflint.translate_entries(["x.x.x.x", "127.0.0.1"], where="w")
    assert entries == ["x.x.x.x", "127.0.0.1"]
    assert notes == ["w: entry 'x.x.x.x' never matches any address"]


def test_lint_accepts_good_config_unchanged():
    result = conflint.lint(base_config(), source="conf.yaml")
    assert result.config == base_config()
    assert not result.changed
    assert result.notes == []


def test_lint_translates_cidr_in_allow_and_deny():
    config = base_config(
        ips={"allow": ["127.0.0.1", "192.168.0.0/16"], "deny": ["10.9.0.0/16"]}
    )
    result = conflint.lint(config, source="conf.yaml")
    assert result.changed
    assert result.config["ips"] == {
        "allow": ["127.0.0.1", "192.168.*"],
        "deny": ["10.9.*"],
    }
    assert config["ips"]["allow"][1] == "192.168.0.0/16"


def test_lint_refuses_unknown_top_level_key():
    with pytest.raises(ConfigError, match="'fooBar'"):
        conflint.lint(base_config(fooBar=1), source="conf.yaml")


def test_lint_refuses_unknown_ips_key():
    config = base_config(ips={"allow": ["127.0.0.1"], "deny": [], "alow": []})
    with pytest.raises(ConfigError, match="'alow'"):
        conflint.lint(config, source="conf.yaml")


def test_lint_refuses_star_in_allow():
    config = base_config(ips={"allow": ["127.0.0.1", "*"], "deny": []})
    with pytest.raises(ConfigError, match="conf.yaml: ips.allow entry"):
        conflint.lint(config, source="conf.yaml")


def test_lint_refuses_missing_loopback():
    config = base_config(ips={"allow": ["10.*"], "deny": []})
    with pytest.raises(ConfigError, match="add 127.0.0.1 to ips.allow"):
        conflint.lint(config, source="conf.yaml")


@pytest.mark.parametrize(
    "entry", ["127.*", "127.0.*", "127.0.0.*", "127.0.0.1/32", "1.*"]
)
def test_lint_accepts_loopback_as_pattern(entry):
    config = base_config(ips={"allow": [entry], "deny": []})
    conflint.lint(config, source="conf.yaml")


def test_lint_refuses_denied_loopback():
    config = base_config(ips={"allow": ["127.0.0.1"], "deny": ["127.*"]})
    with pytest.raises(ConfigError, match="ips.deny matches 127.0.0.1"):
        conflint.lint(config, source="conf.yaml")


def test_lint_notes_filter_off_without_deny():
    result = conflint.lint(base_config(ips={"allow": ["10.*"]}), source="c")
    assert "IP filter is off" in result.notes[0]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("listenPort", "5000", "listenPort"),
        ("listenPort", 70000, "listenPort"),
        ("listenSsl", "yes", "listenSsl"),
        ("ips", ["127.0.0.1"], "ips must be a mapping"),
    ],
)
def test_lint_refuses_bad_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        conflint.lint(base_config(**{key: value}), source="conf.yaml")


def test_lint_refuses_non_mapping():
    with pytest.raises(ConfigError, match="not a YAML mapping"):
        conflint.lint(["a"], source="conf.yaml")


@pytest.mark.parametrize(
    ("entry", "address", "expected"),
    [
        ("10.*", "10.88.0.1", True),
        ("10.*", "100.1.1.1", True),
        ("192.168.*", "192.169.0.1", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("10.0.0.0/8", "10.0.0.1", False),
        ("*", "127.0.0.1", False),
    ],
)
def test_matches_reads_entries_as_the_gateway_does(entry, address, expected):
    assert conflint.matches(entry, address) is expected


def test_split_entries_accepts_commas_and_spaces():
    assert conflint.split_entries(" 127.0.0.1, 10.*  192.168.*,") == [
        "127.0.0.1",
        "10.*",
        "192.168.*",
    ]
