"""The YAML loader for files people write: plain YAML still loads; what would be ambiguous or
unbounded is refused with the line it is on."""

from __future__ import annotations

import pytest

from harness.config import parse_yaml
from harness.errors import ConfigError
from harness.safeyaml import MAX_DEPTH, MAX_DIGITS, MAX_VALUES


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_yaml("f.yaml", text)
    return info.value.message


def test_plain_yaml_loads() -> None:
    text = ("\ufeff# a lab\r\nname: bench\r\nkeep_below: 0x0800C000\r\nsize: 1_000\r\nversion: 2026-01-01\r\n"
            "ratio: 2.5\r\nflag: true\r\nnothing: null\r\nitems: [a, 'b c', \"d\\te\"]\r\n")
    assert parse_yaml("f.yaml", text) == {
        "name": "bench", "keep_below": 0x0800C000, "size": 1000, "version": "2026-01-01", "ratio": 2.5,
        "flag": True, "nothing": None, "items": ["a", "b c", "d\te"],
    }


def test_anchors_aliases_and_merge_keys_still_work() -> None:
    text = ("base: &base {kind: pyocd, erase: sector}\n"
            "cmd: &on [uhubctl, -a, 'on']\n"
            "a: {<<: *base, erase: chip, power: *on}\n"
            "b: {<<: *base}\n")
    data = parse_yaml("f.yaml", text)
    assert data["a"] == {"kind": "pyocd", "erase": "chip", "power": ["uhubctl", "-a", "on"]}
    assert data["b"] == {"kind": "pyocd", "erase": "sector"}


def test_duplicate_keys_are_refused_at_any_depth_and_by_value() -> None:
    assert "duplicate key 'erase' (first at line 2)" in refusal("probe:\n  erase: sector\n  erase: chip\n")
    assert "line 3" in refusal("probe:\n  erase: sector\n  erase: chip\n")
    assert "duplicate key 1" in refusal("1: a\n0x1: b\n")  # the same key once read as a number


def test_nesting_up_to_the_limit_loads() -> None:
    assert parse_yaml("f.yaml", "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert f"more than {MAX_DEPTH} levels" in refusal("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)


def test_numbers_up_to_the_limit_load() -> None:
    assert parse_yaml("f.yaml", "a: " + "9" * MAX_DIGITS) == {"a": int("9" * MAX_DIGITS)}
    assert f"{MAX_DIGITS + 1} digits" in refusal("a: " + "9" * (MAX_DIGITS + 1))
    assert f"{MAX_DIGITS + 1} digits" in refusal("a: -0x" + "f" * (MAX_DIGITS + 1))


def test_aliases_are_counted_as_expanded() -> None:
    three = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\nl1: &l1 [" + ", ".join(["*l0"] * 10) + "]\n"
    assert len(parse_yaml("f.yaml", three + "l2: [" + ", ".join(["*l1"] * 10) + "]\n")["l2"]) == 10  # ~1,100
    bomb = three + "l2: &l2 [" + ", ".join(["*l1"] * 10) + "]\n" + "l3: &l3 [" + ", ".join(["*l2"] * 10) + "]\n"
    bomb += "l4: [" + ", ".join(["*l3"] * 10) + "]\n"  # ~111,000 values once expanded
    assert f"more than {MAX_VALUES} values" in refusal(bomb)
    assert "contains itself" in refusal("a: &a [1, [2, *a]]\n")
    assert "contains itself" in refusal("a: &a {k: *a}\n")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: !!python/object/apply:os.system [true]", "tag !!python/object/apply:os.system is not allowed"),
        ("a: !!python/name:os.system ''", "tag !!python/name:os.system is not allowed"),
        ("a: !vault xyz", "tag !vault is not allowed"),
        ("a: !!bool maybe", "cannot read 'maybe' as !!bool"),
        ("a: !!int ''", "cannot read '' as !!int"),
        ("? [a]\n: 1\n", "a key cannot be a list or a mapping"),
        ("a: 'open", "while scanning a quoted scalar: found unexpected end of stream"),
        ("a: b\x07c", "control character (U+0007)"),
    ],
)
def test_refusals_name_the_line_and_the_problem(text: str, needle: str) -> None:
    message = refusal(text)
    assert needle in message and message.startswith("f.yaml: ") and "line 1" in message
