"""`hil firmware`: firmware builds (verify an image against its manifest; build the reference)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli import each_input, output_folder
from harness.firmware import load_build
from harness.firmware_build import BOARDS, FLAVOURS, PRESETS, build_reference, parse_assignments


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("firmware", help="firmware builds and their manifests")
    fw = p.add_subparsers(dest="firmware_command", metavar="SUBCOMMAND", parser_class=type(p))
    v = fw.add_parser("verify", help="check a build's image against its manifest's sha256")
    v.add_argument("build", nargs="+", metavar="BUILD", help="folder under firmware-builds/ or its manifest.yaml")
    v.set_defaults(func=verify)
    b = fw.add_parser("build-reference", help="build the reference firmware (ELF, BIN, HEX) and its manifest")
    b.add_argument("--board", default=BOARDS[0], choices=BOARDS, help="emulated machine (default: %(default)s)")
    b.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a make knob; repeatable")
    b.add_argument("--flavour", default="lwip", choices=tuple(FLAVOURS),
                   help="lwip (our MQTT client) or azrtos (ThreadX, NetX Duo, Azure IoT middleware); "
                        "default: %(default)s")
    b.add_argument("--preset", choices=PRESETS, help="a knob preset (fast: short intervals for tests)")
    b.add_argument("--tls", action="store_true",
                   help="lwip: the TLS build (mbedTLS trusting the lab CA, hil lab ca; SAS tokens, DPS, twin); "
                        "azrtos always runs TLS")
    b.add_argument("--out", metavar="DIR", type=output_folder("build folder"),
                   help="build folder (default: firmware-builds/reference-<board>[-preset])")
    b.set_defaults(func=build)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def verify(args: argparse.Namespace) -> int:
    """Check every build given; each failure is reported, the exit code is the worst of them."""

    def one(path: str) -> None:
        build = load_build(path)
        digest = build.verify()
        m = build.manifest
        print(f"{build.image_path}: ok sha256 {digest} ({m.name} {m.version}, targets {', '.join(m.targets)})",
              flush=True)

    return each_input(args.build, one, what="build(s)", debug=args.debug)


def _lab_ca(args: argparse.Namespace) -> bytes | None:
    """The lab CA (DER) a TLS image trusts: the lab's (``--lab`` or HIL_LAB); for an azrtos image
    without --tls, none when no lab was named and the default folder is absent (a named lab that
    does not load is an error)."""

    from harness.hub.ca import lab_ca
    from harness.lab import load_lab
    from harness.state import lab_dir_source

    root, source = lab_dir_source(args.lab)
    if not args.tls and source.startswith(" (the default") and not root.exists():
        print(f"note: no lab folder{source}: the image trusts no CA and will not connect to a hub; "
              "give --lab DIR to compile in the lab's CA", file=sys.stderr)
        return None
    lab = load_lab(args.lab)
    return lab_ca(lab).ca_der()


def build(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(
        "firmware-builds", "-".join(filter(None, ("reference", None if args.flavour == "lwip" else args.flavour,
                                                  args.board, args.preset,
                                                  "tls" if args.tls and args.flavour == "lwip" else None)))
    )
    ca = _lab_ca(args) if args.tls or args.flavour == "azrtos" else None
    folder = build_reference(args.board, parse_assignments(args.set), args.preset, out, args.flavour, trusted_ca=ca)
    built = load_build(folder)
    m = built.manifest
    print(f"{folder}: {m.name} {m.version}, stack {m.build.stack}, module {m.security_module.version}, "
          f"image {m.image}")
    print(f"code {m.build.code_bytes} bytes, RAM {m.build.ram_bytes} bytes, sha256 {m.sha256}")
    if m.identity.trusted_ca_sha256:
        print(f"TLS: trusts only the lab CA sha256 {m.identity.trusted_ca_sha256} (DER); "
              f"provisioning block version 2 (tls, sas, dps)")
    return 0
