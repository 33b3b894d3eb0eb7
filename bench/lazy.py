"""Heavy modules imported on first use, so that commands which never touch them start at once.

``bench --help``, ``bench validate`` and ``bench status`` read YAML and JSON; importing torch,
torchvision, timm, pandas or matplotlib would cost them seconds before any argument is parsed.
Modules on that path bind heavy dependencies through :func:`lazy` instead of ``import``: the real
import happens at the first attribute access (``torch.zeros``), in whatever command needs it.

Why not ``importlib.util.LazyLoader`` (or the ``lazy_loader`` package built on it): it swaps the
module's class mid-import, which C-extension packages with import-time side effects (torch
registers ops and patches ``sys.modules``) do not all survive. A plain forwarding object cannot
get in their way: the module is imported normally, just later.
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType
from typing import Any, Callable, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class LazyModule:
    """Stands in for ``import name``; the first attribute access imports the module for real."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _module(self) -> ModuleType:
        return sys.modules.get(self._name) or importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._module(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:  # e.g. monkeypatching in tests
        setattr(self._module(), attr, value)

    def __repr__(self) -> str:
        loaded = "loaded" if self._name in sys.modules else "not imported yet"
        return f"<lazy module {self._name!r} ({loaded})>"


def lazy(name: str) -> Any:
    """``torch = lazy("torch")``: the module when already imported, else a :class:`LazyModule`."""
    return sys.modules.get(name) or LazyModule(name)


def no_grad(fn: Callable[P, R]) -> Callable[P, R]:
    """``@torch.no_grad()`` for plain (non-generator) functions, importing torch at the first call
    instead of at decoration time (when a config or CLI module is merely imported)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper
