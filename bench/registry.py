"""One small registry type shared by methods, datasets, backbones and evaluations.

Suites refer to components by name; a registry turns the name into the object and, when the
name is wrong, answers with the known names and a did-you-mean instead of a KeyError.
"""

from __future__ import annotations

import difflib
import sys
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

_REGISTRIES: list["Registry"] = []  # every registry made, for the modules that filled them (all_origins)


def _registering_module(obj: object) -> tuple[str, ...]:
    """The modules behind an entry: the first caller outside this module (where ``add`` or the
    ``register`` decorator was called) and, for a class or function, the module defining it."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    caller = frame.f_globals.get("__name__", "") if frame is not None else ""
    defined = getattr(obj, "__module__", None)
    mods = [caller] if caller else []
    if isinstance(defined, str) and defined not in mods and (isinstance(obj, type) or callable(obj)):
        mods.append(defined)
    return tuple(mods)


def all_origins() -> set[str]:
    """Every module that registered an entry in any registry of this process."""
    return {m for r in _REGISTRIES for mods in r._origins.values() for m in mods}


class UnknownNameError(KeyError):
    """A suite or config named a component that no registry entry provides."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to components of one kind (e.g. ``"method"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, tuple[str, ...]] = {}  # name → the modules that provide it (plugins)
        _REGISTRIES.append(self)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("sft")`` above a class or function."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        self._origins[name] = _registering_module(obj)

    def origins(self, name: str) -> tuple[str, ...]:
        """The modules that registered or define ``name`` (empty for an unknown name): a run's
        identity includes the code of those outside the package (:mod:`bench.plugins`)."""
        return self._origins.get(name, ())

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def check(self, name: str) -> str:
        """``name`` if registered, else ValueError with the did-you-mean message (for validators)."""
        if name not in self._entries:
            raise ValueError(self.unknown_message(name))
        return name

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(self._entries))
        return f"unknown {self.kind} {name!r}{hint} (known: {known})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
