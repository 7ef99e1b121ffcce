"""Small registries that kinds join from below (board kinds, broker kinds, network modes, ...).

A kind registers itself under the name used in YAML; code that needs a kind looks it up here, so
adding a kind never edits a central if/elif and lower layers never import higher ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one family of kinds."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@BOARD_KINDS.register("qemu")`` on a class or factory."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{self.family} kind {name!r} is already registered by {existing!r}")
        self._items[name] = obj

    def get(self, name: str, *, where: str = "") -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none registered)"
            loc = f"{where}: " if where else ""
            raise ConfigError(
                f"{loc}unknown {self.family} kind {name!r}",
                fix=f"use one of: {known}",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def load_entry_points(group: str) -> None:
    """Import every module installed under the entry-point ``group`` (kinds that register
    themselves on import); each is imported once, as any module is."""
    import importlib.metadata

    for entry in importlib.metadata.entry_points(group=group):
        entry.load()
