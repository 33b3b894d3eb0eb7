"""Suite loading, validation messages, matrix expansion and run identity."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.suite import SuiteError, expand, load_suite

GOOD = """
name: t
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: fmnist_composites, params: {img_size: 28}}
methods:
  grpo_rm: {epsilon: 0.1}
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1]
"""


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_is_deterministic_and_ids_ignore_key_order(tmp_path):
    path = write(tmp_path, GOOD)
    specs = expand(load_suite(path), path)
    assert [(s.config.method.name, s.config.seed) for s in specs] == [("sft", 0), ("sft", 1), ("grpo_rm", 0), ("grpo_rm", 1)]
    assert specs[2].config.method.resolved_params()["epsilon"] == 0.1
    reordered = write(tmp_path, """
        name: t
        matrix:
          seed: [0, 1]
          method: [sft, grpo_rm]
        methods:
          grpo_rm: {epsilon: 0.1}
        defaults:
          data: {params: {img_size: 28}, name: fmnist_composites}
          backbone: {img_size: 28, weights: random, name: dinov2_tiny}
        """, "r.yaml")
    reordered_specs = expand(load_suite(reordered), reordered)  # seed first: runs of one setting do not follow one another
    assert {s.run_id for s in reordered_specs} == {s.run_id for s in specs}
    # expansion names runs through a memo (runs differing only in their seed share their config's JSON): the plain ids
    assert [s.run_id for s in [*specs, *reordered_specs]] == [s.config.run_id() for s in [*specs, *reordered_specs]]
    full = {("filler", i): None for i in range(256)}  # a full memo is emptied, never read
    assert [s.config.run_id(full) for s in specs] == [s.run_id for s in specs] and len(full) == 2
    # an explicit default value does not change identity; a real change does
    explicit = expand(load_suite(path), path, ["train.lr=1e-4"])
    assert [s.run_id for s in explicit] == [s.run_id for s in specs]
    changed = expand(load_suite(path), path, ["train.lr=2e-4"])
    assert not {s.run_id for s in changed} & {s.run_id for s in specs}


def test_dotted_matrix_axis(tmp_path):
    path = write(tmp_path, GOOD.replace("seed: [0, 1]", "method.params.epsilon: [0.1, 0.3]").replace("method: [sft, grpo_rm]", "method: [grpo_rm]"))
    specs = expand(load_suite(path), path)
    assert [s.config.method.resolved_params()["epsilon"] for s in specs] == [0.1, 0.3]


@pytest.mark.parametrize(
    "edit,expected",
    [
        (("matrix:", "matrixx:"), "matrixx: Extra inputs are not permitted"),
        (("method: [sft, grpo_rm]", "method: [sft, grpo]"), "unknown method 'grpo'; did you mean 'grpo_rm'?"),
        (("name: dinov2_tiny", "name: dinov2_tiyn"), "backbone.name: unknown backbone 'dinov2_tiyn'; did you mean 'dinov2_tiny'"),
        (("img_size: 28}", "img_size: 30}"), "not a multiple of the patch size 14"),
        (("epsilon: 0.1", "epsilom: 0.1"), "epsilom"),
        (("epsilon: 0.1", "epsilon: 1.5"), "less than 1"),
        (("name: fmnist_composites", "name: fmnist"), "unknown dataset 'fmnist'"),
        (("params: {img_size: 28}", "params: {img_sz: 28}"), "unknown fmnist_composites parameter(s) ['img_sz']"),
        (("seed: [0, 1]", "seed: []"), "matrix.seed: empty list"),
        (("name: t", "name: 'bad name'"), "name: String should match pattern"),
    ],
)
def test_bad_suites_get_precise_messages(tmp_path, edit, expected):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(SuiteError) as err:
        expand(load_suite(path), path)
    message = str(err.value)
    assert str(path) in message and expected in message


def test_validate_command_exit_codes(tmp_path, capsys):
    good = write(tmp_path, GOOD)
    assert main(["validate", str(good)]) == 0
    assert "4 runs" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("seed: [0, 1]", "seed: [0, one]"), "bad.yaml")
    assert main(["validate", str(bad)]) == 2
    assert "seed" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2


def test_demo_suite_validates():
    specs = expand(load_suite("suites/demo.yaml"), "suites/demo.yaml")
    assert len(specs) == 6
    assert {s.config.backbone.name for s in specs} == {"dinov2_vits14_imgfocus"}
    assert {s.config.backbone.weights for s in specs} == {"pretrained"}


BAD_SUITES = sorted((Path(__file__).parent / "bad_suites").glob("*.yaml"))


def test_the_bad_suite_corpus_is_large_enough():
    assert len(BAD_SUITES) >= 20


@pytest.mark.parametrize("path", BAD_SUITES, ids=lambda p: p.stem)
def test_each_bad_suite_is_rejected_with_file_line_key_and_reason(path):
    # the first line is ASCII even where the rest is not UTF-8 (35_not_utf8)
    line, expected = path.read_bytes().splitlines()[0].decode().removeprefix("# expect: ").split(": ", 1)
    with pytest.raises(SuiteError) as err:
        expand(load_suite(path), path)
    message = str(err.value)
    assert f"{path}:{line}: " in message, message
    assert expected in message, message


def test_include_joins_other_suites_runs_with_namespaced_profiles(tmp_path):
    a = write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD.replace("name: t", "name: u").replace("seed: [0, 1]", "seed: [5]")
          + "resources:\n  big: {cpus: 4}\nprofile: big\n", "b.yaml")
    parent = write(tmp_path, "name: both\ninclude: [a.yaml, b.yaml]\n", "both.yaml")
    suite = load_suite(parent)
    specs = expand(suite, parent)
    own = expand(load_suite(a), a)
    assert [s.run_id for s in specs[:4]] == [s.run_id for s in own]  # a run's identity does not depend on who includes it
    assert [s.suite for s in specs] == ["t"] * 4 + ["u"] * 2 and len(specs) == 6  # stored where their own suite stores them
    assert [s.profile for s in specs] == ["t/default"] * 4 + ["u/big"] * 2
    assert suite.resource("u/big").cpus == 4
    root = tmp_path / "elsewhere"
    assert {s.config.data.data_root for s in expand(suite, parent, data_root=root)} == {str(root.resolve())}


def test_include_cycles_and_missing_files_are_named(tmp_path):
    write(tmp_path, "name: x\ninclude: [y.yaml]\n", "x.yaml")
    y = write(tmp_path, "name: y\ninclude: [x.yaml]\n", "y.yaml")
    with pytest.raises(SuiteError, match=r"y.yaml:2: include.0: x.yaml includes itself|x.yaml:2: include.0: y.yaml includes itself"):
        load_suite(y)
    z = write(tmp_path, "name: z\ninclude: [nope.yaml]\n", "z.yaml")
    with pytest.raises(SuiteError, match=r"z.yaml:2: include.0: suite file .*nope.yaml not found; paths are relative to"):
        load_suite(z)


def test_method_scoped_override_changes_only_that_method(tmp_path):
    path = write(tmp_path, GOOD)
    suite = load_suite(path)
    before = {(s.config.method.name, s.config.seed): s for s in expand(suite, path)}
    after = {(s.config.method.name, s.config.seed): s for s in expand(suite, path, ["methods.grpo_rm.epsilon=0.3"])}
    for key, spec in before.items():
        if key[0] == "sft":  # untouched: same config, same run id
            assert after[key].run_id == spec.run_id and after[key].config == spec.config
        else:
            assert after[key].config.method.params["epsilon"] == 0.3 and spec.config.method.params["epsilon"] == 0.1
            assert after[key].run_id != spec.run_id
    # a plain dotted override of a method parameter would reach SFT too, and SFT has no epsilon
    with pytest.raises(SuiteError, match=r"method\.params\.epsilon"):
        expand(suite, path, ["method.params.epsilon=0.3"])


def test_override_typos_are_reported_as_command_line_mistakes(tmp_path):
    path = write(tmp_path, GOOD)
    suite = load_suite(path)
    with pytest.raises(SuiteError) as err:
        expand(suite, path, ["train.lrr=1e-4"])
    assert str(err.value).startswith("-o train.lrr=1e-4: train.lrr:") and "command-line override" in str(err.value)
    assert "did you mean 'lr'" in str(err.value) and "s.yaml" not in str(err.value).splitlines()[0]
    with pytest.raises(SuiteError, match=r"^-o methods\.grpo_rm\.epsilom=0\.3: method\.params\.epsilom: .*did you mean 'epsilon'"):
        expand(suite, path, ["methods.grpo_rm.epsilom=0.3"])
    with pytest.raises(SuiteError, match=r"no run of this suite uses method 'grpo'; did you mean 'grpo_rm'"):
        expand(suite, path, ["methods.grpo.epsilon=0.3"])


def test_method_variants_in_the_matrix_refine_one_method(tmp_path):
    text = GOOD.replace("method: [sft, grpo_rm]", "method: [sft, grpo_rm, {name: grpo_rm, params: {mu: 2}}, {name: sft, params: {label_smoothing: 0.1}}]")
    path = write(tmp_path, text)
    specs = expand(load_suite(path), path)
    configs = {(s.config.method.name, json.dumps(s.config.method.resolved_params(), sort_keys=True)) for s in specs}
    assert len(specs) == 8 and len(configs) == 4
    grpo = [s.config.method.resolved_params() for s in specs if s.config.method.name == "grpo_rm"]
    assert sorted(p["mu"] for p in grpo) == [1, 1, 2, 2] and all(p["epsilon"] == 0.1 for p in grpo)  # methods.grpo_rm still applies
    sft = [s.config.method.resolved_params()["label_smoothing"] for s in specs if s.config.method.name == "sft"]
    assert sorted(sft) == [0.0, 0.0, 0.1, 0.1]
    bad = write(tmp_path, GOOD.replace("method: [sft, grpo_rm]", "method: [sft, {name: grpo_rm, parms: {mu: 2}}]"), "bad.yaml")
    with pytest.raises(SuiteError, match=r"bad\.yaml:\d+: matrix\.method\.1: a method variant is .*unexpected parms"):
        expand(load_suite(bad), bad)


def test_only_selects_a_subset(tmp_path, capsys):
    from bench.suite import parse_only, select_only

    path = write(tmp_path, GOOD)
    specs = expand(load_suite(path), path)
    chosen = select_only(specs, parse_only("method=grpo_rm,seed=0"))
    assert [(s.config.method.name, s.config.seed) for s in chosen] == [("grpo_rm", 0)]
    assert len(select_only(specs, parse_only("data.name=fmnist_composites"))) == 4
    with pytest.raises(SuiteError, match="--only"):
        parse_only("method")
    assert main(["validate", str(path), "--only", "method=sft"]) == 0
    assert "2 runs" in capsys.readouterr().out


def test_shared_sections_never_carry_a_segmentation_runs_ignore_index_to_another_run(tmp_path):
    """Expansion reuses validated sections between runs; a segmentation run's method section takes
    its dataset's ignore index, so each run's config must equal one validated on its own."""
    from bench.config import RunConfig

    path = write(tmp_path, """
name: mixed
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
matrix:
  data.name: [fmnist_composites, fmnist_composites_seg]
  method: [sft, grpo_rm]
  seed: [0, 1]
""")
    specs = expand(load_suite(path), path)
    for spec in specs:
        alone = RunConfig(**json.loads(spec.config.model_dump_json()) | {"method": {"name": spec.config.method.name}})  # no sharing
        dense = spec.config.data.name == "fmnist_composites_seg"
        assert spec.config.method.resolved_params()["ignore_index"] == (255 if dense else alone.method.resolved_params()["ignore_index"])
        assert spec.config.method.resolved_params() == alone.method.resolved_params()
