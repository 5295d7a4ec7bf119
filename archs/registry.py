"""A small registry: a name maps to a config class and the module it builds.

Registration happens in one visible place (``glassformer.archs.__init__``); registering a name twice raises, so
two variants can never silently shadow each other. CLI choices, the README's table of variants and parametrised
tests all read from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    config_cls: type
    module_cls: type[T]
    formula: str
    """One line for the README's table of variants."""


class Registry(Generic[T]):
    """Name -> (config class, module class).

    Example:
        >>> from glassformer.archs import MLP_REGISTRY
        >>> "dense" in MLP_REGISTRY.names()
        True
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_cls: type, module_cls: type[T], formula: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = Entry(name, config_cls, module_cls, formula)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {', '.join(self._entries)}")
        return self._entries[name]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> T:
        return self[cfg.kind].module_cls(cfg, *args, **kwargs)
