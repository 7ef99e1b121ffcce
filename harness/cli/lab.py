"""`hil lab ca`: the lab CA and what a firmware build for the lab sets.

The CA lives in the lab's state folder (made on first use, kept across runs: the images built for
the lab trust it); its server certificate names the hub and DPS host names of ``lab.yaml`` and is
issued again when they change. The command prints the CA in PEM, as the C array NetX Duo's Azure
IoT samples keep their trusted root in (``cert/nx_azure_iot_cert.c``), and the values to set in
their ``sample_config.h`` (per device of the registry).
"""

from __future__ import annotations

import argparse
import json

from harness.errors import UsageError
from harness.hub.ca import ROOT_CERT_NAME, ca_folder, firmware_values, lab_ca
from harness.lab import load_lab

PARTS = ("pem", "c", "config")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lab", help="the lab's own services: its CA (`hil lab ca`)")
    what = p.add_subparsers(dest="lab_command", metavar="COMMAND", parser_class=type(p))
    ca = what.add_parser("ca", help="print the lab CA (PEM, C array) and the values a firmware build sets")
    ca.add_argument("--only", choices=PARTS, help="print only this part (pem, c or config)")
    ca.add_argument("--device", metavar="ID", action="append", default=[],
                    help="the values of this registry device only (repeatable; default: every device)")
    ca.add_argument("--json", action="store_true", help="everything as one JSON object")
    ca.set_defaults(func=run_ca)
    p.set_defaults(func=_no_command)


def _no_command(args: argparse.Namespace) -> int:
    raise UsageError("hil lab needs a command", fix="use `hil lab ca`")


def run_ca(args: argparse.Namespace) -> int:
    lab = load_lab(args.lab)
    known = [d.id for d in lab.settings.devices]
    unknown = [d for d in args.device if d not in known]
    if unknown:
        raise UsageError(f"--device {unknown[0]}: not a device of the registry in {lab.root / 'lab.yaml'}",
                         fix=f"use one of: {', '.join(known)}" if known else "add it under 'devices:' in lab.yaml")
    pki = lab_ca(lab)
    fw = firmware_values(lab, pki)
    devices = {d: v for d, v in fw.devices.items() if not args.device or d in args.device}
    if args.json:
        print(json.dumps({"ca_folder": str(ca_folder(lab)), "ca_pem": fw.ca_pem, "c_source": fw.c_source(),
                          "values": fw.values, "devices": devices}, indent=2))
        return 0
    parts = [args.only] if args.only else list(PARTS)
    out: list[str] = []
    if "pem" in parts:
        out += ([] if args.only else [f"# lab CA ({ca_folder(lab)}/ca.crt): the only root the image trusts"]) \
            + [fw.ca_pem.rstrip("\n")]
    if "c" in parts:
        out += ([] if args.only else [f"/* cert/nx_azure_iot_cert.c: {ROOT_CERT_NAME} (DER), replacing the "
                                      "Azure roots */"]) + [fw.c_source().rstrip("\n")]
    if "config" in parts:
        if not args.only:
            out.append("# sample_config.h (NetX Duo Azure IoT samples): -D NAME=VALUE or #define NAME VALUE")
        out += [f'#define {k} "{v}"' for k, v in fw.values.items()]
        for device, values in devices.items():
            out.append(f"# device {device}" if not args.only else f"/* device {device} */")
            out += [f'#define {k} "{v}"' for k, v in values.items()]
    print("\n".join(out))
    return 0
