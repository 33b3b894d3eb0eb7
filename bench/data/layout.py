"""Where datasets live and what to say when they are not there.

The data root comes from (first wins) ``--data-root``, the suite's ``data_root`` field (both land
in ``data.data_root`` of the run config), or ``$BENCH_DATA_ROOT``. Every dataset module states
its exact on-disk layout once, as a :class:`Layout`; a missing or malformed dataset raises
:class:`DatasetError` naming the path it expected, what it found there, that layout, and where
the official archive comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


ENV_VAR = "BENCH_DATA_ROOT"


@dataclass(frozen=True)
class Layout:
    """The on-disk shape of one dataset, as users get it from the official archive."""

    dataset: str
    tree: str  # an indented sketch relative to the data root
    source: str  # where the official archive comes from, in words (no links)


class DatasetError(FileNotFoundError):
    """A dataset that is missing or not in its official layout; the message says how to fix it."""

    def __init__(self, layout: Layout, split: str, expected: Path, problem: str, root: Path | None) -> None:
        self.layout, self.split, self.expected = layout, split, expected
        lines = [
            f"dataset {layout.dataset!r}, split {split!r}: {problem}",
            f"  expected: {expected}",
            f"  found:    {describe_found(expected)}",
            "  layout needed (under the data root):",
            *("    " + line for line in layout.tree.strip("\n").splitlines()),
            f"  official source: {layout.source}",
            f"  data root: {root if root else '(none set)'} — set it with --data-root, the suite's data_root, or ${ENV_VAR}",
        ]
        super().__init__("\n".join(lines))


def describe_found(path: Path, limit: int = 8) -> str:
    """What exists at ``path`` or, if nothing, in its nearest existing parent."""
    if path.is_file():
        return f"a file of {path.stat().st_size} bytes"
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return "nothing"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in probe.iterdir())
    shown = ", ".join(entries[:limit]) + (f", … ({len(entries) - limit} more)" if len(entries) > limit else "")
    where = "it" if probe == path else f"nearest existing folder {probe}"
    return f"{where} holds {shown}" if entries else f"{where} is empty"


def data_root(explicit: str | Path | None) -> Path | None:
    """The configured data root, or None when neither the config nor the environment names one."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else None


class DatasetLocator:
    """Resolve paths of one dataset under the data root, raising DatasetError with its layout."""

    def __init__(self, layout: Layout, split: str, data_root_: str | Path | None) -> None:
        self.layout, self.split = layout, split
        self.root = data_root(data_root_)

    def fail(self, expected: Path, problem: str) -> DatasetError:
        return DatasetError(self.layout, self.split, expected, problem, self.root)

    def base(self, *candidates: str) -> Path:
        """The first existing folder among ``candidates`` (relative to the root), else an error."""
        if self.root is None:
            raise self.fail(Path("<data root>") / candidates[0], "no data root is configured")
        for rel in candidates:
            if (self.root / rel).is_dir():
                return self.root / rel
        others = f" (also tried {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        raise self.fail(self.root / candidates[0], f"folder not found{others}")

    def file(self, path: Path, what: str = "file") -> Path:
        if not path.is_file():
            raise self.fail(path, f"{what} not found")
        return path

    def folder(self, path: Path, what: str = "folder") -> Path:
        if not path.is_dir():
            raise self.fail(path, f"{what} not found")
        return path


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (case-insensitive suffix match).

    ``os.scandir`` reads file types from the directory listing, so ImageNet's 1.28 M files are
    listed without a stat call each (which matters on network file systems)."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()]
    return [folder / n for n in sorted(names)]
