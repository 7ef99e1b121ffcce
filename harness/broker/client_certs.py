"""Ask every TLS client for a certificate and take any, in this process (the embedded broker kind).

IoT Hub requests a client certificate in every TLS handshake on port 8883 and then goes by the
authentication the device is registered with (:mod:`harness.broker.x509`). Python's ``ssl`` can ask
for an optional certificate (``CERT_OPTIONAL``), but then verifies what it gets against its CAs and
ends the handshake on a self-signed device certificate: it offers no verify callback. OpenSSL
does (``SSL_CTX_set_verify``), so :func:`take_any_client_certificate` calls it on the context's
``SSL_CTX`` through ctypes with a callback that accepts every certificate; the identity table then
matches the certificate's thumbprint at CONNECT (``getpeercert(binary_form=True)`` returns it).
The mosquitto kind does the same in C (``mosquitto_tls_client_cert.c``).

The ``SSL_CTX`` pointer is the first field after the object header of CPython's ``_ssl._SSLContext``
(so since Python 3.7). That is an implementation detail, so it is checked, not assumed: the mode
OpenSSL reports for that pointer must be the one Python set, and after the call OpenSSL must report
the new mode, else :class:`~harness.errors.InfrastructureError`.
"""

from __future__ import annotations

import ctypes
import ssl

from harness.errors import InfrastructureError

_SSL_VERIFY_PEER = 0x01
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept_any(preverify_ok: int, store: int | None) -> int:
    return 1


_ACCEPT_ANY = _VERIFY_CALLBACK(_accept_any)  # kept for the life of the process: OpenSSL holds it
_libssl: ctypes.CDLL | None = None


def _openssl() -> ctypes.CDLL:
    """The libssl the ``ssl`` module runs on (the same soname: the same loaded library)."""
    global _libssl
    if _libssl is None:
        major = ssl.OPENSSL_VERSION_INFO[0]
        try:
            lib = ctypes.CDLL(f"libssl.so.{major}" if major >= 3 else "libssl.so.1.1")
        except OSError as exc:
            raise InfrastructureError(f"cannot load OpenSSL's libssl for client certificates: {exc}",
                                      fix="install libssl3 (Debian 12)") from None
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
        lib.SSL_CTX_set_verify.restype = None
        _libssl = lib
    return _libssl


def take_any_client_certificate(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make the server ``context`` ask each client for a certificate, optional, and take any; return it."""
    lib = _openssl()
    context.verify_mode = ssl.CERT_OPTIONAL  # SSL_VERIFY_PEER: the value the pointer is checked against
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or lib.SSL_CTX_get_verify_mode(pointer) != _SSL_VERIFY_PEER:
        raise InfrastructureError("cannot reach this Python's OpenSSL context to take self-signed client "
                                  "certificates (its layout is not CPython's)",
                                  fix="use the mosquitto broker kind, or CPython 3.11/3.12")
    lib.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, _ACCEPT_ANY)
    if lib.SSL_CTX_get_verify_mode(pointer) != _SSL_VERIFY_PEER:
        raise InfrastructureError("OpenSSL did not take the client-certificate setting")
    return context
