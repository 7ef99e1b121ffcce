"""Typed configuration at the edge: YAML files become validated pydantic objects.

Every error names the file, the field (as a dotted path), the bad value and the fix, in the user's
words rather than the validation library's. Unknown keys are errors (``extra="forbid"``), so a
misspelt key never silently falls back to a default. Files are read through
``harness.userfiles`` (bounded, no FIFO can block) and parsed by ``harness.safeyaml`` (no
duplicate keys, no alias bombs, bounded nesting and numbers); messages are bounded too.
"""

from __future__ import annotations

import difflib
import reprlib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from harness import safeyaml
from harness.errors import ConfigError
from harness.userfiles import read_user_file

M = TypeVar("M", bound=BaseModel)

#: A configuration file is small; anything bigger is not one.
MAX_YAML_BYTES = 1 << 20
#: At most this many problems are listed in one message, each at most this long.
MAX_PROBLEMS = 10
MAX_PROBLEM_CHARS = 400


class StrictModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------------------------------- reading


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        utf16 = " (it starts like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{path}: not UTF-8 text{utf16}: byte 0x{data[exc.start]:02x} at line {line}, column {col}",
            fix="save the file as UTF-8",
        ) from None


def parse_yaml(path: Path | str, text: str) -> Any:
    """Parse YAML text read from ``path``; every problem is a ConfigError naming file and line."""
    try:
        return safeyaml.parse(text)
    except safeyaml.Refusal as exc:
        mark = exc.problem_mark
        raise ConfigError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}",
                          fix=exc.fix) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        name = "NUL" if exc.character == 0 else f"U+{exc.character:04X}"
        raise ConfigError(
            f"{path}: not valid YAML at line {line}, column {col}: a control character ({name}) YAML does not allow",
            fix="remove it (is this a binary file?)",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        if context:
            problem = f"{context}: {problem}"
        raise ConfigError(
            f"{path}: not valid YAML{where}: {problem}",
            fix="fix the YAML syntax (indentation, a missing ':' or an unclosed quote)",
        ) from None


def read_yaml(path: Path) -> Any:
    """Read and parse a YAML file the user wrote; any problem is a ConfigError naming it."""
    data = read_user_file(path, what="YAML file", limit=MAX_YAML_BYTES, error=ConfigError)
    return parse_yaml(path, _decode(path, data))


# ------------------------------------------------------------------------- messages in the user's words

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxtuple, _SHOW.maxdict = 2, 4, 4, 4
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 60, 60, 30


def shown(value: Any) -> str:
    """A short, bounded rendering of a value from a file (never the whole of a big one)."""
    return _SHOW.repr(value)


def _unwrap(annotation: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _members(annotation: Any) -> list[Any]:
    return [a for a in get_args(annotation) if a is not type(None)]


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


_PLAIN = {int: "a whole number", str: "text", bool: "true or false", float: "a number", Path: "a path"}
_COUNTS = {2: "two", 3: "three", 4: "four"}
_BY_NAME = {"IPv4Network": "an IPv4 network like 192.168.50.0/24", "IPv6Network": "an IPv6 network like fd00:1::/64",
            "IPv4Address": "an IPv4 address like 192.168.50.20", "IPv6Address": "an IPv6 address like fd00::20"}


def describe_type(annotation: Any) -> str:
    """What a value of this type looks like, as the user writes it in YAML."""
    annotation = _unwrap(annotation)
    if annotation in _PLAIN:
        return _PLAIN[annotation]
    if getattr(annotation, "__name__", "") in _BY_NAME:
        return _BY_NAME[annotation.__name__]
    if _is_model(annotation):
        return "a mapping of keys (key: value lines)"
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + _alternatives([repr(a) for a in get_args(annotation)])
    if _is_union(annotation):
        return _alternatives([describe_type(m) for m in _members(annotation)])
    if origin is tuple:
        args = get_args(annotation)
        if args and args[-1] is not Ellipsis:
            each = [describe_type(a) for a in args]
            count = _COUNTS.get(len(args), str(len(args)))
            return f"a list of {count} ({each[0]} each)" if len(set(each)) == 1 else f"a list [{', '.join(each)}]"
        return "a list"
    if origin in (list, set, frozenset):
        return "a list"
    if origin is dict:
        return "a mapping of keys (key: value lines)"
    return getattr(annotation, "__name__", str(annotation))


def _alternatives(parts: list[str]) -> str:
    parts = list(dict.fromkeys(parts))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _field(model: type[BaseModel], key: object) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _tag_matches(member: Any, tag: str) -> bool:
    member = _unwrap(member)
    name = getattr(get_origin(member) or member, "__name__", "")
    return bool(name) and (tag == name or tag.startswith(name + "[") or f"{name}(" in tag or f"[{name}]" in tag)


class _Where:
    """Where an error is, in the user's terms: the path of keys, the type expected there, and the
    union (if any) the validation library tried members of."""

    def __init__(self, model: type[BaseModel], loc: tuple[int | str, ...]) -> None:
        self.parts: list[int | str] = []
        self.info: Any = None  # the model field reached last (its description explains a pattern)
        self.union_at: tuple[int | str, ...] | None = None
        self.union: Any = None
        annotation: Any = model
        for part in loc:
            annotation = _unwrap(annotation) if annotation is not None else None
            if annotation is None:  # below a type we could not follow: keep what reads as a key
                if isinstance(part, int) or (part.replace("_", "").replace("-", "").isalnum()):
                    self.parts.append(part)
                continue
            if _is_union(annotation):  # the part names the member tried, not a key
                self.union_at, self.union = tuple(self.parts), annotation
                annotation = next((m for m in _members(annotation) if _tag_matches(m, str(part))), None)
                continue
            self.parts.append(part)
            origin = get_origin(annotation)
            self.info = None
            if _is_model(annotation):
                info = self.info = _field(annotation, part)
                annotation = info.annotation if info is not None else None
            elif origin is tuple:
                args = get_args(annotation)
                fixed = args and args[-1] is not Ellipsis
                annotation = args[part] if fixed and isinstance(part, int) and part < len(args) else (
                    args[0] if args else None)
            elif origin in (list, set, frozenset):
                annotation = (get_args(annotation) or (None,))[0]
            elif origin is dict:
                annotation = get_args(annotation)[1]
            else:
                annotation = None
        self.annotation = annotation

    @property
    def path(self) -> str:
        out = ""
        for part in self.parts:
            out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
        return out or "(top level)"


#: Error types that mean "the value is not of the expected kind".
_TYPE_ERRORS = {
    "int_type", "int_parsing", "int_from_float", "finite_number", "float_type", "float_parsing", "string_type",
    "bool_type", "bool_parsing", "tuple_type", "list_type", "set_type", "dict_type", "model_type",
    "model_attributes_type", "ip_v4_address", "ip_v6_address", "ip_any_address", "ip_v4_network", "ip_v6_network",
    "ip_any_network", "path_type", "is_instance_of", "literal_error", "none_required", "mapping_type",
    "iterable_type", "decimal_parsing", "int_too_big",
}
_BOUNDS = {"greater_than": ("gt", "must be greater than"), "greater_than_equal": ("ge", "must be at least"),
           "less_than": ("lt", "must be less than"), "less_than_equal": ("le", "must be at most")}


def _hint(kind: str, value: Any, annotation: Any) -> str:
    """A fix for the common YAML slips: a number where text was meant, quotes around a number."""
    if _unwrap(annotation) is str and isinstance(value, int | float | bool):
        return ": put it in quotes to make it text"
    if kind == "int_parsing" and isinstance(value, str):
        try:
            int(value, 0)
        except ValueError:
            return ""
        return ": write it without quotes"
    return ""


def _problem(kind: str, err: Any, where: _Where) -> str:
    """The problem of one error, without the field: 'expected a whole number (got 'x')'."""
    value, ctx = err.get("input"), err.get("ctx") or {}
    got = f" (got {shown(value)})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{words} {ctx.get(key)}{got}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s){got}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s){got}"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters{got}"
    if kind == "string_too_short":
        return f"needs at least {ctx.get('min_length')} character(s){got}"
    if kind == "string_pattern_mismatch":
        if where.info is not None and where.info.description:
            return f"expected {where.info.description}{got}"
        return f"has characters or a form not allowed here (it must match {ctx.get('pattern')}){got}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}{got}"
    if kind in _TYPE_ERRORS and where.annotation is not None:
        return f"expected {describe_type(where.annotation)}{got}{_hint(kind, value, where.annotation)}"
    msg = str(err["msg"]).replace("Input should be", "expected").replace("Input is", "it is")
    return f"{msg}{got}"


def _known_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model reached by ``loc`` (for 'did you mean' on unknown keys)."""
    target = _unwrap(_Where(model, loc).annotation) if loc else model
    if _is_model(target):
        return [f.alias or name for name, f in target.model_fields.items()]
    return []


def _describe(model: type[BaseModel], errors: list[Any]) -> list[str]:
    """One line per problem. Errors from the members of one union are one line ("expected A or B"),
    unless the value had a member's shape: then only what is wrong inside that member."""
    by_union: dict[tuple[int | str, ...], list[tuple[Any, _Where]]] = {}
    lines: list[str] = []
    wheres = [_Where(model, tuple(err["loc"])) for err in errors]
    for err, where in zip(errors, wheres, strict=True):
        if where.union_at is not None and err["type"] in _TYPE_ERRORS | {"too_long", "too_short"} \
                and tuple(where.parts) == where.union_at:
            by_union.setdefault(where.union_at, []).append((err, where))
            continue
        lines.append(_one(model, err, where))
    for at, group in by_union.items():
        deeper = any(w.union_at == at and len(w.parts) > len(at) for w in wheres)
        if deeper:
            continue  # the value had one member's shape: its own errors say what is wrong
        err, where = group[0]
        lines.append(f"field {where.path}: expected {describe_type(where.union)} (got {shown(err.get('input'))})")
    return lines


def _one(model: type[BaseModel], err: Any, where: _Where) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(sorted(known)) or '(none)'}"
        return f"field {where.path}: unknown key — {hint}"
    if kind == "missing":
        return f"field {where.path}: required but missing — add it"
    if not where.parts:  # a rule about the whole file: its message names the fields
        return _problem(kind, err, where)
    return f"field {where.path}: {_problem(kind, err, where)}"


def _bounded(lines: list[str]) -> str:
    lines = [line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 3] + "..." for line in lines]
    more = len(lines) - MAX_PROBLEMS
    return "; ".join(lines[:MAX_PROBLEMS]) + (f"; and {more} more problem(s)" if more > 0 else "")


def validate(model: type[M], data: Any, source: Path | str, *, context: dict[str, Any] | None = None) -> M:
    """Validate parsed YAML against ``model``; errors become one ConfigError naming every problem."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty", fix=f"write a {model.__name__} mapping")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}",
            fix=f"write a {model.__name__} as 'key: value' lines",
        )
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + _bounded(_describe(model, exc.errors()))) from None


def load(model: type[M], path: Path, *, context: dict[str, Any] | None = None) -> M:
    return validate(model, read_yaml(path), path, context=context)


def no_nul(value: Path | None) -> Path | None:
    """A validator for path fields: a NUL cannot be in a path (the OS would refuse it later)."""
    if value is not None and "\0" in str(value):
        raise ValueError(f"{shown(str(value))} holds a NUL character, which no path can hold")
    return value


__all__ = ["StrictModel", "describe_type", "load", "no_nul", "parse_yaml", "read_yaml", "shown", "validate"]
