"""Certificates for the gateway's HTTPS port and for the agent that verifies it.

Two ways in, both read from the inputs dir:

- ``cert.pem`` + ``key.pem``: a plain PEM pair, turned into a PKCS12 keystore that
  the gateway's Java reads (``sslCert`` may name a PKCS12 file, whatever its name).
- ``cacert.jks`` + ``cacert.pem``: a ready keystore and the certificate to trust,
  the way the original IBeam takes them.

Either way the agent verifies the gateway against the same certificate, with the
host name it connects to; a certificate that is out of date or does not name that
host is refused here, before anything starts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ibeam_agents.errors import ConfigError

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
CACERT_JKS = "cacert.jks"
CACERT_PEM = "cacert.pem"

#: names of the installed files, under the gateway's root/ directory
KEYSTORE_NAME = "ibeam-keystore.p12"
AGENT_CA_NAME = "ibeam-gateway-ca.pem"

#: warn when a certificate ends within this long
EXPIRY_WARNING = dt.timedelta(days=14)

_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")


@dataclass(frozen=True)
class TlsMaterial:
    """What the init step installs for the gateway's HTTPS and the agent's check."""

    keystore_name: str  # sslCert: file name under root/
    keystore: bytes = field(repr=False)
    password: str = field(repr=False)  # sslPwd
    agent_ca: bytes  # PEM the agent verifies the gateway with
    origin: str  # where it came from, for the log
    notes: tuple[str, ...] = ()


def find_material(
    inputs_dir: Path,
    *,
    host: str,
    keystore_password: str | None,
    new_password: str,
    now: dt.datetime | None = None,
) -> TlsMaterial | None:
    """Return the TLS material the inputs dir provides, or None for the default.

    ``keystore_password`` opens ``cacert.jks``; ``new_password`` protects the
    keystore made from a PEM pair.
    """
    present = {
        name
        for name in (CERT_FILE, KEY_FILE, CACERT_JKS, CACERT_PEM)
        if (inputs_dir / name).is_file()
    }
    pem_pair = present & {CERT_FILE, KEY_FILE}
    ibeam_pair = present & {CACERT_JKS, CACERT_PEM}
    if pem_pair and ibeam_pair:
        raise ConfigError(
            f"{inputs_dir} holds both {CERT_FILE}/{KEY_FILE} and "
            f"{CACERT_JKS}/{CACERT_PEM}: keep one pair"
        )
    _require_pair(inputs_dir, pem_pair, (CERT_FILE, KEY_FILE))
    _require_pair(inputs_dir, ibeam_pair, (CACERT_JKS, CACERT_PEM))
    if pem_pair:
        return from_pem_pair(inputs_dir, host=host, password=new_password, now=now)
    if ibeam_pair:
        return from_cacert(inputs_dir, host=host, password=keystore_password, now=now)
    return None


def from_pem_pair(
    inputs_dir: Path, *, host: str, password: str, now: dt.datetime | None = None
) -> TlsMaterial:
    """Build a PKCS12 keystore from cert.pem + key.pem after checking both."""
    cert_path, key_path = inputs_dir / CERT_FILE, inputs_dir / KEY_FILE
    chain = load_certificates(cert_path)
    key = load_private_key(key_path)
    if not same_public_key(chain[0], key):
        raise ConfigError(
            f"{key_path} is not the key of the certificate in {cert_path}: "
            "put the matching pair in the inputs dir"
        )
    notes = check_certificate(chain[0], host=host, source=str(cert_path), now=now)
    if not _is_self_signed(chain[-1]):
        notes.append(
            f"{cert_path}: the chain does not end at a self-signed CA, so the agent "
            "trusts only the certificates in this file: append the CA if checks fail"
        )
    keystore = pkcs12.serialize_key_and_certificates(
        name=b"gateway",
        key=key,
        cert=chain[0],
        cas=chain[1:] or None,
        encryption_algorithm=serialization.BestAvailableEncryption(password.encode()),
    )
    return TlsMaterial(
        keystore_name=KEYSTORE_NAME,
        keystore=keystore,
        password=password,
        agent_ca=read_input(cert_path),
        origin=f"{cert_path} + {key_path}",
        notes=tuple(notes),
    )


def from_cacert(
    inputs_dir: Path,
    *,
    host: str,
    password: str | None,
    now: dt.datetime | None = None,
) -> TlsMaterial:
    """Take cacert.jks as the keystore and cacert.pem as what the agent trusts."""
    jks_path, pem_path = inputs_dir / CACERT_JKS, inputs_dir / CACERT_PEM
    if password is None:
        raise ConfigError(
            f"{jks_path} needs its password: set sslPwd in the inputs conf.yaml "
            "or IBEAM_KEYSTORE_PASSWORD"
        )
    leaf = read_keystore(jks_path, password)
    trusted = load_certificates(pem_path)
    if not any(_vouches_for(ca, leaf) for ca in trusted):
        raise ConfigError(
            f"{pem_path} neither is nor signed the certificate in {jks_path}: "
            "put the keystore's certificate, or the CA that issued it, in cacert.pem"
        )
    notes = check_certificate(leaf, host=host, source=str(jks_path), now=now)
    return TlsMaterial(
        keystore_name=CACERT_JKS,
        keystore=read_input(jks_path),
        password=password,
        agent_ca=read_input(pem_path),
        origin=f"{jks_path} + {pem_path}",
        notes=tuple(notes),
    )


def make_self_signed(
    names: list[str],
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """Make a self-signed certificate for names; return (cert PEM, key PEM).

    For trying TLS out and for tests; production certificates come from a CA.
    """
    # RSA: what every TLS stack the gateway may run on (JDK 8 to 17) accepts.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])])
    alt_names = [_general_name(name) for name in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def read_input(path: Path) -> bytes:
    """Read an input file; a failure names the file and how to make it readable.

    An inputs dir mounted from the host keeps the host's owners and modes, and
    the appliance runs as uid 1000: a key made owner-only (0600) by another
    user cannot be read.
    """
    try:
        return Path(path).read_bytes()
    except PermissionError as exc:
        raise ConfigError(unreadable_message(path)) from exc
    except OSError as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc.strerror}): put a readable file there"
        ) from exc


def unreadable_message(path: Path) -> str:
    """Why a file is refused with EACCES, and the fix, naming this process's user."""
    uid = os.geteuid()
    try:
        user = f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        user = ""
    return (
        f"{path} is not readable by uid {uid}{user}, the user the init step runs "
        f"as: give the file to that uid on the host (chown {uid} "
        f"inputs/{Path(path).name}) or make it group-readable for a group of "
        "that user (chgrp + chmod 0640); a key need not be world-readable"
    )


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Read every certificate of a PEM file, leaf first."""
    data = read_input(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(
            f"{path} is not a PEM certificate ({exc}): "
            "give the certificate in PEM form (-----BEGIN CERTIFICATE-----)"
        ) from exc
    return certs


def load_private_key(path: Path):
    """Read an unencrypted PEM private key."""
    data = read_input(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ConfigError(
            f"{path} is encrypted: store it without a passphrase "
            "(openssl pkey -in key.pem -out key.pem) and protect the file instead"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"{path} is not a PEM private key ({exc}): "
            "give the key in PEM form (-----BEGIN PRIVATE KEY-----)"
        ) from exc


def read_keystore(path: Path, password: str) -> x509.Certificate:
    """Open a JKS or PKCS12 keystore and return the certificate of its key."""
    data = read_input(path)
    if data[:4] in _JKS_MAGIC:
        return _read_jks(path, password)
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(data, password.encode())
    except ValueError as exc:
        raise ConfigError(
            f"{path} cannot be opened with the configured password ({exc}): "
            "check sslPwd / IBEAM_KEYSTORE_PASSWORD"
        ) from exc
    if key is None or cert is None:
        raise ConfigError(
            f"{path} holds no private key with its certificate: "
            "export the key and certificate together into the keystore"
        )
    return cert


def check_certificate(
    cert: x509.Certificate, *, host: str, source: str, now: dt.datetime | None = None
) -> list[str]:
    """Refuse a certificate out of its validity or not naming host; return notes."""
    now = now or dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        raise ConfigError(
            f"{source}: the certificate expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d}: issue a new one"
        )
    if now < cert.not_valid_before_utc:
        raise ConfigError(
            f"{source}: the certificate is valid only from "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check the clock or "
            "issue one valid now"
        )
    if not covers(cert, host):
        shown = ", ".join(names_of(cert)) or "no subjectAltName"
        raise ConfigError(
            f"{source}: the certificate names {shown}, not {host}, the host the "
            f"agent connects to: issue it with subjectAltName DNS:{host} "
            "(or set IBEAM_GATEWAY_BASE_URL to a name it covers)"
        )
    notes = []
    if cert.not_valid_after_utc - now < EXPIRY_WARNING:
        notes.append(
            f"{source}: the certificate expires on "
            f"{cert.not_valid_after_utc:%Y-%m-%d}: renew it soon"
        )
    return notes


def names_of(cert: x509.Certificate) -> list[str]:
    """List the subjectAltName entries (DNS names and IP addresses)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    dns = san.value.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def covers(cert: x509.Certificate, host: str) -> bool:
    """Whether a TLS client checking host name host accepts this certificate.

    Like modern clients, only subjectAltName counts: the subject CN is ignored.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    if address is not None:
        return address in san.value.get_values_for_type(x509.IPAddress)
    return any(
        _dns_match(name, host) for name in san.value.get_values_for_type(x509.DNSName)
    )


def same_public_key(cert: x509.Certificate, key) -> bool:
    """Whether key is the private half of the certificate's public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(
        der, spki
    )


def _read_jks(path: Path, password: str) -> x509.Certificate:
    import jks

    try:
        store = jks.KeyStore.load(str(path), password)
    except (jks.util.KeystoreException, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be opened with the configured password ({exc}): "
            "check sslPwd / IBEAM_KEYSTORE_PASSWORD"
        ) from exc
    for entry in store.private_keys.values():
        if entry.cert_chain:
            return x509.load_der_x509_certificate(entry.cert_chain[0][1])
    raise ConfigError(
        f"{path} holds no private key with its certificate: "
        "create it with keytool -genkeypair or import the key and certificate"
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _require_pair(inputs_dir: Path, present: set[str], pair: tuple[str, str]) -> None:
    if present and len(present) != 2:
        missing = next(name for name in pair if name not in present)
        found = next(iter(present))
        raise ConfigError(
            f"{inputs_dir} has {found} but not {missing}: add {missing} "
            f"or remove {found}"
        )


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == host
    head, _, rest = host.partition(".")
    return bool(head) and rest == pattern[2:]


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _vouches_for(trusted: x509.Certificate, leaf: x509.Certificate) -> bool:
    if trusted == leaf:
        return True
    try:
        leaf.verify_directly_issued_by(trusted)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
