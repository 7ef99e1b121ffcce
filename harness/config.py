"""Typed configuration at the edge: YAML files become validated pydantic objects.

Every error names the file, the field (as a dotted path), the bad value and the fix. Unknown keys
are errors (``extra="forbid"``), so a misspelt key never silently falls back to a default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed file is a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", fix="check the path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", fix="check permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{path}: not valid YAML{where}: {problem}",
            fix="fix the YAML syntax (indentation, a missing ':' or an unclosed quote)",
        ) from None


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _known_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model reached by ``loc`` (for 'did you mean' on unknown keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _describe(model: type[BaseModel], err: Any) -> str:
    loc = tuple(err["loc"])
    field = _field_path(loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(sorted(known))}"
        return f"field {field}: unknown key — {hint}"
    if kind == "missing":
        return f"field {field}: required but missing — add it"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    msg = err["msg"]
    return f"field {field}: {msg} (got {shown})"


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
        lines = [_describe(model, e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def load(model: type[M], path: Path, *, context: dict[str, Any] | None = None) -> M:
    return validate(model, read_yaml(path), path, context=context)
