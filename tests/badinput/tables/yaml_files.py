"""Attacks on YAML itself, in each kind of YAML file the CLI reads: lab.yaml, a board, a manifest.

Each attack puts its payload in one field of an otherwise good file (or replaces the file), so the
same row proves the shared loader's defence for every file that goes through it.
"""

from __future__ import annotations

from tests.badinput.case import (
    ELF_IMAGE,
    GOOD_BOARD,
    GOOD_LAB,
    GOOD_MANIFEST,
    Case,
    Step,
    error,
    fifo,
    folder,
    link,
    mode,
    refused,
    steps,
    write,
)
from tests.badinput.case import lab as lab_yaml

SURFACE = "yaml"

#: kind -> (file, field the payload goes in, good content, what else the folder needs, argv)
KINDS: dict[str, tuple[str, str, dict[str, object], Step, str]] = {
    "lab": ("lab/lab.yaml", "name", GOOD_LAB, steps(), "--lab lab boards --check"),
    "board": ("lab/rt1060-a.yaml", "description", GOOD_BOARD, lab_yaml(), "--lab lab boards --check"),
    "manifest": ("build/manifest.yaml", "name", GOOD_MANIFEST, write("build/fw.elf", ELF_IMAGE),
                 "firmware verify build"),
}


def _bomb(key: str) -> str:
    """Billion laughs: nine levels of ten aliases each (10^9 strings once expanded)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + f"\n{key}: *l8\n"


#: attack -> (payload for the field, or a whole-file writer), expected outcome, message pattern
PAYLOADS: dict[str, tuple[str, str]] = {
    "alias-bomb": ("", r"alias"),
    "alias-to-itself": ("&self [1, *self]", r"contains itself"),
    "3000-deep-lists": ("[" * 3000 + "]" * 3000, r"nest"),
    "3000-deep-mappings": ("{a: " * 3000 + "x" + "}" * 3000, r"nest"),
    "5000-digit-integer": ("9" * 5000, r"5000 digits"),
    "5000-digit-hex": ("0x" + "f" * 5000, r"digits"),
    "python-object-tag": ('!!python/object/apply:os.system ["true"]', r"tag.*python/object"),
    "unknown-tag": ("!secret x", r"tag.*!secret"),
    "unhashable-key": ("{[a, b]: 1}", r"a key cannot be a list or a mapping"),
    "int-tag-on-text": ("!!int abc", r"cannot read 'abc' as !!int"),
    "int-tag-on-nothing": ('!!int ""', r"cannot read '' as !!int"),
    "bool-tag-on-maybe": ("!!bool maybe", r"cannot read 'maybe' as !!bool"),
    "impossible-date-tag": ("!!timestamp 2026-13-45", r"cannot read '2026-13-45' as !!timestamp.*month"),
    "tab-indentation": ("\n\tx: 1", r"not valid YAML.*line"),
    "unclosed-quote": ('"never closed', r"not valid YAML.*line"),
}


def _text(kind: str, payload: str, attack: str) -> str:
    import yaml

    _, key, good, _, _ = KINDS[kind]
    body = yaml.safe_dump({k: v for k, v in good.items() if k != key}, sort_keys=False)
    if attack == "alias-bomb":
        return body + _bomb(key)
    return body + f"{key}: {payload}\n"


def _file_attacks(kind: str) -> list[Case]:
    file, key, good, rest, argv = KINDS[kind]
    named = file.replace(".", r"\.")
    rows = [
        refused(f"{kind}-{attack}", argv, rf"{named}.*{pattern}", rest, write(file, _text(kind, payload, attack)))
        for attack, (payload, pattern) in PAYLOADS.items()
    ]
    rows += [
        refused(f"{kind}-duplicate-key", argv, rf"{named}.*duplicate key '{key}'", rest,
                write(file, _text(kind, "first", "") + f"{key}: second\n")),
        error(f"{kind}-not-utf8", argv, rf"{named}.*not UTF-8.*line 1", rest,
              write(file, f"{key}: caf".encode() + b"\xe9\n")),
        error(f"{kind}-utf16", argv, rf"{named}.*not UTF-8", rest,
              write(file, "\ufeffname: x\n".encode("utf-16-le"))),
        error(f"{kind}-nul-bytes", argv, rf"{named}.*(NUL|control|special) character", rest,
              write(file, b"name: a\x00b\n")),
        error(f"{kind}-2MiB", argv, rf"{named}.*bytes.*at most", rest, write(file, "# padding\n" * 210_000)),
        error(f"{kind}-fifo", argv, rf"{named}.*FIFO", rest, fifo(file)),
        error(f"{kind}-folder", argv, rf"{named}.*is a folder", rest, folder(file)),
        error(f"{kind}-dangling-link", argv, rf"{named}.*link to .*nowhere\.yaml.*does not exist", rest,
              link(file, "nowhere.yaml")),
        error(f"{kind}-link-loop", argv, rf"{named}.*loop", rest, link(file, file.rsplit("/", 1)[1])),
        error(f"{kind}-unreadable", argv, rf"{named}.*permission denied", rest, write(file, good),
              mode(file, 0), unprivileged=True),
        refused(f"{kind}-top-level-list", argv, rf"{named}.*mapping", rest, write(file, "- a\n- b\n")),
        refused(f"{kind}-top-level-number", argv, rf"{named}.*mapping", rest, write(file, "42\n")),
        error(f"{kind}-empty", argv, rf"{named}.*empty", rest, write(file, "")),
    ]
    return rows


CASES = [row for kind in KINDS for row in _file_attacks(kind)]
