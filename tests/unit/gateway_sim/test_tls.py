"""Keystores (PKCS12 and JKS) and the TLS context of gateway_sim.tls."""

from __future__ import annotations

import ssl

import jks
import pytest
from cryptography.hazmat.primitives import serialization

from gateway_sim.tls import (
    KeystoreError,
    make_certificate,
    read_keystore,
    server_context,
    write_default_keystore,
    write_pkcs12,
)


def test_default_keystore_is_pkcs12_with_ibkr_subject(tmp_path):
    path = tmp_path / "vertx.jks"
    write_default_keystore(str(path))
    key_pem, chain_pem = read_keystore(str(path), "mywebapi")
    assert b"BEGIN PRIVATE KEY" in key_pem
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(chain_pem)
    assert cert.subject.rfc4514_string() == (
        "CN=Client Portal Web API,OU=Client Portal,O=Interactive Brokers,"
        "L=Greenwich,ST=CT,C=US"
    )


def test_wrong_password_and_missing_file(tmp_path):
    path = tmp_path / "k.p12"
    key, cert = make_certificate(hosts=("localhost",))
    write_pkcs12(str(path), key, cert, "right")
    with pytest.raises(KeystoreError, match="password was incorrect"):
        read_keystore(str(path), "wrong")
    with pytest.raises(KeystoreError, match="FileNotFoundException"):
        read_keystore(str(tmp_path / "none.jks"), "x")


def test_jks_keystore_is_read(tmp_path):
    key, cert = make_certificate(hosts=("127.0.0.1",))
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    entry = jks.PrivateKeyEntry.new("localhost", [der], pkcs8, "pkcs8")
    path = tmp_path / "store.jks"
    path.write_bytes(jks.KeyStore.new("jks", [entry]).saves("changeit"))
    key_pem, chain_pem = read_keystore(str(path), "changeit")
    assert chain_pem == cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(KeystoreError):
        read_keystore(str(path), "nope")


def test_server_context_is_tls_1_2_only(tmp_path):
    path = tmp_path / "vertx.jks"
    write_default_keystore(str(path))
    context = server_context(str(path), "mywebapi")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2
