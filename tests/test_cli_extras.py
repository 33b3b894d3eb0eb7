"""Small CLI affordances: --version, `bench ls`, `bench config`, --parallel validation."""

from __future__ import annotations

import pytest
import yaml

from bench.cli import main
from bench.methods import METHODS
from test_suite import GOOD, write


def test_version_and_ls(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("bench 0.")
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for kind in ("methods:", "backbones:", "datasets:", "evaluations:", "executors:"):
        assert kind in out
    for name in (*METHODS.names(), "dinov2_vits14_imgfocus", "tiny_imagenet", "heldout", "slurm"):
        assert f"  {name} " in out, name
    assert main(["ls", "methods"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == METHODS.names()


def test_config_prints_the_resolved_config_of_a_run(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["config", str(path), "--only", "method=grpo_rm,seed=1"]) == 0
    out = capsys.readouterr().out
    header, body = out.split("\n", 1)
    config = yaml.safe_load(body)
    assert config["method"]["name"] == "grpo_rm" and config["seed"] == 1
    assert config["method"]["params"]["epsilon"] == 0.1 and config["method"]["params"]["mu"] == 1  # defaults filled
    assert config["data"]["val_fraction"] == 0.1 and header.startswith("# run ")
    assert main(["config", str(path), "--run", "zzzz"]) == 2


def test_parallel_must_be_at_least_one(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    with pytest.raises(SystemExit) as done:
        main(["run", str(path), "--executor", "local", "--parallel", "0"])
    assert done.value.code == 2 and "must be at least 1" in capsys.readouterr().err
