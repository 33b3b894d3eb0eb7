"""Plugins (docs/extending.md): user modules register components; their code is part of run ids."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from bench import plugins
from bench.config import RunConfig
from bench.errors import SuiteError
from bench.methods import METHODS
from bench.suite import expand, load_suite
from conftest import isolated_registry

METHOD_SOURCE = '''
from typing import ClassVar
from bench.methods.base import METHODS, MethodParams
from bench.methods.sft import SFT, SFTParams

@METHODS.register("{name}")
class Plugged(SFT):
    name: ClassVar[str] = "{name}"
'''

SUITE = """
name: plugged
plugins: [{module}]
defaults:
  backbone: {{name: dinov2_tiny, weights: random, img_size: 28}}
  data: {{name: fmnist_composites, params: {{img_size: 28, train_size: 40, eval_size: 20}}, val_fraction: 0}}
matrix:
  method: [sft, {name}]
"""


def write_plugin(folder: Path, module: str, name: str, extra: str = "") -> Path:
    path = folder / f"{module}.py"
    path.write_text(METHOD_SOURCE.format(name=name) + extra)
    return path


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on sys.path for the test's plugin modules. What they register, and the modules
    themselves, are forgotten after the test: a registration left behind names a module that later
    tests (and the processes they start) cannot import."""
    from bench.registry import _REGISTRIES

    monkeypatch.syspath_prepend(str(tmp_path))
    for registry in _REGISTRIES:
        isolated_registry(monkeypatch, registry)
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_a_suites_plugin_registers_a_method_and_its_code_enters_only_its_runs_ids(plugin_path):
    write_plugin(plugin_path, "plug_ids", "plugged_sft")
    (plugin_path / "s.yaml").write_text(SUITE.format(module="plug_ids", name="plugged_sft"))
    specs = expand(load_suite(plugin_path / "s.yaml"), plugin_path / "s.yaml")
    by_method = {s.config.method.name: s for s in specs}
    assert set(by_method) == {"sft", "plugged_sft"} and METHODS.origins("plugged_sft")[0] == "plug_ids"
    plugged = by_method["plugged_sft"].config.canonical()
    assert plugged["method"]["code"] == {"plug_ids": plugins.module_digest("plug_ids")} and "code" not in plugged
    sft = by_method["sft"].config
    assert "code" not in sft.canonical() and "plugins" not in sft.canonical()
    # the sft run's id is the id it has without any plugin listed: importing a plugin changes no other run
    alone = RunConfig(**{k: v for k, v in sft.model_dump().items() if k != "plugins"})
    assert alone.run_id() == sft.run_id()


def test_changed_plugin_code_gives_new_run_ids(plugin_path, monkeypatch):
    write_plugin(plugin_path, "plug_edit", "edited_sft")
    cfg = RunConfig(plugins=("plug_edit",), method={"name": "edited_sft"})
    before = cfg.run_id()
    write_plugin(plugin_path, "plug_edit", "edited_sft", extra="\n# a changed loss\n")
    monkeypatch.setattr(plugins, "_DIGESTS", {})  # a new process: digests are memoised per process
    after = cfg.run_id()
    assert before != after
    monkeypatch.setattr(plugins, "_DIGESTS", {})
    write_plugin(plugin_path, "plug_edit", "edited_sft")  # the same code again: the same id
    assert cfg.run_id() == before


def test_a_package_plugin_is_hashed_over_all_its_files(plugin_path, monkeypatch):
    pkg = plugin_path / "plug_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from plug_pkg import losses  # noqa\n")
    (pkg / "losses.py").write_text(METHOD_SOURCE.format(name="pkg_sft"))
    RunConfig(plugins=("plug_pkg",), method={"name": "pkg_sft"})
    first = plugins.code_digests([(METHODS, "pkg_sft")])
    assert set(first) == {"plug_pkg.losses"}  # where it was registered and defined
    monkeypatch.setattr(plugins, "_DIGESTS", {})
    before = plugins.module_digest("plug_pkg")
    (pkg / "helpers.py").write_text("X = 1\n")
    monkeypatch.setattr(plugins, "_DIGESTS", {})
    assert plugins.module_digest("plug_pkg") != before


