"""Firmware manifests (``<build>/manifest.yaml``): what the image is and what the build promises."""

from __future__ import annotations

from tests.badinput.case import DELETE, build, error, folder, refused, write

SURFACE = "manifest"
VERIFY = "firmware verify build"
FILE = r"build/manifest\.yaml.*"


def row(name: str, changes: dict[str, object], message: str) -> object:
    return refused(name, VERIFY, FILE + message, build(changes))


CASES = [
    row("sha256-not-hex", {"sha256": "z" * 64}, r"field sha256"),
    row("sha256-short", {"sha256": "abc"}, r"field sha256"),
    row("format-unknown", {"format": "uf2"}, r"field format.*'elf', 'hex' or 'bin'"),
    row("bin-without-base", {"format": "bin"}, r"base_address"),
    row("base-negative", {"format": "bin", "base_address": -1}, r"base_address.*at least 0"),
    row("image-a-path", {"image": "../fw.elf"}, r"field image.*file name beside the manifest"),
    row("image-absolute", {"image": "/etc/passwd"}, r"field image.*file name beside the manifest"),
    row("image-control-character", {"image": "fw\n.elf"}, r"field image"),
    row("targets-empty", {"targets": []}, r"field targets.*at least 1"),
    row("targets-a-string", {"targets": "mimxrt1060"}, r"field targets: expected a list"),
    row("first-collection-reversed", {"behaviour.first_collection_delay_s": [89, 30]},
        r"first_collection_delay_s.*89.*30"),
    row("first-collection-text", {"behaviour.first_collection_delay_s": "soon"},
        r"first_collection_delay_s: expected a whole number.*or a list of two"),
    row("first-collection-three", {"behaviour.first_collection_delay_s": [1, 2, 3]},
        r"first_collection_delay_s"),
    row("module-version-short", {"security_module.version": "3.5"}, r"security_module\.version.*MAJOR\.MINOR\.PATCH"),
    row("mti-malformed", {"security_module.mti": "2.3"}, r"security_module\.mti"),
    row("known-defect-unknown", {"behaviour.known_defects": ["nope"]}, r"known_defects.*nope"),
    row("boot-marker-bad-regex", {"behaviour.boot_marker": "("}, r"boot_marker.*regular expression"),
    row("interval-zero", {"behaviour.intervals_s.high": 0}, r"intervals_s\.high.*greater than 0"),
    row("flow-cap-text", {"behaviour.flow_cap": "many"}, r"flow_cap.*whole number"),
    row("knob-a-list", {"build.knobs": {"A": [1]}}, r"build\.knobs\.A: expected text, a whole number or true"),
    row("name-missing", {"name": DELETE}, r"field name: required"),
    row("identity-missing", {"identity": DELETE}, r"field identity: required"),
    row("unknown-key", {"signature": "x"}, r"field signature: unknown key"),
    row("version-a-number", {"version": 1.0}, r"field version: expected text.*quotes"),
    error("no-manifest-in-folder", VERIFY, r"build.*no firmware manifest", folder("build")),
    error("manifest-path-missing", "firmware verify nowhere/manifest.yaml", r"nowhere/manifest\.yaml.*no such"),
    refused("manifest-is-the-image", "firmware verify build/fw.elf", r"build/fw\.elf.*(UTF-8|not valid YAML|mapping)",
            build()),
    error("image-missing", VERIFY, r"field image.*fw\.elf.*not found beside", build(image=None)),
    error("image-a-folder", VERIFY, r"build/fw\.elf.*is a folder", build(image=None), folder("build/fw.elf")),
    error("manifest-yml-only", VERIFY, r"build.*no firmware manifest.*manifest\.yml", folder("build"),
          write("build/manifest.yml", "name: x\n")),
]
