"""Certificate checks and keystores for the gateway's HTTPS port."""

from __future__ import annotations

import datetime as dt
import subprocess

import jks
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ibeam_agents import certs
from ibeam_agents.errors import ConfigError
from tests.support.needs import require_binaries
from tests.support.tls import self_signed_der

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)


def write_pair(directory, names=("localhost",), **kwargs):
    cert_pem, key_pem = certs.make_self_signed(list(names), **kwargs)
    (directory / certs.CERT_FILE).write_bytes(cert_pem)
    (directory / certs.KEY_FILE).write_bytes(key_pem)
    return cert_pem, key_pem


def write_cacert(directory, password="storepass", names=("localhost",)):
    """Write IBeam's cacert.jks (a real JKS) and cacert.pem."""
    cert_pem, cert, key_der = self_signed_der(names)
    entry = jks.PrivateKeyEntry.new(
        "localhost", [cert.public_bytes(serialization.Encoding.DER)], key_der, "pkcs8"
    )
    jks.KeyStore.new("jks", [entry]).save(str(directory / certs.CACERT_JKS), password)
    (directory / certs.CACERT_PEM).write_bytes(cert_pem)
    return cert_pem


def find(directory, host="localhost", password=None, now=None):
    return certs.find_material(
        directory, host=host, keystore_password=password, new_password="pw", now=now
    )


def test_find_material_none_without_files(tmp_path):
    assert find(tmp_path) is None


def test_pem_pair_becomes_pkcs12_keystore(tmp_path):
    cert_pem, _ = write_pair(tmp_path)
    material = find(tmp_path)
    key, cert, _ = pkcs12.load_key_and_certificates(material.keystore, b"pw")
    assert cert == x509.load_pem_x509_certificate(cert_pem)
    assert key is not None
    assert material.keystore_name == certs.KEYSTORE_NAME
    assert material.password == "pw"
    assert material.agent_ca == cert_pem


