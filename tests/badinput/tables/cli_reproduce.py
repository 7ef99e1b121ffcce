"""`hil reproduce BUNDLE` and `hil capture BOARD --out BUNDLE`: malformed bundles, builds that are not
there and wrong arguments, refused before any board is brought up."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.badinput.case import Step, build, error, folder, good_lab, refused, steps, write
from tests.unit.bundle.fake import changed_yaml, make_bundle, tar_with

SURFACE = "cli-reproduce"
R = "--lab lab reproduce b"


def bundle(**changes: object) -> Step:
    """A good bundle in ``b/`` (its bundle.yaml changed: ``section__key=value``, None removes)."""
    return lambda root: make_bundle(root / "b", changed_yaml(**changes)) and None


def damage(relpath: str, how: str) -> Step:
    def step(root: Path) -> None:
        path = root / relpath
        if how == "remove":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:-25])
        elif how == "text":
            path.write_text("not a capture, a note someone saved under the pcap's name\n")

    return step


def tar(name: str, member: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Step:
    def step(root: Path) -> None:
        info = tarfile.TarInfo(member)
        info.type, info.linkname = kind, link
        data = b"x" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tar_with(root / name, [(info, data)])

    return step


BUILDS = build({"version": "1.0.0"}, folder="firmware-builds/fw-1.0.0")
OK = (good_lab(), bundle(), BUILDS)

CASES = [
    error("missing-pcap", R, r"b/bundle\.yaml: field capture: traffic\.pcap is not in the bundle", *OK,
          damage("b/traffic.pcap", "remove")),
    error("pcap-that-is-not-one", R, r"b/bundle\.yaml: field capture: .*traffic\.pcap is not a pcap capture", *OK,
          damage("b/traffic.pcap", "text")),
    error("pcap-empty", R, r"field capture: .*(holds no frame|not a pcap)", *OK, write("b/traffic.pcap", b"")),
    error("truncated-archive", R, r"field telemetry\.path: telemetry\.bin: the archive is damaged or truncated",
          *OK, damage("b/telemetry.bin", "truncate")),
    error("archive-not-one", R, r"telemetry\.bin.*not a telemetry archive", *OK,
          write("b/telemetry.bin", b"\x7fELF" + bytes(60))),
    error("version-with-no-lab-build", R, r"b/bundle\.yaml: fields firmware\.version '2\.1\.0' and firmware\.build_id "
          r"'field-7': no lab build of them for mimxrt1060 in firmware-builds: the builds there are fw-1\.0\.0 "
          r"\(version 1\.0\.0", *OK),
    error("no-builds-folder", R, r"firmware\.version '2\.1\.0'.*no lab build.*the builds there are none",
          good_lab(), bundle()),
    error("firmware-given-is-missing", f"{R} --firmware nowhere", r"nowhere.*no firmware manifest", *OK),
    error("bundle-missing", "--lab lab reproduce nowhere", r"bundle nowhere: no such file or folder", good_lab()),
    error("bundle-without-yaml", R, r"b: no bundle\.yaml in it", good_lab(), folder("b")),
    error("bundle-a-fifo-like-thing", "--lab lab reproduce /dev/null", r"neither a folder nor a file", good_lab()),
    error("unknown-key", R, r"bundle\.yaml.*colour", good_lab(), bundle(colour="red"), BUILDS),
    error("path-leaving-the-bundle", R, r"bundle\.yaml.*capture.*leaves the bundle", good_lab(),
          bundle(capture="../../etc/passwd"), BUILDS),
    error("format-unknown", R, r"bundle\.yaml.*telemetry\.format.*pcapng", good_lab(),
          bundle(telemetry__format="pcapng"), BUILDS),
    error("build-id-missing", R, r"bundle\.yaml.*firmware\.build_id", good_lab(), bundle(firmware__build_id=None),
          BUILDS),
    error("board-type-not-in-lab", R, r"no board of the bundle's type stm32l475xg: its boards are rt1060-a "
          r"\(mimxrt1060\)", good_lab(), bundle(board__type="stm32l475xg"), BUILDS),
    error("board-of-another-type", f"{R} --board rt1060-a", r"--board rt1060-a is a mimxrt1060, the bundle's device "
          r"a stm32l475xg", good_lab(), bundle(board__type="stm32l475xg"), BUILDS),
    error("tar-traversal", "--lab lab reproduce t.tar.gz", r"t\.tar\.gz: member '\.\./\.\./evil' would be written "
          r"outside", good_lab(), tar("t.tar.gz", "../../evil")),
    error("tar-symlink", "--lab lab reproduce t.tar.gz", r"member 'b/bundle\.yaml' is a symbolic link", good_lab(),
          tar("t.tar.gz", "b/bundle.yaml", tarfile.SYMTYPE, "/etc/passwd")),
    error("tar-not-one", "--lab lab reproduce t.tar.gz", r"t\.tar\.gz: not a readable \.tar\.gz bundle", good_lab(),
          write("t.tar.gz", b"\x1f\x8b\x08" + bytes(40))),
    refused("speed-negative", f"{R} --speed -1", r"--speed.*'-1' is not a time scale", *OK),
    refused("speed-nan", f"{R} --speed nan", r"--speed.*'nan'", *OK),
    refused("report-dir-a-file", f"{R} --report-dir f", r"--report-dir.*f is a file, not a folder", *OK,
            write("f", "x")),
    refused("no-bundle", "--lab lab reproduce", r"the following arguments are required: BUNDLE", good_lab()),
    error("capture-out-exists", "--lab lab capture rt1060-a --out taken --firmware build",
          r"--out taken: exists already", good_lab(), build(), steps(folder("taken"), write("taken/x", "mine"))),
    refused("capture-without-out", "--lab lab capture rt1060-a", r"the following arguments are required: --out",
            good_lab()),
    refused("capture-duration-zero", "--lab lab capture rt1060-a --out o --duration 0", r"--duration.*more than 0",
            good_lab()),
]
