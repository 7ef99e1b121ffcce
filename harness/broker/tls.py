"""Certificate authorities and server certificates for the broker's TLS listener (``cryptography``).

Two kinds:

- :func:`make_run_pki`: a CA and server certificate made for one run (EC P-256), naming the
  addresses the broker listens on (IP SANs) and the hub host name (DNS SAN). What the harness's own
  clients trust when a run asks for TLS and the lab has no CA of its own in use.
- :func:`lab_pki`: the **lab CA**, kept in the lab's state folder and reused across runs, since the
  firmware images built for the lab carry it: RSA 2048 with SHA-256 like IoT Hub's own chain (the
  TLS stacks of stock images may offer no ECDSA suite), and a server certificate for the host names
  the lab declares (hub, DPS) plus loopback, issued again when those names change or it nears its
  end. The CA itself is never replaced silently: a damaged one is an error naming the folder.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from filelock import FileLock

from harness.errors import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hil harness run"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_certificate(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: x509.Name, start: _dt.datetime,
                    end: _dt.datetime) -> x509.Certificate:
    """A self-signed CA certificate that signs server certificates only (path length 0)."""
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_run_pki(folder: Path, hosts: list[str], *, days: int = 2) -> TlsFiles:
    """Write ``ca.crt``, ``server.crt`` and ``server.key`` (mode 0600) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hil run CA")
    ca_cert = _ca_certificate(ca_key, ca_name, now, until)

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost")).issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.touch(mode=0o600)
    files.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return files


# ------------------------------------------------------------------------------------------ lab CA

LAB_CA_DAYS = 20 * 365
SERVER_DAYS = 2 * 365
#: A server certificate this close to its end is issued again.
RENEW_BEFORE = _dt.timedelta(days=30)
RSA_BITS = 2048
_LAB_ORG = "hil lab"


@dataclass(frozen=True)
class LabPki:
    """The lab CA's folder: ``ca.crt`` and ``ca.key`` (kept), ``server.crt`` and ``server.key``
    (issued again when the names change)."""

    folder: Path

    @property
    def files(self) -> TlsFiles:
        return TlsFiles(self.folder / "ca.crt", self.folder / "server.crt", self.folder / "server.key")

    @property
    def ca_key_path(self) -> Path:
        return self.folder / "ca.key"

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.files.ca_cert.read_bytes())

    def server_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.files.server_cert.read_bytes())

    def ca_der(self) -> bytes:
        """The CA certificate in DER: what a firmware image compiles in and its manifest fingerprints."""
        return self.ca_certificate().public_bytes(serialization.Encoding.DER)


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def san_names(cert: x509.Certificate) -> set[str]:
    """A certificate's subject alternative names as text (host names and addresses)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in ext.get_values_for_type(x509.DNSName)} | {
        str(a) for a in ext.get_values_for_type(x509.IPAddress)}


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_lab_ca(pki: LabPki) -> None:
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _LAB_ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, "hil lab CA")])
    cert = _ca_certificate(key, name, now, now + _dt.timedelta(days=LAB_CA_DAYS))
    _write_private(pki.ca_key_path, _key_pem(key))  # the key first: a certificate never lacks its key
    _write_private(pki.files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def _load_lab_ca(pki: LabPki) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    fix = (f"remove {pki.folder} to make a new lab CA (every firmware image built for the lab must then be "
           "rebuilt with the new CA: `hil lab ca`), or restore the folder from a backup")
    try:
        cert = pki.ca_certificate()
        key = serialization.load_pem_private_key(pki.ca_key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"lab CA in {pki.folder}: cannot be read ({exc})", fix=fix) from None
    public = cert.public_key()
    if not isinstance(key, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey) \
            or key.public_key().public_numbers() != public.public_numbers():
        raise ConfigError(f"lab CA in {pki.folder}: ca.key is not the key of ca.crt", fix=fix)
    return cert, key


def _server_current(pki: LabPki, ca: x509.Certificate, hosts: Sequence[str]) -> bool:
    try:
        cert = pki.server_certificate()
        key = serialization.load_pem_private_key(pki.files.server_key.read_bytes(), password=None)
        ca_key = ca.public_key()
        assert isinstance(ca_key, rsa.RSAPublicKey)
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    except (OSError, ValueError, TypeError, InvalidSignature, AssertionError):
        return False
    pub, cert_pub = key.public_key(), cert.public_key()
    return (isinstance(pub, rsa.RSAPublicKey) and isinstance(cert_pub, rsa.RSAPublicKey)
            and pub.public_numbers() == cert_pub.public_numbers()
            and cert.issuer == ca.subject and san_names(cert) == set(hosts)
            and cert.not_valid_after_utc - RENEW_BEFORE > _dt.datetime.now(_dt.UTC))


def _issue_server(pki: LabPki, ca: x509.Certificate, ca_key: rsa.RSAPrivateKey, hosts: Sequence[str]) -> None:
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _LAB_ORG),
                                 x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(min(now + _dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # the key is replaced before the certificate: a broker starting in between (it holds no lock)
    # would meet a mismatched pair and fail to start, never serve a certificate with a stale key
    _write_private(pki.files.server_key, _key_pem(key))
    _write_private(pki.files.server_cert, cert.public_bytes(serialization.Encoding.PEM))


def lab_pki(folder: Path, hosts: Sequence[str]) -> LabPki:
    """The lab CA in ``folder`` (made on first use) with a server certificate for exactly ``hosts``
    (host names and addresses; the first is its common name), issued again when they change or it
    is within :data:`RENEW_BEFORE` of its end. Processes sharing the state folder take turns."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name")
    pki = LabPki(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(folder / ".lock"), timeout=60):
        if not pki.files.ca_cert.exists():  # never made, or made up to its key only: no image trusts it yet
            _make_lab_ca(pki)
        ca, ca_key = _load_lab_ca(pki)
        if not _server_current(pki, ca, hosts):
            _issue_server(pki, ca, ca_key, hosts)
    return pki


def c_array(der: bytes, name: str = "_nx_azure_iot_root_cert") -> str:
    """``der`` as the C source NetX Duo's Azure IoT samples keep their trusted root in
    (``cert/nx_azure_iot_cert.c``): an array and its size."""
    rows = [", ".join(f"0x{b:02x}" for b in der[i:i + 16]) for i in range(0, len(der), 16)]
    body = ",\n".join(f"    {row}" for row in rows)
    return (f"const unsigned char {name}[] = {{\n{body}\n}};\n"
            f"const unsigned int {name}_size = sizeof({name});\n")
