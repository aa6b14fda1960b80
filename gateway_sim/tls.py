"""Keystores and the TLS context: PKCS12 or JKS in, TLS 1.2 and HTTP/1.1 out."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import ssl
import tempfile
import textwrap

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

DEFAULT_PASSWORD = "mywebapi"
DEFAULT_ALIAS = "localhost"
JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")

# The subject of IBKR's bundled certificate (shared/reference/gateway.md §1.5).
SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CT"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Greenwich"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Interactive Brokers"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Client Portal"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Client Portal Web API"),
    ]
)


class KeystoreError(Exception):
    """The keystore cannot be read (missing, corrupt or wrong password)."""


def make_certificate(
    *,
    subject: x509.Name = SUBJECT,
    hosts: tuple[str, ...] = (),
    days: int = 3650,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """Create an RSA 2048 key and a self-signed SHA-256 certificate for it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def write_pkcs12(
    path: str,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    password: str = DEFAULT_PASSWORD,
) -> None:
    """Write key and certificate as a password-protected PKCS12 file."""
    data = pkcs12.serialize_key_and_certificates(
        DEFAULT_ALIAS.encode(),
        key,
        cert,
        None,
        serialization.BestAvailableEncryption(password.encode()),
    )
    _write_private(path, data)


def write_default_keystore(path: str) -> None:
    """Write the gateway's default self-signed keystore (password mywebapi)."""
    key, cert = make_certificate()
    write_pkcs12(path, key, cert)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def read_keystore(path: str, password: str) -> tuple[bytes, bytes]:
    """Return (key PEM, certificate chain PEM) from a JKS or PKCS12 keystore."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise KeystoreError(f"java.io.FileNotFoundException: {path}") from exc
    if data[:4] in JKS_MAGIC:
        return _read_jks(data, password)
    return _read_pkcs12(data, password)


def _read_pkcs12(data: bytes, password: str) -> tuple[bytes, bytes]:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode())
    except ValueError as exc:
        raise KeystoreError(
            "java.io.IOException: keystore password was incorrect"
        ) from exc
    if key is None or cert is None:
        raise KeystoreError("java.security.KeyStoreException: no private key entry")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = [cert, *(extra or [])]
    return key_pem, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _read_jks(data: bytes, password: str) -> tuple[bytes, bytes]:
    # pyjks (and its ciphers) only when a JKS file is met: it costs memory.
    import jks

    try:
        store = jks.KeyStore.loads(data, password)
    except Exception as exc:
        raise KeystoreError(
            "java.io.IOException: keystore password was incorrect"
        ) from exc
    for entry in store.private_keys.values():
        if not entry.is_decrypted():
            entry.decrypt(password)
        key_pem = _pem("PRIVATE KEY", entry.pkey_pkcs8)
        certs = b"".join(_pem("CERTIFICATE", cert) for _, cert in entry.cert_chain)
        return key_pem, certs
    raise KeystoreError("java.security.KeyStoreException: no private key entry")


def _pem(label: str, der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def server_context(path: str, password: str) -> ssl.SSLContext:
    """Build the TLS 1.2-only, HTTP/1.1-only server context from a keystore."""
    key_pem, chain_pem = read_keystore(path, password)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    # ssl only loads key material from files: keep it in a private temporary
    # file for the time of the call.
    with tempfile.TemporaryDirectory(prefix="gateway-sim-tls-") as scratch:
        pem_path = os.path.join(scratch, "server.pem")
        _write_private(pem_path, key_pem + chain_pem)
        try:
            context.load_cert_chain(pem_path)
        except ssl.SSLError as exc:
            raise KeystoreError(f"java.security.KeyStoreException: {exc}") from exc
    return context
