"""The YAML loader for files people write (lab, boards, manifests): plain values only, bounded.

On top of PyYAML's safe loader it refuses what would make a configuration ambiguous or a reader
hang: a key written twice (the last would silently win), values nested deeper than
``MAX_DEPTH``, anchors and aliases that expand to more than ``MAX_VALUES`` values (the "billion
laughs" bomb) or into a value that contains itself, integers longer than ``MAX_DIGITS`` digits,
and any tag that is not a plain value. Dates stay text (``version: 2026-01-01`` is a string).
Every refusal is a ``Refusal`` carrying the line it is about and the fix.
"""

from __future__ import annotations

from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 64
MAX_VALUES = 100_000
MAX_DIGITS = 64

_STD_PREFIX = "tag:yaml.org,2002:"


class Refusal(yaml.MarkedYAMLError):
    """Well-formed YAML that a configuration file may not hold."""

    def __init__(self, problem: str, mark: Any, fix: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_STD_PREFIX) if tag.startswith(_STD_PREFIX) else tag


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expansion(root: Node) -> None:
    """Refuse a node graph that contains itself or expands (aliases followed) past MAX_VALUES."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_VALUES:
                raise Refusal(f"anchors and aliases here expand to more than {MAX_VALUES} values "
                              "(an alias bomb?)", node.start_mark,
                              "write the values out, or use fewer aliases")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise Refusal("a value contains itself through an alias", child.start_mark,
                              "an alias may only name a value defined before it, outside it")
            if id(child) not in sizes:
                stack.append((child, False))


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the refusals of this module."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _STD_PREFIX + "timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refusal(f"values nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark,
                              "flatten the structure")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def compose_document(self) -> Node:  # type: ignore[override]
        node: Node = super().compose_document()
        check_expansion(node)
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, LookupError, TypeError, ArithmeticError) as exc:  # explicit tags on odd text
            shown = repr(node.value)[:60] if isinstance(node, ScalarNode) else f"a {node.id}"
            raise Refusal(f"cannot read {shown} as {_tag(node.tag)} ({exc})", node.start_mark,
                          "write a plain value without the tag") from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        if isinstance(node, MappingNode):
            first: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _STD_PREFIX + "merge":
                    continue
                if not isinstance(key_node, ScalarNode):
                    raise Refusal("a key cannot be a list or a mapping", key_node.start_mark,
                                  "write keys as plain words")
                key = self.construct_object(key_node)
                if key in first:
                    line = first[key].start_mark.line + 1
                    raise Refusal(f"duplicate key {key!r} (first at line {line})", key_node.start_mark,
                                  "keep one of them: the last would silently win")
                first[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def construct_yaml_int(self, node: ScalarNode) -> int:  # type: ignore[override]
        text = str(node.value).replace("_", "").lstrip("+-")
        digits = len(text[2:] if text[:2].lower() in ("0x", "0o", "0b") else text)
        if digits > MAX_DIGITS:
            raise Refusal(f"a number of {digits} digits (at most {MAX_DIGITS} here)", node.start_mark,
                          "write the intended number")
        return super().construct_yaml_int(node)  # type: ignore[no-any-return]

    def construct_undefined(self, node: Node) -> Any:
        raise Refusal(f"the tag {_tag(node.tag)} is not allowed: configuration files hold plain values",
                      node.start_mark, "remove the tag and write text, a number, true/false, a list or a mapping")


Loader.add_constructor(_STD_PREFIX + "int", Loader.construct_yaml_int)
Loader.add_constructor(None, Loader.construct_undefined)


def parse(text: str) -> Any:
    """One YAML document of plain values; raises ``Refusal`` or another ``yaml.YAMLError``."""
    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


__all__ = ["MAX_DEPTH", "MAX_DIGITS", "MAX_VALUES", "Loader", "Refusal", "parse"]
