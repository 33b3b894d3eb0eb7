"""docs/extending.md, executed: its files are written as shown and its commands run as shown,
from a plugin package outside this one; the report must then hold what the page promises."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"<!-- (file: (?P<path>\S+)|run) -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


def walkthrough() -> tuple[dict[str, str], list[str]]:
    """The page's files (path → text) and its shell commands, in page order."""
    files: dict[str, str] = {}
    commands: list[str] = []
    for m in BLOCK.finditer(PAGE.read_text()):
        if m["path"]:
            files[m["path"]] = m["body"]
        else:
            commands += [line for line in m["body"].splitlines() if line.strip() and not line.startswith("#")]
    return files, commands


def run_commands(commands: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Each line as the page's reader types it: ``export`` sets the environment of the next ones,
    ``bench`` is the installed command (this checkout's, in its virtual environment)."""
    env = {**os.environ}
    env.pop("BENCH_DATA_ROOT", None)
    done = []
    for line in commands:
        words = shlex.split(line.replace("$PWD", str(cwd)))
        if words[0] == "export":
            key, value = words[1].split("=", 1)
            env[key] = value
            continue
        assert words[0] == "bench", f"the page runs only bench commands, not {line!r}"
        out = subprocess.run([sys.executable, "-m", "bench.cli", *words[1:]], cwd=cwd, env={**env, "PYTHONPATH": f"{env.get('PYTHONPATH', '')}:{ROOT}"},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{line}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        done.append(out)
    return done


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extending")
    files, commands = walkthrough()
    assert {"my_bench_plugins/focal.py", "my_bench_plugins/stripes.py", "my_bench_plugins/resnet_lab.py", "my_bench_plugins/__init__.py",
            "stripes.yaml"} <= set(files)
    assert any("bench run" in c for c in commands)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder, run_commands(commands, folder)


def test_the_plugin_method_is_listed_and_validated(walked):
    folder, outputs = walked
    listed = outputs[0].stdout
    assert re.search(r"^\s+focal\s", listed, re.M) and re.search(r"^\s+grpo_rm\s", listed, re.M)
    assert "Focal loss" in listed or "focal" in listed
    # a misspelt parameter of the plugin's method is refused with a did-you-mean, at the file's line
    suite = (folder / "stripes.yaml").read_text().replace("gamma: 2.0", "gama: 2.0")
    (folder / "typo.yaml").write_text(suite)
    out = subprocess.run([sys.executable, "-m", "bench.cli", "validate", "typo.yaml"], cwd=folder, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": f"{folder}:{ROOT}"})
    assert out.returncode != 0 and "typo.yaml:" in out.stdout + out.stderr and "did you mean 'gamma'" in out.stdout + out.stderr


def test_every_run_of_the_walkthrough_finished_with_its_plugin_code_in_its_identity(walked):
    folder, _ = walked
    results = sorted((folder / "results" / "stripes_focal").glob("*/result.json"))
    records = [json.loads(p.read_text()) for p in results]
    assert len(records) == 12  # 3 methods × 2 backbones × 2 seeds
    cells = {(r["config"]["method"]["name"], r["config"]["backbone"]["name"]) for r in records}
    assert cells == {(m, b) for m in ("focal", "grpo_rm", "sft") for b in ("dinov2_tiny", "resnet_lab")}
    for r in records:
        # every run used the plugin's dataset, so its code is in every id; the lab ResNet's runs have
        # its code too, and only focal runs have focal's (with the method, so the methods still pair)
        lab = r["config"]["backbone"]["name"] == "resnet_lab"
        assert set(r["config"]["code"]) == {"my_bench_plugins.stripes", *(["my_bench_plugins.resnet_lab"] if lab else [])}
        assert r["backbone"]["family"] == ("resnet" if lab else "vit") and r["backbone"]["init"] == "random init"
        assert set(r["config"]["method"].get("code", {})) == ({"my_bench_plugins.focal"} if r["config"]["method"]["name"] == "focal" else set())
        assert {"my_bench_plugins.focal", "my_bench_plugins.stripes", "my_bench_plugins.resnet_lab"} <= set(r["plugins"])  # provenance
        assert r["metrics"]["noisy"]["shift"] is True


def test_the_report_has_a_comparison_for_each_declared_pair(walked):
    folder, _ = walked
    report = folder / "reports" / "stripes_focal"
    text = (report / "report.md").read_text()
    assert "GRPO-RM − SFT" in text and "Focal − SFT" in text
    assert "random init" in text
    delta = (report / "delta.csv").read_text()
    assert "focal" in delta and "grpo_rm" in delta
