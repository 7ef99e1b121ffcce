"""Firmware images: the files a manifest names, checked by `hil firmware verify` and `hil watch`."""

from __future__ import annotations

from tests.badinput.case import build, build_with_image, error, fifo, good_lab, link, mode, refused, sparse, write

SURFACE = "image"
VERIFY = "firmware verify build"
WATCH = "--lab lab watch rt1060-a --firmware build --duration 1"

CASES = [
    error("sha256-mismatch", VERIFY, r"build/fw\.elf: sha256 does not match.*expected", build(image=b"other"), code=1),
    refused("elf-that-is-text", VERIFY, r"build/fw\.elf.*not an ELF file.*format", build_with_image(b"hello\n")),
    refused("elf-that-is-hex", VERIFY, r"not an ELF file.*Intel HEX", build_with_image(b":020000040800F2\n")),
    refused("hex-that-is-binary", VERIFY, r"build/fw\.hex.*not an Intel HEX file",
            build_with_image(b"\x7fELF" + bytes(60), fmt="hex", name="fw.hex")),
    refused("bin-empty", VERIFY, r"build/fw\.bin.*empty",
            build({"format": "bin", "base_address": 0, "image": "fw.bin",
                   "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
                  image=b"", name="fw.bin")),
    refused("elf-empty", VERIFY, r"build/fw\.elf.*empty", build_with_image(b"")),
    error("unreadable", VERIFY, r"build/fw\.elf.*permission denied", build(), mode("build/fw.elf", 0),
          unprivileged=True),
    error("fifo", VERIFY, r"build/fw\.elf.*FIFO", build(image=None), fifo("build/fw.elf")),
    error("link-to-dev-zero", VERIFY, r"build/fw\.elf.*character device", build(image=None),
          link("build/fw.elf", "/dev/zero")),
    error("dangling-link", VERIFY, r"build/fw\.elf.*link to.*gone\.elf.*does not exist", build(image=None),
          link("build/fw.elf", "gone.elf")),
    error("300MiB", VERIFY, r"build/fw\.elf.*314572800 bytes.*at most", build(image=None),
          sparse("build/fw.elf", 300 << 20)),
    refused("watch-elf-that-is-text", WATCH, r"build/fw\.elf.*not an ELF file", good_lab(),
            build_with_image(b"not an elf at all\n")),
    error("watch-sha256-mismatch", WATCH, r"sha256 does not match", good_lab(), build(image=b"other"), code=1),
    error("watch-image-unreadable", WATCH, r"build/fw\.elf.*permission denied", good_lab(), build(),
          mode("build/fw.elf", 0), unprivileged=True),
    refused("watch-other-target", WATCH, r"runs on stm32l475xg, not on rt1060-a", good_lab(),
            build({"targets": ["stm32l475xg"]})),
    error("manifest-and-image-in-other-folder", "firmware verify b2", r"b2/fw\.elf.*link to",
          build(folder="b2", image=None), write("elsewhere/x", "x"), link("b2/fw.elf", "../elsewhere/missing")),
]
