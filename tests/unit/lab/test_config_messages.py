"""Validation messages are in the user's words: whatever a file holds, validating it ends in a
model or one bounded ConfigError that names fields and never the validation library's jargon."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from harness.config import MAX_PROBLEM_CHARS, MAX_PROBLEMS, validate
from harness.errors import ConfigError
from harness.firmware import FirmwareManifest
from harness.lab import BoardConfig, LabSettings

JARGON = re.compile(r"Input should|Input is|lax-or-strict|function-(plain|after|before|wrap)|json-or-python|"
                    r"is-instance\[|\[type=|errors\.pydantic|constrained-|Value error,|union_tag", re.IGNORECASE)
MODELS: list[type[BaseModel]] = [LabSettings, BoardConfig, FirmwareManifest]


def _keys(model: Any, seen: set[str]) -> set[str]:
    """Every key the models know, so generated documents reach nested fields."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            if name not in seen:
                seen.add(name)
                _keys(info.annotation, seen)
    for arg in getattr(model, "__args__", ()) or ():
        _keys(arg, seen)
    return seen


KEYS = sorted(set().union(*(_keys(m, set()) for m in MODELS)) | {"qemu", "machine", "pyocd"})
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["pyocd", "qemu", "static", "console", "lease", "emulated", "elf", "bin",
                                           "192.168.50.0/24", "10.1.2.3/16", "cmsisdap:1", "mps2-an385", "external"]),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), data=st.dictionaries(st.sampled_from(KEYS), DOCUMENTS, max_size=8))
def test_any_document_ends_in_a_model_or_a_clear_error(model: type[BaseModel], data: dict[str, Any]) -> None:
    try:
        validate(model, data, "f.yaml")
    except ConfigError as exc:
        message = exc.message
        assert message.startswith("f.yaml: ")
        assert not JARGON.search(message), message
        problems = message.split("; ")
        assert len(problems) <= MAX_PROBLEMS + 1
        assert all(len(p) <= MAX_PROBLEM_CHARS + 20 for p in problems), message


@pytest.mark.parametrize(
    ("model", "data", "expected"),
    [
        (FirmwareManifest, {"behaviour": {"first_collection_delay_s": "soon"}},
         "field behaviour.first_collection_delay_s: expected a whole number or a list of two (a whole number each) "
         "(got 'soon')"),
        (FirmwareManifest, {"behaviour": {"first_collection_delay_s": [-1, 5]}},
         "field behaviour.first_collection_delay_s[0]: must be at least 0 (got -1)"),
        (FirmwareManifest, {"build": {"knobs": {"A": [1]}}},
         "field build.knobs.A: expected text, a whole number or true or false (got [1])"),
        (LabSettings, {"networks": [{"name": "n", "subnet": 42, "interface": "x"}]},
         "field networks[0].subnet: expected a network like 192.168.50.0/24 (got 42)"),
        (LabSettings, {"name": 1.5}, "field name: expected text (got 1.5): put it in quotes to make it text"),
        (BoardConfig, {"probe": {"keep_below": "0x0800C000"}},
         "field probe.keep_below: expected a whole number (got '0x0800C000'): write it without quotes"),
        (BoardConfig, {"kind": "qemu", "qemu": {"machine": "x"}},
         "field qemu.machine: expected one of 'mps2-an385' or 'mps2-an386' (got 'x')"),
    ],
)
def test_messages_read_as_written(model: type[BaseModel], data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(model, data, "f.yaml")
    assert expected in info.value.message


def test_a_huge_value_is_shown_short() -> None:
    with pytest.raises(ConfigError) as info:
        validate(LabSettings, {"name": ["x" * 100_000] * 1000}, "f.yaml")
    assert len(info.value.message) < 300


def test_many_problems_are_counted_not_listed() -> None:
    with pytest.raises(ConfigError) as info:
        validate(LabSettings, {f"key{i}": i for i in range(50)}, "f.yaml")
    assert info.value.message.endswith(f"and {50 - MAX_PROBLEMS} more problem(s)")
