"""X.509 client certificates as IoT Hub takes them for a self-signed device: matched by thumbprint.

A device registered with a thumbprint signs in with a TLS client certificate whose SHA-1 or SHA-256
thumbprint (the digest of the certificate's DER bytes, as ``openssl x509 -fingerprint`` prints it)
is the registered one and which is within its validity period; it need not chain to any CA (IoT
Hub's "X.509 self-signed" authentication). Its user name is the usual
``{hub}/{device id}/?api-version=…``; a password is not used (IoT Hub asks every TLS client for a
certificate and then goes by the authentication the device is registered with: the certificate for
an X.509 device, whatever the password; the SAS token for a keyed device, whatever certificate it
showed). DPS identifies an X.509 enrollment by the certificate's common name, which must be the
registration id. The mosquitto plugin (``mosquitto_auth.c``) applies the same rules, with the same
refusal reasons, in C (OpenSSL's ``X509_digest``).

:func:`make_device_certificate` makes such a certificate (``hil lab device-cert``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Why a certificate sign-in was refused: the same words in the plugin's log and the embedded broker's.
NO_CERTIFICATE = "no client certificate"
WRONG_THUMBPRINT = "client certificate's thumbprint is not this identity's"
WRONG_COMMON_NAME = "client certificate's common name is not the registration id"
OUT_OF_DATE = "client certificate expired or not yet valid"
REFUSALS = (NO_CERTIFICATE, WRONG_THUMBPRINT, OUT_OF_DATE, WRONG_COMMON_NAME)

SHA1_BYTES = 20
SHA256_BYTES = 32
_SEPARATORS = re.compile(r"[\s:]")
DEVICE_CERT_DAYS = 365
#: RSA, as the NetX Duo Azure IoT samples' default device key type (NX_SECURE_X509_KEY_TYPE_RSA_PKCS1_DER)
DEVICE_KEY_BITS = 2048


def parse_thumbprint(text: str) -> bytes:
    """A thumbprint as IoT Hub and ``openssl x509 -fingerprint`` show it (40 hex digits for SHA-1, 64 for
    SHA-256; colons and spaces ignored, any case) into its bytes; ValueError saying what is wrong."""
    digits = _SEPARATORS.sub("", text)
    if not re.fullmatch(r"[0-9A-Fa-f]+", digits or "-") or len(digits) not in (2 * SHA1_BYTES, 2 * SHA256_BYTES):
        raise ValueError(f"is not a SHA-1 (40 hex digits) or SHA-256 (64 hex digits) thumbprint "
                         f"({len(digits)} characters after removing ':' and spaces)")
    return bytes.fromhex(digits)


def thumbprint_of(der: bytes, size: int) -> bytes:
    """The certificate's thumbprint of ``size`` bytes: SHA-1 (20) or SHA-256 (32) of its DER bytes."""
    return (hashlib.sha1 if size == SHA1_BYTES else hashlib.sha256)(der).digest()


def common_name(der: bytes) -> str | None:
    """The certificate's subject common name (the last one, as OpenSSL finds it), or None."""
    try:
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    value = names[-1].value if names else None
    return value if isinstance(value, str) else None


def check_certificate(der: bytes | None, thumbprint: bytes, registration_id: str | None = None, *,
                      now: _dt.datetime | None = None) -> str | None:
    """None when the client certificate ``der`` proves the identity registered with ``thumbprint``, is
    within its validity period at ``now`` (default: this host's clock) and, for a DPS registration,
    names ``registration_id`` as its common name; else why not (in that order)."""
    if der is None:
        return NO_CERTIFICATE
    if thumbprint_of(der, len(thumbprint)) != thumbprint:
        return WRONG_THUMBPRINT
    cert = x509.load_der_x509_certificate(der)  # the TLS stack parsed it already: it parses
    at = now or _dt.datetime.now(_dt.UTC)
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        return OUT_OF_DATE
    if registration_id is not None and common_name(der) != registration_id:
        return WRONG_COMMON_NAME
    return None


@dataclass(frozen=True)
class DeviceCertificate:
    """A self-signed device certificate and its private key (PEM, and DER as a firmware build takes
    them: the key in PKCS#1) and its thumbprints (upper-case hex)."""

    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes
    key_der: bytes
    sha1: str
    sha256: str


def make_device_certificate(common: str, *, days: int = DEVICE_CERT_DAYS,
                            now: _dt.datetime | None = None) -> DeviceCertificate:
    """A self-signed client certificate for a device (RSA 2048, SHA-256) with ``common`` as its common
    name: the registration id when the device registers with DPS (which identifies it by that)."""
    start = (now or _dt.datetime.now(_dt.UTC)) - _dt.timedelta(minutes=5)
    key = rsa.generate_private_key(public_exponent=65537, key_size=DEVICE_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    pkcs1 = serialization.PrivateFormat.TraditionalOpenSSL
    return DeviceCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM, pkcs1, serialization.NoEncryption()),
        cert_der=der, key_der=key.private_bytes(serialization.Encoding.DER, pkcs1, serialization.NoEncryption()),
        sha1=hashlib.sha1(der).hexdigest().upper(), sha256=hashlib.sha256(der).hexdigest().upper())
