"""Issue 22, items 4 and 5: a safe sbatch surface and bounded input. Each test names the hostile
input it was found with; the time limits are assertions on those inputs, not measurements."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.launch import sbatch_preview, slurm_parameters
from bench.suite import SBATCH_REFUSED, ResourceProfile, SuiteError, expand, load_suite

from test_suite import GOOD  # noqa: E402


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def with_profile(tmp_path: Path, profile: str) -> Path:
    """GOOD with one resource profile given as YAML flow text (its line is 13)."""
    return write(tmp_path, GOOD + f"resources:\n  default:\n    {profile}\n")


def refused(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(SuiteError) as err:
        expand(load_suite(path), path, overrides)
    return str(err.value)


# --- the sbatch surface --------------------------------------------------------------------------


FORBIDDEN = {
    "output": "/tmp/x.log", "error": "/tmp/e.log", "export": "ALL,LD_PRELOAD=/tmp/x.so", "array": "0-999999",
    "chdir": "/", "workdir": "/", "input": "/etc/shadow", "wrap": "id", "open-mode": "truncate", "job-name": "x",
    "time": 10, "mem": "1G", "signal": "USR1@1", "export_file": "/tmp/env", "uid": 0, "no-requeue": True,
}


@pytest.mark.parametrize("option", sorted(FORBIDDEN))
def test_each_forbidden_sbatch_option_is_refused_at_validate_with_the_reason(tmp_path, option):
    path = write(tmp_path, GOOD + f"resources:\n  default:\n    extra:\n      {option}: {FORBIDDEN[option]!r}\n")
    message = refused(path)
    name = option.replace("_", "-")
    assert message.startswith(f"{path}:14: resources.default.extra.{option}: --{name} is not allowed: "), message
    assert SBATCH_REFUSED[name] in message


def test_unknown_sbatch_options_are_refused_and_false_flags_too(tmp_path):
    assert "is not on the list of sbatch options a suite may set" in refused(with_profile(tmp_path, "extra: {frobnicate: 1}"))
    message = refused(with_profile(tmp_path, "extra: {exclusive: false}"))
    assert "resources.default.extra.exclusive: False: exclusive is a flag; write exclusive: true" in message, message


def test_allowed_sbatch_options_produce_the_right_sbatch_lines(tmp_path):
    profile = ResourceProfile(gpus=2, extra={"exclusive": True, "mail_type": "END,FAIL", "mail-user": "me@example.org",
                                             "nodelist": "node[01-04]", "exclude": "node9", "reservation": "r1",
                                             "gres": "gpu:a100:2", "comment": "ablation", "nice": 5})
    params = slurm_parameters(profile, 3)
    assert params["additional_parameters"]["mail-type"] == "END,FAIL"
    script = sbatch_preview("s", "default", profile, 3, tmp_path)
    lines = set(script.splitlines())
    for line in ("#SBATCH --exclusive", "#SBATCH --mail-type=END,FAIL", "#SBATCH --mail-user=me@example.org",
                 "#SBATCH --nodelist='node[01-04]'", "#SBATCH --exclude=node9", "#SBATCH --reservation=r1",
                 "#SBATCH --gres=gpu:a100:2", "#SBATCH --comment=ablation", "#SBATCH --nice=5",
                 "#SBATCH --array=0-2%3", "#SBATCH --mem=8192M"):
        assert line in lines, (line, script)
    assert not any(x.startswith("#SBATCH --exclusive=") for x in lines)


def test_dry_run_shows_the_allowed_options_in_the_sbatch_script(tmp_path, capsys):
    path = with_profile(tmp_path, "{extra: {exclusive: true, reservation: r1}}")
    assert main(["run", str(path), "--executor", "slurm", "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --exclusive\n" in out and "#SBATCH --reservation=r1" in out, out


# --- numeric bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile,expected", [
    ("{mem_gb: 1e-9}", "13: resources.default.mem_gb: Input should be greater than or equal to 1"),
    ("{mem_gb: 1e308}", "13: resources.default.mem_gb: Input should be less than or equal to 65536"),
    ("{time_min: 1000000000000000}", "13: resources.default.time_min: Input should be less than or equal to 527040"),
    ("{tasks: 100000}", "13: resources.default.tasks: 100000 is more than 256 processes on one node"),
    ("{gpus: 2, tasks: 3}", "13: resources.default.tasks: 3 is more than the 2 GPU(s) of the run"),
    ("{gpus: true}", "13: resources.default.gpus: True is a boolean, not a number"),
])
def test_resource_numbers_are_bounded_at_validate(tmp_path, profile, expected):
    path = with_profile(tmp_path, profile)
    message = refused(path)
    assert f"{path}:{expected}" in message, message


@pytest.mark.parametrize("edit,expected", [
    (("img_size: 28}}", "img_size: 12000}}"), ":5: defaults.data.params.img_size: 12000 is not an image side in [14, 2048]"),
    (("params: {img_size: 28}}", "params: {img_size: 28}, num_workers: 100000}"), ":5: defaults.data.num_workers: Input should be less than or equal to 256"),
    (("params: {img_size: 28}}", "params: {img_size: 28}, num_workers: 2}"), ":5: data.num_workers: 2 loader processes, but profile 'default' gives the run 1 CPU(s)"),
    (("img_size: 28}\n  data", "img_size: 12012}\n  data"), ":4: defaults.backbone.img_size: Input should be less than or equal to 2048"),
    (("methods:", "  train: {epochs: true}\nmethods:"), ":6: defaults.train.epochs: True is a boolean, not a number"),
    (("epsilon: 0.1", "epsilon: true"), ":7: methods.grpo_rm.epsilon: True is a boolean, not a number"),
    (("method: [sft, grpo_rm]", "method: [sft, {name: grpo_rm, params: [1, 2]}]"), ":9: matrix.method.1: a method variant is {name: <method>, params: {...}}"),
])
def test_sizes_workers_and_booleans_are_refused_at_validate_with_file_and_line(tmp_path, monkeypatch, edit, expected):
    import bench.data.composites

    monkeypatch.setattr(bench.data.composites, "generate", lambda *a, **k: pytest.fail("generated data during validation"))
    path = write(tmp_path, GOOD.replace(*edit))
    message = refused(path)
    assert f"{path}{expected}" in message, message


# --- bounded strings, messages and output --------------------------------------------------------


def test_a_1mb_description_is_refused_quickly_with_a_cut_message(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("name: t", "name: t\ndescription: " + "a" * ((1 << 20) - 1000)))
    start = time.monotonic()
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr().out
    assert time.monotonic() - start < 2, "took too long"
    assert f"{path}:3: a value of " in out and len(out) < 400, out


def test_a_long_but_allowed_description_is_printed_by_report_quickly(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("name: t", "name: t\ndescription: " + "v [x] 1.0 " * 999))  # 9,990 characters
    start = time.monotonic()
    assert main(["report", str(path), "--results", str(tmp_path / "r"), "--reports", str(tmp_path / "p"), "--full"]) == 0
    assert time.monotonic() - start < 20, "rich's highlighter is back on user text"
    assert "v [x] 1.0 v [x] 1.0" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["a" * 100_000, "a" * 5_000])
def test_a_long_override_value_is_refused_quickly_with_a_cut_message(tmp_path, capsys, value):
    path = write(tmp_path, GOOD)
    start = time.monotonic()
    assert main(["validate", str(path), "-o", f"data.name={value}"]) == 2
    out = capsys.readouterr().out
    assert time.monotonic() - start < 2, "took too long"
    assert out.startswith("-o data.name=aaaa") and "more characters)" in out and len(out) < 600, out


def test_a_long_data_root_is_refused(tmp_path):
    path = write(tmp_path, GOOD.replace("name: t", "name: t\ndata_root: " + "d" * 2000))
    message = str(pytest.raises(SuiteError, load_suite, path).value)
    assert f"{path}:3: data_root: 'dddd" in message and "is longer than 1,024 characters" in message, message


def test_40000_unknown_keys_give_a_capped_error_quickly(tmp_path):
    keys = "".join(f"  k{i}: 1\n" for i in range(40_000))
    path = write(tmp_path, GOOD.replace("defaults:\n", "defaults:\n  train:\n" + keys.replace("  k", "    k"), 1))
    start = time.monotonic()
    message = refused(path)
    assert time.monotonic() - start < 10, "took too long"
    lines = message.splitlines()
    assert len(lines) <= 23 and "… and 39,980 more errors" in message, lines[-3:]


def test_a_repeated_override_blames_the_last_one_given(tmp_path):
    path = write(tmp_path, GOOD)
    message = refused(path, ["train.lr=1e-4", "train.lr=.nan"])
    assert message.startswith("-o train.lr=.nan: train.lr: "), message
    message = refused(path, ["train.lr=.nan", "train.lr=.inf"])
    assert message.startswith("-o train.lr=.inf: "), message


# --- includes ------------------------------------------------------------------------------------


def diamond(tmp_path: Path, depth: int) -> Path:
    """Two files per level, each including both files of the next level: 2^depth include paths."""
    leaf = GOOD.replace("seed: [0, 1]", "seed: [0]")
    write(tmp_path, leaf.replace("name: t", f"name: a{depth}"), f"a{depth}.yaml")
    write(tmp_path, leaf.replace("name: t", f"name: b{depth}").replace("seed: [0]", "seed: [1]"), f"b{depth}.yaml")
    for i in range(depth - 1, -1, -1):
        for x in "ab":
            write(tmp_path, f"name: {x}{i}\ninclude: [a{i + 1}.yaml, b{i + 1}.yaml]\n", f"{x}{i}.yaml")
    return tmp_path / "a0.yaml"


def test_a_diamond_include_graph_of_depth_30_validates_quickly(tmp_path):
    path = diamond(tmp_path, 30)
    start = time.monotonic()
    suite = load_suite(path)
    specs = expand(suite, path)
    assert time.monotonic() - start < 2, "took too long"
    assert len(specs) == 4 and len(suite._children) == 60  # each file's runs join once
    assert {s.profile for s in specs} == {"a30/default", "b30/default"}


def test_a_file_included_twice_in_one_list_is_named(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    path = write(tmp_path, "name: p\ninclude: [a.yaml, ./a.yaml]\n", "p.yaml")
    message = str(pytest.raises(SuiteError, load_suite, path).value)
    assert f"{path}:2: include.1: ./a.yaml is already included (include.0)" in message, message
