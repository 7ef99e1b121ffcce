"""`hil firmware verify BUILD...` and `hil firmware build-reference` (arguments refused before any build)."""

from __future__ import annotations

from tests.badinput.case import build, error, folder, refused, write

QUIET = r"\A\Z"  # a reader that went away is told nothing

SURFACE = "cli-firmware"

CASES = [
    error("verify-two-missing", "firmware verify nope1 nope2",
          r"nope1.*no firmware manifest.*nope2.*no firmware manifest.*2 of 2"),
    error("verify-missing-then-good", "firmware verify nope build", r"nope.*no firmware manifest.*1 of 2", build()),
    error("verify-good-then-mismatch", "firmware verify build b2", r"b2/fw\.elf: sha256 does not match.*1 of 2",
          build(), build(folder="b2", image=b"other"), code=1),
    error("verify-mismatch-then-missing", "firmware verify b2 nope", r"b2/fw\.elf: sha256.*nope.*no firmware manifest",
          build(folder="b2", image=b"other")),
    error("verify-into-closed-pipe", "firmware verify build build", QUIET, build(), code=141, closed_stdout=True),
    refused("verify-nothing", "firmware verify", r"the following arguments are required: BUILD"),
    refused("verify-empty-name", ("firmware", "verify", ""), r"empty"),
    refused("build-out-a-file", "firmware build-reference --out f", r"--out.*f is a file, not a folder",
            write("f", "x")),
    refused("build-out-under-a-file", "firmware build-reference --out f/x", r"--out.*f is a file", write("f", "x")),
    refused("build-set-without-value", "firmware build-reference --set FOO", r"--set 'FOO' is not NAME=VALUE"),
    refused("build-set-lower-case", "firmware build-reference --set foo=1", r"bad knob name 'foo'"),
    refused("build-set-shell", ("firmware", "build-reference", "--set", "VERSION=$(reboot)"), r"characters"),
    refused("build-board-unknown", "firmware build-reference --board stm32", r"invalid choice: 'stm32'"),
    refused("build-preset-unknown", "firmware build-reference --preset slow", r"invalid choice: 'slow'"),
    refused("build-out-empty", ("firmware", "build-reference", "--out", ""), r"--out.*empty", folder("x")),
]
