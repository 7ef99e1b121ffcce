"""A device twin as IoT Hub keeps it: desired and reported properties, each with its own version,
changed by JSON merge patches (RFC 7386: ``null`` removes a property). Keys that start with ``$``
are IoT Hub's own (``$version``, ``$metadata``) and cannot be patched."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


class PatchRefused(ValueError):
    """A patch IoT Hub would answer with 400: not a JSON object, or touching a ``$`` key."""


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``target`` changed by ``patch`` (a new dict; neither argument is changed)."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            base = out.get(key)
            out[key] = merge_patch(base if isinstance(base, dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: IoT Hub keeps at most this many levels of objects in a twin's properties.
MAX_DEPTH = 10


def _check(patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise PatchRefused(f"a twin patch is a JSON object, not {type(patch).__name__}")
    stack = [(patch, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PatchRefused(f"objects nested deeper than {MAX_DEPTH} levels (IoT Hub's limit)")
        for key, value in node.items():
            if key.startswith("$"):
                raise PatchRefused(f"property {key!r}: names starting with '$' are IoT Hub's own")
            if isinstance(value, dict):
                stack.append((value, depth + 1))
    return patch


@dataclass
class Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1

    def document(self) -> dict[str, Any]:
        """What a twin GET returns."""
        return {"desired": {**copy.deepcopy(self.desired), "$version": self.desired_version},
                "reported": {**copy.deepcopy(self.reported), "$version": self.reported_version}}

    def patch_reported(self, patch: Any) -> int:
        """Apply a device's reported-properties patch; the new reported version."""
        self.reported = merge_patch(self.reported, _check(patch))
        self.reported_version += 1
        return self.reported_version

    def patch_desired(self, patch: Any) -> int:
        """Apply a desired-properties patch (a test's, as a back end's); the new desired version."""
        self.desired = merge_patch(self.desired, _check(patch))
        self.desired_version += 1
        return self.desired_version
