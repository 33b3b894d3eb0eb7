"""User code that extends the harness without editing the package.

A plugin is an importable Python module that registers methods, datasets, backbones, evaluations,
optimisers or schedules through the same registries the package uses (``METHODS.register`` …).
Two ways bring one in:

- a suite's ``plugins: [my_pkg.my_module]`` — imported when the suite is loaded, and again in every
  process that runs one of its runs (each run's config carries the list, :func:`activate`);
- an installed distribution's entry point in the group :data:`ENTRY_POINT_GROUP` — loaded by every
  ``bench`` command and every job, so a ``pip install``-ed extension needs no suite key.

A run's identity must change when the code that computes it changes. The package's own code is
versioned by git and recorded in provenance; a plugin's code is not, so :func:`code_digests` gives
the SHA-256 of the source of every non-package module behind the registry entries a run uses, and
:meth:`bench.config.RunConfig.canonical` puts them into the run id: editing the focal loss gives
new run ids for the focal runs and leaves every other run's id (and cached result) alone.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

from bench.registry import Registry

ENTRY_POINT_GROUP = "grpo_rm_bench.plugins"
PACKAGE = "bench"

_entry_points_loaded = False


class PluginError(ImportError):
    """A plugin module could not be imported; the message names the module and the cause."""


def is_package_module(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def load(modules: Iterable[str]) -> None:
    """Import each plugin module (once: Python caches imports). A module that fails to import is
    a :class:`PluginError` naming it and the first line of the cause, never a bare traceback."""
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 — any failure inside user code is reported as the plugin's
            cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = " (is its folder on PYTHONPATH, or its package installed?)" if isinstance(exc, ModuleNotFoundError) and exc.name == name.split(".")[0] else ""
            raise PluginError(f"cannot import plugin {name!r}: {type(exc).__name__}: {cause}{hint}") from exc


def load_entry_points() -> list[str]:
    """Load every entry point of :data:`ENTRY_POINT_GROUP` (once per process); their names."""
    global _entry_points_loaded
    found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in found:
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"cannot load entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}: {type(exc).__name__}: {exc}") from exc
    return [ep.name for ep in found]


def activate(modules: Iterable[str] = ()) -> None:
    """Everything a process needs before it resolves a run's registry names: installed entry
    points and the run's own plugin modules. Jobs call it first (they unpickle configs that name
    plugin components without re-importing the suite)."""
    load_entry_points()
    load(modules)


# ---- code identity -------------------------------------------------------------------------------

_DIGESTS: dict[str, str] = {}


def _module_files(module: str) -> list[Path]:
    """The source files of ``module``: its file, or for a package every ``.py`` file below it
    (a package's ``__init__`` usually imports its siblings, whose code is what runs)."""
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if not file:
        return []
    path = Path(file)
    if path.name == "__init__.py":
        return sorted(path.parent.rglob("*.py"))
    return [path]


def module_digest(module: str) -> str:
    """SHA-256 (first 16 hex digits) over ``module``'s source files, their relative names included;
    memoised per process (a run's code does not change under a running process)."""
    found = _DIGESTS.get(module)
    if found is None:
        h = hashlib.sha256()
        files = _module_files(module)
        root = files[0].parent if files else None
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" if root else b"")
            h.update(f.read_bytes())
            h.update(b"\0")
        found = _DIGESTS[module] = h.hexdigest()[:16] if files else "no-source"
    return found


def code_digests(used: Iterable[tuple[Registry, str]]) -> dict[str, str]:
    """module → digest for the non-package modules that provide the registry entries ``used``
    ((registry, name) pairs); empty for a run that uses only the package's own components."""
    out: dict[str, str] = {}
    for registry, name in used:
        for module in registry.origins(name):
            if not is_package_module(module):
                out[module] = module_digest(module)
    return dict(sorted(out.items()))


def loaded_plugins() -> dict[str, str]:
    """module → digest of every non-package module that registered something in this process
    (recorded in each run's provenance)."""
    from bench.registry import all_origins

    return dict(sorted((m, module_digest(m)) for m in all_origins() if not is_package_module(m)))
