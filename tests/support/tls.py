"""Certificates for tests: a self-signed one with its key as Java keystores hold it."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ibeam_agents import certs


def self_signed_der(
    names=("localhost",),
) -> tuple[bytes, x509.Certificate, bytes]:
    """A fresh self-signed certificate: its PEM, the parsed certificate and
    the private key as PKCS#8 DER (what a JKS private-key entry stores)."""
    cert_pem, key_pem = certs.make_self_signed(list(names))
    key = serialization.load_pem_private_key(key_pem, password=None)
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, x509.load_pem_x509_certificate(cert_pem), key_der