def test_pem_keystore_is_readable_by_keytool(tmp_path):
    require_binaries("keytool")
    write_pair(tmp_path)
    store = tmp_path / "store.p12"
    store.write_bytes(find(tmp_path).keystore)
    listing = subprocess.run(
        ["keytool", "-list", "-keystore", str(store), "-storepass", "pw"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "PrivateKeyEntry" in listing


def test_expired_certificate_is_refused(tmp_path):
    write_pair(tmp_path, days=30)
    with pytest.raises(ConfigError, match="expired on"):
        find(tmp_path, now=LATER)


def test_future_certificate_is_refused(tmp_path):
    write_pair(tmp_path, not_before=LATER)
    with pytest.raises(ConfigError, match="valid only from"):
        find(tmp_path)


def test_certificate_without_host_is_refused(tmp_path):
    write_pair(tmp_path, names=("gateway.example.com",))
    with pytest.raises(ConfigError) as excinfo:
        find(tmp_path, host="localhost")
    message = str(excinfo.value)
    assert "gateway.example.com, not localhost" in message
    assert "DNS:localhost" in message


def test_key_of_another_certificate_is_refused(tmp_path):
    write_pair(tmp_path)
    _, other_key = certs.make_self_signed(["localhost"])
    (tmp_path / certs.KEY_FILE).write_bytes(other_key)
    with pytest.raises(ConfigError, match="is not the key of the certificate"):
        find(tmp_path)


def test_encrypted_key_is_refused(tmp_path):
    write_pair(tmp_path)
    key = serialization.load_pem_private_key(
        (tmp_path / certs.KEY_FILE).read_bytes(), password=None
    )
    (tmp_path / certs.KEY_FILE).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        find(tmp_path)


def test_garbage_certificate_is_refused(tmp_path):
    write_pair(tmp_path)
    (tmp_path / certs.CERT_FILE).write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        find(tmp_path)


def test_half_a_pair_is_refused(tmp_path):
    write_pair(tmp_path)
    (tmp_path / certs.KEY_FILE).unlink()
    with pytest.raises(ConfigError, match="has cert.pem but not key.pem"):
        find(tmp_path)


def test_both_pairs_are_refused(tmp_path):
    write_pair(tmp_path)
    write_cacert(tmp_path)
    with pytest.raises(ConfigError, match="keep one pair"):
        find(tmp_path, password="storepass")


def test_cacert_pair_is_taken_as_in_ibeam(tmp_path):
    cert_pem = write_cacert(tmp_path)
    material = find(tmp_path, password="storepass")
    assert material.keystore_name == certs.CACERT_JKS
    assert material.keystore == (tmp_path / certs.CACERT_JKS).read_bytes()
    assert material.password == "storepass"
    assert material.agent_ca == cert_pem


def test_cacert_with_wrong_password_is_refused(tmp_path):
    write_cacert(tmp_path)
    with pytest.raises(ConfigError, match="cannot be opened"):
        find(tmp_path, password="wrong")


def test_cacert_without_password_is_refused(tmp_path):
    write_cacert(tmp_path)
    with pytest.raises(ConfigError, match="IBEAM_KEYSTORE_PASSWORD"):
        find(tmp_path)


def test_cacert_pem_of_another_certificate_is_refused(tmp_path):
    write_cacert(tmp_path)
    other, _ = certs.make_self_signed(["localhost"])
    (tmp_path / certs.CACERT_PEM).write_bytes(other)
    with pytest.raises(ConfigError, match="neither is nor signed"):
        find(tmp_path, password="storepass")


def test_cacert_keystore_may_be_pkcs12(tmp_path):
    write_pair(tmp_path)
    material = find(tmp_path)
    (tmp_path / certs.CACERT_JKS).write_bytes(material.keystore)
    (tmp_path / certs.CACERT_PEM).write_bytes(material.agent_ca)
    for name in (certs.CERT_FILE, certs.KEY_FILE):
        (tmp_path / name).unlink()
    assert find(tmp_path, password="pw").keystore_name == certs.CACERT_JKS


def test_certificate_near_expiry_gives_note(tmp_path):
    write_pair(tmp_path, days=3)
    assert "renew it soon" in find(tmp_path).notes[0]


@pytest.mark.parametrize(
    ("names", "host", "expected"),
    [
        (["localhost"], "localhost", True),
        (["LocalHost"], "localhost", True),
        (["*.example.com"], "gw.example.com", True),
        (["*.example.com"], "a.gw.example.com", False),
        (["*.example.com"], "example.com", False),
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "localhost", False),
        (["localhost"], "127.0.0.1", False),
    ],
)
def test_covers_matches_like_a_tls_client(names, host, expected):
    cert = x509.load_pem_x509_certificate(certs.make_self_signed(names)[0])
    assert certs.covers(cert, host) is expected


def _deny(monkeypatch, name):
    """Reading `name` fails as an owner-only file of another user does."""
    real = certs.Path.read_bytes

    def read_bytes(self):
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(certs.Path, "read_bytes", read_bytes)


@pytest.mark.parametrize(
    "name", [certs.KEY_FILE, certs.CERT_FILE, certs.CACERT_JKS, certs.CACERT_PEM]
)
def test_unreadable_input_names_the_uid_and_the_fix(tmp_path, monkeypatch, name):
    """A key made owner-only by another host user (README's openssl recipe): the
    message is about who may read it, not about its form."""
    pair = name in (certs.KEY_FILE, certs.CERT_FILE)
    write_pair(tmp_path) if pair else write_cacert(tmp_path)
    _deny(monkeypatch, name)
    with pytest.raises(ConfigError) as info:
        find(tmp_path, password=None if pair else "storepass")
    text = str(info.value)
    uid = certs.os.geteuid()
    assert text.startswith(f"{tmp_path / name} is not readable by uid {uid}")
    assert f"chown {uid} inputs/{name}" in text and "0640" in text
    assert "PEM form" not in text and "Permission denied" not in text


def test_unreadable_input_other_errors_name_the_cause(tmp_path, monkeypatch):
    write_pair(tmp_path)
    real = certs.Path.read_bytes

    def read_bytes(self):
        if self.name == certs.KEY_FILE:
            raise OSError(5, "Input/output error", str(self))
        return real(self)

    monkeypatch.setattr(certs.Path, "read_bytes", read_bytes)
    with pytest.raises(ConfigError, match=r"key.pem cannot be read \(Input/output"):
        find(tmp_path)
