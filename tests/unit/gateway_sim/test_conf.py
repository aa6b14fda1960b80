"""conf.yaml loading and the IP filter of gateway_sim.conf."""

from __future__ import annotations

import pytest

from gateway_sim.conf import ConfError, IpFilter, load, resolve

CONFIG = "ibgroup.web.core.clientportal.gw.Config"


def write_conf(tmp_path, text: str) -> list[str]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "conf.yaml").write_text(text)
    return [str(root), "dist/gw.jar", "build/lib/runtime/*"]


def test_config_resolves_against_class_path_directories(tmp_path):
    classpath = write_conf(tmp_path, "listenPort: 5055\n")
    assert (
        resolve("../root/conf.yaml", classpath) == f"{classpath[0]}/../root/conf.yaml"
    )
    conf = load("../root/conf.yaml", classpath)
    assert conf["listenPort"] == 5055
    assert conf["authDelay"] == 3000
    assert conf["ip2loc"] == "US"


def test_missing_config_reports_stream_closed(tmp_path):
    classpath = write_conf(tmp_path, "{}\n")
    with pytest.raises(ConfError) as failure:
        load("../root/nope.yaml", classpath)
    assert failure.value.lines == [
        "Failed to load configuration file: ../root/nope.yaml",
        "java.io.IOException: Stream closed",
    ]


def test_unknown_key_is_fatal_with_snakeyaml_message(tmp_path):
    classpath = write_conf(tmp_path, 'ip2loc: "US"\nfooBar: 1\n')
    with pytest.raises(ConfError) as failure:
        load("../root/conf.yaml", classpath)
    lines = failure.value.lines
    assert lines[0] == "Failed to load configuration file: ../root/conf.yaml"
    assert lines[1].startswith(f"Cannot create property=fooBar for JavaBean={CONFIG}@")
    assert " in 'reader', line 2, column 1:" in lines
    assert lines[-1] == f"Unable to find property 'fooBar' on class: {CONFIG}"


def test_wrong_value_type_is_fatal(tmp_path):
    classpath = write_conf(tmp_path, "listenPort: five\n")
    with pytest.raises(ConfError) as failure:
        load("../root/conf.yaml", classpath)
    assert "Cannot create property=listenPort" in failure.value.lines[1]


def test_broken_yaml_is_fatal(tmp_path):
    classpath = write_conf(tmp_path, "ips: [unclosed\n")
    with pytest.raises(ConfError):
        load("../root/conf.yaml", classpath)


@pytest.mark.parametrize(
    ("allow", "deny", "address", "verdict"),
    [
        (["192.*", "127.0.0.1"], ["212.90.324.10"], "127.0.0.1", "allow"),
        (["192.*", "127.0.0.1"], ["212.90.324.10"], "127.0.0.2", "deny"),
        (["192.*"], [], "192.168.1.20", "allow"),
        (["10.1.2.*"], [], "10.1.2.3", "allow"),
        (["10.1.2.*"], [], "10.1.3.3", "deny"),
        (["127.*"], ["127.0.0.2"], "127.0.0.2", "deny"),
        (["127.0.0.0/8"], [], "127.0.0.1", "deny"),
        (["127.0.0.1"], ["0.0.0.0/0"], "127.0.0.1", "allow"),
        (["*"], [], "127.0.0.1", "error"),
        (["127.0.0.1"], ["*"], "127.0.0.1", "error"),
    ],
)
def test_ip_filter_rules(allow, deny, address, verdict):
    assert IpFilter(allow, deny).decide(address) == verdict


def test_ip_filter_off_when_a_list_is_missing():
    assert IpFilter.from_conf({"allow": ["10.*"]}).decide("127.0.0.1") == "allow"
    assert IpFilter.from_conf({"deny": ["127.0.0.1"]}).decide("127.0.0.1") == "allow"
    assert IpFilter.from_conf(None).decide("8.8.8.8") == "allow"
    assert (
        IpFilter.from_conf({"allow": ["10.*"], "deny": []}).decide("127.0.0.1")
        == "deny"
    )
