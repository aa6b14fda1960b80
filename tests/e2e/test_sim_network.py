"""IP filter and TLS of the simulator, seen by raw HTTPS clients."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socket
import ssl

import jks
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.e2e


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def raw_request(gw, path: str, source: str = "127.0.0.1", method: str = "GET"):
    """(status, headers, body) of one request sent from the given source address."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1",
        gw.port,
        source_address=(source, 0),
        context=unverified(),
        timeout=10,
    )
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def with_ips(sim_factory, ips):
    return sim_factory(conf_overrides={"ips": ips})


def test_default_conf_denies_other_addresses(sim):
    status, headers, body = raw_request(sim, "/", source="127.0.0.2")
    assert (status, headers, body) == (
        404,
        [("Content-Length", "13")],
        b"Access Denied",
    )
    assert raw_request(sim, "/", source="127.0.0.1")[0] == 302


def test_ip_filter_matches_prefix_patterns_not_cidr(sim_factory):
    gw = with_ips(sim_factory, {"allow": ["127.0.*"], "deny": ["0.0.0.0/0"]})
    assert raw_request(gw, "/", source="127.0.0.2")[0] == 302
    gw2 = with_ips(sim_factory, {"allow": ["10.*", "127.0.0.0/8"], "deny": []})
    assert raw_request(gw2, "/", source="127.0.0.2")[0] == 404


def test_ip_filter_checks_deny_first(sim_factory):
    gw = with_ips(sim_factory, {"allow": ["127.*"], "deny": ["127.0.0.2"]})
    assert raw_request(gw, "/v1/api/tickle", "127.0.0.2", "POST")[0] == 404
    assert raw_request(gw, "/v1/api/tickle", "127.0.0.1", "POST")[0] == 401


def test_ip_filter_star_entry_fails_every_request(sim_factory):
    gw = with_ips(sim_factory, {"allow": ["127.0.0.1", "*"], "deny": []})
    status, headers, body = raw_request(gw, "/")
    assert (status, body) == (500, b"Internal Server Error")
    assert headers == [("Content-Length", "21")]


def test_ip_filter_needs_both_lists(sim_factory):
    gw = with_ips(sim_factory, {"allow": ["10.*"]})
    assert raw_request(gw, "/", source="127.0.0.2")[0] == 302


def test_tls_is_1_2_with_http_1_1(sim):
    context = unverified()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.selected_alpn_protocol() == "http/1.1"
    modern = unverified()
    modern.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            modern.wrap_socket(raw, server_hostname="localhost")


def test_plain_http_to_tls_port_gets_empty_reply(sim):
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert raw.recv(1024) == b""


def make_key_and_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def start_with_keystore(sim_factory, tmp_path, name: str, data: bytes, password: str):
    gw = sim_factory(conf_overrides={"sslCert": f"root/{name}", "sslPwd": password})
    gw.stop()
    (gw.root / "root" / name).write_bytes(data)
    return gw.start()


def test_pkcs12_keystore_made_by_test_verifies(sim_factory, tmp_path):
    key, cert = make_key_and_cert()
    encryption = serialization.BestAvailableEncryption(b"s3cret")
    data = pkcs12.serialize_key_and_certificates(
        b"localhost", key, cert, None, encryption
    )
    gw = start_with_keystore(sim_factory, tmp_path, "mine.jks", data, "s3cret")
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    response = requests.get(gw.base_url + "/clear", verify=str(pem), timeout=10)
    assert response.text == "cleared"


def test_jks_keystore_made_by_test_verifies(sim_factory, tmp_path):
    key, cert = make_key_and_cert()
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    entry = jks.PrivateKeyEntry.new("localhost", [der], pkcs8, "pkcs8")
    data = jks.KeyStore.new("jks", [entry]).saves("changeit")
    gw = start_with_keystore(sim_factory, tmp_path, "real.jks", data, "changeit")
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    response = requests.get(gw.base_url + "/clear", verify=str(pem), timeout=10)
    assert response.text == "cleared"


def test_wrong_keystore_password_serves_nothing(sim_factory):
    gw = sim_factory(conf_overrides={"sslPwd": "not-the-password"})
    assert gw.running()
    assert gw.state()["listening"] is False
    assert "Server listen failed" in gw.console()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()


def test_listen_ssl_false_serves_plain_http(sim_factory):
    gw = sim_factory(conf_overrides={"listenSsl": False})
    assert gw.base_url.startswith("http://")
    response = requests.get(gw.base_url + "/clear", timeout=10)
    assert response.text == "cleared"
    assert "Open http://localhost:" in gw.console()
