"""A small registry: a name maps to a config class and the module it builds.

Registration happens in one visible place (``glassformer.archs.__init__``); registering a name twice raises, so
two variants can never silently shadow each other. A registry made with a ``base`` class refuses any module
class that does not subclass it (or leaves one of its abstract methods unwritten), so everything it builds
honours one declared contract. CLI choices, the README's table of variants and parametrised tests all read from
here.
"""

from __future__ import annotations

import inspect
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
    """Name -> (config class, module class); with ``base``, every module class must subclass it.

    Example:
        >>> from glassformer.archs import MLP_REGISTRY
        >>> "dense" in MLP_REGISTRY.names()
        True
        >>> Registry("thing", base=int).register("x", dict, str)
        Traceback (most recent call last):
        ...
        TypeError: thing 'x': module class str is not allowed: expected a subclass of int
    """

    def __init__(self, what: str, base: type | None = None):
        self.what = what
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_cls: type, module_cls: type[T], formula: str = "") -> None:
        """Add ``name``; a name already taken, or a module class outside the contract, raises.

        Example:
            >>> r = Registry("thing")
            >>> r.register("a", dict, list, "a list"); r.names()
            ['a']
        """
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        if self.base is not None:
            self._check_module_cls(name, module_cls)
        self._entries[name] = Entry(name, config_cls, module_cls, formula)

    def _check_module_cls(self, name: str, module_cls: Any) -> None:
        base = self.base.__name__
        shown = module_cls.__name__ if isinstance(module_cls, type) else repr(module_cls)
        if not (isinstance(module_cls, type) and issubclass(module_cls, self.base)):
            raise TypeError(f"{self.what} {name!r}: module class {shown} is not allowed: expected a subclass of "
                            f"{base}")
        if inspect.isabstract(module_cls):
            missing = ", ".join(sorted(module_cls.__abstractmethods__))
            raise TypeError(f"{self.what} {name!r}: module class {shown} is not allowed: it subclasses {base} but "
                            f"does not implement {missing}")

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

    def config_classes(self) -> tuple[type, ...]:
        """Every registered config class, in registration order (for ``isinstance`` checks).

        Example:
            >>> r = Registry("thing"); r.register("a", dict, list); r.config_classes()
            (<class 'dict'>,)
        """
        return tuple(entry.config_cls for entry in self._entries.values())

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> T:
        return self[cfg.kind].module_cls(cfg, *args, **kwargs)
