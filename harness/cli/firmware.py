"""`hil firmware`: firmware builds (verify an image against its manifest; build the reference)."""

from __future__ import annotations

import argparse

from harness.firmware import load_build


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("firmware", help="firmware builds and their manifests")
    fw = p.add_subparsers(dest="firmware_command", metavar="SUBCOMMAND", parser_class=type(p))
    v = fw.add_parser("verify", help="check a build's image against its manifest's sha256")
    v.add_argument("build", nargs="+", metavar="BUILD", help="folder under firmware-builds/ or its manifest.yaml")
    v.set_defaults(func=verify)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def verify(args: argparse.Namespace) -> int:
    for path in args.build:
        build = load_build(path)
        digest = build.verify()
        m = build.manifest
        print(f"{build.image_path}: ok sha256 {digest} ({m.name} {m.version}, targets {', '.join(m.targets)})")
    return 0