def test_a_plugin_that_cannot_be_imported_is_refused_with_file_line_and_cause(tmp_path):
    (tmp_path / "s.yaml").write_text(SUITE.format(module="no_such_plugin_module", name="x"))
    with pytest.raises(SuiteError) as err:
        load_suite(tmp_path / "s.yaml")
    assert str(err.value).startswith(f"{tmp_path / 's.yaml'}:3: plugins.0: cannot import plugin 'no_such_plugin_module': ModuleNotFoundError")
    assert "PYTHONPATH" in str(err.value)


def test_a_plugin_that_raises_is_named_with_its_error(plugin_path):
    (plugin_path / "plug_broken.py").write_text("raise RuntimeError('the plugin is broken')\n")
    (plugin_path / "s.yaml").write_text(SUITE.format(module="plug_broken", name="x"))
    with pytest.raises(SuiteError, match=r"s.yaml:3: plugins.0: cannot import plugin 'plug_broken': RuntimeError: the plugin is broken"):
        load_suite(plugin_path / "s.yaml")


def test_an_installed_entry_point_is_loaded_without_a_suite_key(plugin_path, monkeypatch):
    write_plugin(plugin_path, "plug_ep", "entry_sft")
    dist = plugin_path / "plug_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nmine = plug_ep\n")
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    assert "entry_sft" not in METHODS
    assert plugins.load_entry_points() == ["mine"]
    assert "entry_sft" in METHODS and RunConfig(method={"name": "entry_sft"}).canonical()["method"]["code"] == {"plug_ep": plugins.module_digest("plug_ep")}


def test_a_job_process_imports_the_runs_plugins_before_resolving_names(plugin_path):
    """What a Slurm job or local subprocess does: unpickle the config, then run_job activates."""
    import pickle
    import subprocess

    write_plugin(plugin_path, "plug_job", "job_sft")
    cfg = RunConfig(plugins=("plug_job",), method={"name": "job_sft"})
    blob = plugin_path / "cfg.pkl"
    blob.write_bytes(pickle.dumps(cfg))
    code = textwrap.dedent(f"""
        import pickle, sys
        from bench.methods import METHODS
        from bench.plugins import activate
        cfg = pickle.loads(open({str(blob)!r}, 'rb').read())
        assert 'job_sft' not in METHODS
        activate(cfg.plugins)
        print(METHODS.get(cfg.method.name).__module__, cfg.run_id())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": f"{plugin_path}:{Path.cwd()}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plug_job", cfg.run_id()]


def test_a_plugin_family_adapter_is_part_of_the_ids_of_the_runs_it_drives(plugin_path, monkeypatch):
    """A family registered by a plugin drives timm models the package's families would not (or
    would differently): its code must be in the run id, like a method's or a dataset's."""
    from bench.models import backbones
    from bench.models.families import FAMILIES

    isolated_registry(monkeypatch, FAMILIES)  # this test's registrations vanish afterwards
    backbones._timm_entry.cache_clear()
    (plugin_path / "plug_family.py").write_text(
        "from bench.models.families import FAMILIES, ResNetFamily\n\n"
        "class LabResNet(ResNetFamily):\n    name = 'aaa_lab_resnet'  # sorts first: it drives every ResNet\n\n"
        "FAMILIES.add(LabResNet.name, LabResNet())\n")
    try:
        cfg = RunConfig(plugins=("plug_family",), method={"name": "sft"}, backbone={"name": "timm:resnet10t", "weights": "random", "img_size": 32})
        assert backbones.backbone_entry("timm:resnet10t").family == "aaa_lab_resnet"
        assert cfg.canonical()["code"] == {"plug_family": plugins.module_digest("plug_family")}
    finally:
        backbones._timm_entry.cache_clear()
