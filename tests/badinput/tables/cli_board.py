"""`hil flash|console|reset|power BOARD ...`: refused or a clear error before any board is touched."""

from __future__ import annotations

from tests.badinput.case import build, build_with_image, error, folder, good_lab, refused, write

SURFACE = "cli-board"
L = "--lab lab"

CASES = [
    refused("flash-no-board", f"{L} flash", r"the following arguments are required: BOARD", good_lab()),
    error("flash-unknown-board", f"{L} flash nope build", r"no board named 'nope'", good_lab(), build()),
    error("flash-real-board-without-build", f"{L} flash rt1060-a", r"real board.*name the build", good_lab()),
    error("flash-build-missing", f"{L} flash rt1060-a nowhere", r"nowhere.*no firmware manifest", good_lab()),
    error("flash-build-a-folder-without-manifest", f"{L} flash rt1060-a d", r"d.*no firmware manifest",
          good_lab(), folder("d")),
    error("flash-build-for-another-target", f"{L} flash rt1060-a build", r"runs on stm32l475xg, not on rt1060-a",
          good_lab(), build({"targets": ["stm32l475xg"]})),
    error("flash-image-not-elf", f"{L} flash rt1060-a build", r"build/fw\.elf.*not an ELF file", good_lab(),
          build_with_image(b"this is text, not a firmware image\n")),
    error("flash-sha256-mismatch", f"{L} flash rt1060-a build", r"sha256 does not match", good_lab(),
          build({"sha256": "0" * 64}), code=1),
    refused("flash-report-dir-a-file", f"{L} flash rt1060-a build --report-dir f", r"--report-dir.*f is a file",
            good_lab(), build(), write("f", "x")),
    refused("flash-two-builds", f"{L} flash rt1060-a build other", r"unrecognized arguments: other", good_lab()),
    refused("power-no-action", f"{L} power rt1060-a", r"the following arguments are required: action",
            good_lab()),
    refused("power-bad-action", f"{L} power rt1060-a sideways", r"invalid choice: 'sideways'", good_lab()),
    error("power-unknown-board", f"{L} power nope on", r"no board named 'nope'", good_lab()),
    refused("reset-no-board", f"{L} reset", r"the following arguments are required: BOARD", good_lab()),
    error("reset-unknown-board", f"{L} reset nope", r"no board named 'nope'", good_lab()),
    refused("reset-extra-argument", f"{L} reset rt1060-a now", r"unrecognized arguments: now", good_lab()),
    refused("console-no-board", f"{L} console", r"the following arguments are required: BOARD", good_lab()),
    error("console-unknown-board", f"{L} console nope", r"no board named 'nope'", good_lab()),
]
