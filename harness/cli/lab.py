"""`hil lab ca`: the lab CA and what a firmware build for the lab sets.

The CA lives in the lab's state folder (made on first use, kept across runs: the images built for
the lab trust it); its server certificate names the hub and DPS host names of ``lab.yaml`` and is
issued again when they change. The command prints the CA in PEM, as the C array NetX Duo's Azure
IoT samples keep their trusted root in (``cert/nx_azure_iot_cert.c``), and the values to set in
their ``sample_config.h`` (per device of the registry).

`hil lab device-cert DEVICE`: a self-signed X.509 device certificate and its private key (RSA 2048,
the NetX Duo samples' default key type), written as PEM files, with the thumbprints to register
in ``lab.yaml`` and the ``DEVICE_CERT`` / ``DEVICE_PRIVATE_KEY`` initializers (DER) a NetX Duo
sample's ``sample_device_identity.c`` takes. Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from harness.broker.x509 import DEVICE_CERT_DAYS, make_device_certificate
from harness.errors import UsageError
from harness.hub.ca import ROOT_CERT_NAME, ca_folder, firmware_values, lab_ca
from harness.lab import DEVICE_ID_PATTERN, REGISTRATION_ID_PATTERN, load_lab

PARTS = ("pem", "c", "config")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lab", help="the lab's own services: its CA (`hil lab ca`)")
    what = p.add_subparsers(dest="lab_command", metavar="COMMAND", parser_class=type(p))
    ca = what.add_parser("ca", help="print the lab CA (PEM, C array) and the values a firmware build sets")
    ca.add_argument("--only", choices=PARTS, help="print only this part (pem, c or config)")
    ca.add_argument("--device", metavar="ID", action="append", default=[],
                    help="the values of this registry device only (repeatable; default: every device)")
    ca.add_argument("--c-name", metavar="NAME", default=ROOT_CERT_NAME,
                    help="the C array's name (default: %(default)s, NetX Duo's samples; the getting-started "
                         "repositories' is azure_iot_root_cert)")
    ca.add_argument("--json", action="store_true", help="everything as one JSON object")
    ca.set_defaults(func=run_ca)
    cert = what.add_parser("device-cert", help="make a self-signed X.509 certificate for a device; print the "
                                               "thumbprint to register")
    cert.add_argument("device", metavar="DEVICE", help="the IoT Hub device id")
    cert.add_argument("--registration-id", metavar="ID",
                      help="its DPS registration id, the certificate's common name (default: the device id)")
    cert.add_argument("--out", metavar="DIR", type=Path, default=Path("."),
                      help="folder for DEVICE.cert.pem and DEVICE.key.pem (default: the current folder)")
    cert.add_argument("--days", type=int, default=DEVICE_CERT_DAYS, help="validity in days (default: %(default)s)")
    cert.add_argument("--json", action="store_true", help="everything as one JSON object")
    cert.set_defaults(func=run_device_cert)
    p.set_defaults(func=_no_command)


def _no_command(args: argparse.Namespace) -> int:
    raise UsageError("hil lab needs a command", fix="use `hil lab ca` or `hil lab device-cert DEVICE`")


def run_ca(args: argparse.Namespace) -> int:
    lab = load_lab(args.lab)
    known = [d.id for d in lab.settings.devices]
    unknown = [d for d in args.device if d not in known]
    if unknown:
        raise UsageError(f"--device {unknown[0]}: not a device of the registry in {lab.root / 'lab.yaml'}",
                         fix=f"use one of: {', '.join(known)}" if known else "add it under 'devices:' in lab.yaml")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", args.c_name):
        raise UsageError(f"--c-name {args.c_name!r} is not a C identifier", fix="e.g. --c-name azure_iot_root_cert")
    pki = lab_ca(lab)
    fw = firmware_values(lab, pki)
    devices = {d: v for d, v in fw.devices.items() if not args.device or d in args.device}
    if args.json:
        certificates = {d: t for d, t in fw.certificates.items() if d in devices}
        print(json.dumps({"ca_folder": str(ca_folder(lab)), "ca_pem": fw.ca_pem, "c_source": fw.c_source(args.c_name),
                          "values": fw.values, "devices": devices, "x509_thumbprints": certificates}, indent=2))
        return 0
    parts = [args.only] if args.only else list(PARTS)
    out: list[str] = []
    if "pem" in parts:
        out += ([] if args.only else [f"# lab CA ({ca_folder(lab)}/ca.crt): the only root the image trusts"]) \
            + [fw.ca_pem.rstrip("\n")]
    if "c" in parts:
        out += ([] if args.only else [f"/* cert/nx_azure_iot_cert.c: {args.c_name} (DER), replacing the "
                                      "Azure roots */"]) + [fw.c_source(args.c_name).rstrip("\n")]
    if "config" in parts:
        if not args.only:
            out.append("# sample_config.h (NetX Duo Azure IoT samples): -D NAME=VALUE or #define NAME VALUE")
        out += [f'#define {k} "{v}"' for k, v in fw.values.items()]
        for device, values in devices.items():
            out.append(f"# device {device}" if not args.only else f"/* device {device} */")
            out += [f'#define {k} "{v}"' for k, v in values.items()]
            if device in fw.certificates:
                out.append(f"/* X.509 (thumbprint {fw.certificates[device]}): #define USE_DEVICE_CERTIFICATE 1 "
                           "and build in its certificate and private key (`hil lab device-cert DEVICE` makes a "
                           "pair) */")
    print("\n".join(out))
    return 0


def run_device_cert(args: argparse.Namespace) -> int:
    if not re.fullmatch(DEVICE_ID_PATTERN, args.device):
        raise UsageError(f"device id {args.device!r} is not an IoT Hub device id",
                         fix="use 1-128 ASCII letters, digits or - . % _ * ? ! ( ) , : = @ $ '")
    registration = args.registration_id or args.device
    if not re.fullmatch(REGISTRATION_ID_PATTERN, registration):
        raise UsageError(f"registration id {registration!r} is not a DPS registration id (the certificate's "
                         "common name)", fix="give --registration-id with 1-128 lower-case letters, digits or - . _ :")
    if not 1 <= args.days <= 20 * 365:
        raise UsageError(f"--days {args.days}: out of range", fix="give 1 to 7300 days")
    if not args.out.is_dir():
        raise UsageError(f"--out {args.out}: not a folder", fix="create it first, or name an existing folder")
    cert_path, key_path = args.out / f"{args.device}.cert.pem", args.out / f"{args.device}.key.pem"
    for path in (cert_path, key_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} exists: a device's certificate is not replaced silently (its thumbprint is "
                             "registered)", fix="remove it first, or give another --out folder")
    made = make_device_certificate(registration, days=args.days)
    _write_new(key_path, made.key_pem, 0o600)
    _write_new(cert_path, made.cert_pem, 0o644)
    entry = [f"  - id: {args.device}", f"    x509_thumbprint: {made.sha256}"]
    if registration != args.device:
        entry.append(f"    registration_id: {registration}")
    if args.json:
        print(json.dumps({"device": args.device, "registration_id": registration, "certificate": str(cert_path),
                          "private_key": str(key_path), "sha1": made.sha1, "sha256": made.sha256,
                          "device_cert_c": _initializer(made.cert_der),
                          "device_private_key_c": _initializer(made.key_der)}, indent=2))
        return 0
    print("\n".join([
        f"certificate:  {cert_path}  (common name {registration})",
        f"private key:  {key_path}  (keep it secret: it is the device's identity)",
        f"SHA-1 thumbprint:   {made.sha1}",
        f"SHA-256 thumbprint: {made.sha256}",
        "",
        "# lab.yaml, under devices: (either thumbprint is taken)",
        *entry,
        "",
        "/* sample_config.h: #define USE_DEVICE_CERTIFICATE 1 (key type NX_SECURE_X509_KEY_TYPE_RSA_PKCS1_DER, the",
        "   samples' default); sample_device_identity.c takes these two: */",
        f"#define DEVICE_CERT {_initializer(made.cert_der)}",
        f"#define DEVICE_PRIVATE_KEY {_initializer(made.key_der)}",
    ]))
    return 0


def _initializer(der: bytes) -> str:
    """DER bytes as a C brace initializer on one line (a #define's value)."""
    return "{" + ", ".join(f"0x{b:02x}" for b in der) + "}"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never replacing a file or following a link) with ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UsageError(f"{path} exists", fix="remove it first, or give another --out folder") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}", fix="give a folder you may write to") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
