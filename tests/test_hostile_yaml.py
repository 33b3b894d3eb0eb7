"""Hostile input: what tests/bad_suites/ cannot express as one text file (alias-bomb size and
memory, binary and UTF-16 files and includes, ``-o`` values, the run cap on the command line),
and a property-based fuzz test: whatever the document, loading and expanding a suite either
returns runs or raises SuiteError — quickly, in bounded memory, never a traceback."""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.suite import SuiteError, expand, load_suite

ROOT = Path(__file__).resolve().parent.parent

from test_suite import GOOD  # noqa: E402  (the same small valid suite the suite tests use)


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))
    return path


def alias_bomb() -> str:
    """The 'billion laughs' document: nine levels of nine aliases, about 600 bytes, 9^9 leaves."""
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "name: bomb\n" + "\n".join(levels) + "\nmatrix: {method: [sft]}\n"


def run_bounded(code: str, memory_mb: int = 512, timeout_s: int = 60) -> str:
    """Run ``code`` in a fresh interpreter whose address space may grow by ``memory_mb`` after
    imports, so a regression (an alias walk that expands the bomb) fails with MemoryError or a
    timeout instead of taking the shared machine's memory."""
    prelude = textwrap.dedent(f"""
        import resource, sys
        import bench.suite, bench.cli
        vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + {memory_mb} * 2**20, vm + {memory_mb} * 2**20))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s} s"
    return done.stdout + done.stderr


# --- aliases -----------------------------------------------------------------------------------


def test_alias_bomb_is_refused_fast_in_bounded_memory(tmp_path):
    bomb = alias_bomb()
    assert len(bomb.encode()) < 700  # the reported file was 610 bytes
    path = write(tmp_path, bomb, "bomb.yaml")
    out = run_bounded(f"""
        from bench.suite import SuiteError, expand, load_suite
        try:
            expand(load_suite({str(path)!r}), {str(path)!r})
            print('ACCEPTED')
        except SuiteError as exc:
            print('REFUSED', exc)
    """)
    assert f"REFUSED {path}:2: anchor &a: anchors and aliases are not allowed" in out, out


def test_validate_refuses_the_bomb_through_the_cli(tmp_path):
    path = write(tmp_path, alias_bomb(), "bomb.yaml")
    out = run_bounded(f"""
        from bench.cli import main
        print('RC', main(['validate', {str(path)!r}]))
    """)
    assert "RC 2" in out and "anchors and aliases are not allowed" in out and "Traceback" not in out, out


def test_key_lines_does_not_expand_aliases():
    # the line walker is what expanded the bomb: it must refuse it, fast, in bounded memory
    out = run_bounded(f"""
        import time
        from bench.yaml_lines import key_lines
        started = time.perf_counter()
        try:
            key_lines({alias_bomb()!r})
            print('ACCEPTED')
        except Exception as exc:
            print('REFUSED', exc, 'in', round(time.perf_counter() - started, 1), 's')
    """)
    # bounded by the child's 512 MB cap and 60 s timeout: an expanding walker dies there instead
    assert "REFUSED 2: anchor &a: anchors and aliases are not allowed" in out, out


def test_a_lone_alias_is_refused_with_its_line(tmp_path):
    # no anchor at all (an alias to nothing), and an alias used as a mapping key
    path = write(tmp_path, "name: t\nmatrix:\n  method: [sft]\n  seed: *nowhere\n")
    with pytest.raises(SuiteError, match=r"s.yaml:4: alias \*nowhere: anchors and aliases are not allowed"):
        load_suite(path)


# --- encodings and binary files ----------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding,expected",
    [
        ("utf-16", ":1: the file is UTF-16 text (byte-order mark); save it as UTF-8"),
        ("utf-32", ":1: the file is UTF-32 text (byte-order mark); save it as UTF-8"),
        ("utf-16-le", ":1: NUL byte at offset 1: a binary file, or UTF-16/32 text"),
        ("utf-16-be", ":1: NUL byte at offset 0: a binary file, or UTF-16/32 text"),
    ],
)
def test_utf16_and_utf32_suites_are_refused(tmp_path, encoding, expected):
    path = write(tmp_path, textwrap.dedent(GOOD).lstrip().encode(encoding))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert f"{path}{expected}" in str(err.value)


def test_binary_suite_is_refused(tmp_path):
    blob = b"\x89PNG\r\n\x1a\n" + bytes(random.Random(0).randrange(256) for _ in range(2000))
    path = write(tmp_path, blob, "image.yaml")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and ("NUL byte at offset" in message or "not UTF-8: byte 0x" in message), message


def test_latin1_suite_names_offset_and_line(tmp_path):
    path = write(tmp_path, "name: t\ndescription: caf\xe9\nmatrix: {method: [sft]}\n".encode("latin-1"))
    with pytest.raises(SuiteError, match=r"s.yaml:2: not UTF-8: byte 0xe9 at offset 24; save the file as UTF-8"):
        load_suite(path)


@pytest.mark.parametrize(
    "child,expected",
    [
        (textwrap.dedent(GOOD).encode("utf-16"), "child.yaml:1: the file is UTF-16 text"),
        (b"name: c\ndescription: \xff\xfe\n", "child.yaml:2: not UTF-8: byte 0xff at offset 21"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(64), "child.yaml:1: NUL byte at offset 7"),
        (b"name: c\nmatrix:\n  method: [sft]\n  method: [grpo_rm]\n", "child.yaml:4: duplicate key 'method' (first on line 3, again on line 4)"),
        (alias_bomb().encode(), "child.yaml:2: anchor &a: anchors and aliases are not allowed"),
    ],
)
def test_included_files_are_read_as_defensively_as_suites(tmp_path, child, expected):
    write(tmp_path, child, "child.yaml")
    parent = write(tmp_path, "name: parent\ninclude: [child.yaml]\n", "parent.yaml")
    with pytest.raises(SuiteError) as err:
        load_suite(parent)
    assert expected in str(err.value)


def test_oversized_suite_file_is_refused_before_parsing(tmp_path):
    path = write(tmp_path, "name: t\ndescription: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(SuiteError, match=r"s.yaml:1: larger than 1024 KiB"):
        load_suite(path)


# --- what composing refuses, beyond the corpus ----------------------------------------------------


@pytest.mark.parametrize(
    "document,expected",
    [
        ("name: t\n? [a, b]\n: 1\n", "2: a key must be a string, not a list"),
        ("name: t\n~: 1\n", "2: key '~' is read as null, not a string"),
        ("name: t\n1.5: x\n", "2: key '1.5' is read as float, not a string"),
        ("name: !!str t\n", "1: explicit tag tag:yaml.org,2002:str: tags are not allowed"),
        ("name: !custom t\n", "1: explicit tag !custom: tags are not allowed"),
        ("name: t\ndescription: \"\\ud800\"\n", "2: a lone surrogate (U+D800)"),
        ("name: t\ndescription: \"bell \\a\"\n", "2: a control character (U+0007)"),
        ("name: t\ndescription: \x01\n", "not valid YAML: character U+0001 is not allowed"),
        ("name: t\nmatrix: {method: [sft]}\n---\nname: u\n", "3: not valid YAML: expected a single document in the stream, but found another document"),
        ("name: t\nmatrix:\n  method: [sft]\n  seed: " + "{a: " * 60 + "0" + "}" * 60 + "\n", "4: nested deeper than 50 levels"),
        ("name: t\nmatrix:\n  method: [sft]\n  seed:\n" + "".join("  " * i + "k:\n" for i in range(2, 62)), "52: nested deeper than 50 levels"),
    ],
)
def test_composer_refusals(tmp_path, document, expected):
    path = write(tmp_path, document.encode())
    with pytest.raises(SuiteError) as err:
        expand(load_suite(path), path)
    assert f"{path}:" in str(err.value) and expected in str(err.value), str(err.value)


def test_dates_are_text_and_invalid_dates_do_not_crash(tmp_path):
    path = write(tmp_path, GOOD.replace("name: t", "name: t\ndescription: 2020-02-30"))
    assert load_suite(path).description == "2020-02-30"


def test_resource_strings_refuse_injection_but_keep_real_values(tmp_path):
    from bench.suite import ResourceProfile

    ok = ResourceProfile(partition="gpu-a100", account="proj_42", qos="normal", constraint="a100|h100&ib",
                         extra={"exclusive": True, "nodelist": "node[01-04],node7", "mail-user": "me@example.org", "gres": "gpu:2"})
    assert ok.extra["nodelist"] == "node[01-04],node7"
    for field in ("partition", "account", "qos", "constraint"):
        with pytest.raises(ValueError, match="has characters an sbatch script must not get"):
            ResourceProfile(**{field: "x\n#SBATCH --wrap=id"})
    with pytest.raises(ValueError, match="is not an option name"):
        ResourceProfile(extra={"wrap\n#": "x"})
    with pytest.raises(ValueError, match="has characters an sbatch script must not get"):
        ResourceProfile(extra={"comment": "two words"})


# --- command-line overrides --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,expected",
    [
        ("=", "-o =: '' is not a dotted key path"),
        ("a..b=1", "-o a..b=1: 'a..b' is not a dotted key path"),
        ("train.lr", "-o train.lr: a command-line override looks like key.path=value"),
        ("train.lr=[1", "-o train.lr=[1: not valid YAML: "),
        ("train.lr={a: 1", "-o train.lr={a: 1: not valid YAML: "),
        ("train.lr=*x", "-o train.lr=*x: alias *x: anchors and aliases are not allowed"),
        ("train.lr=!!python/name:os.system", "-o train.lr=!!python/name:os.system: explicit tag"),
        ("train={lr: 1, lr: 2}", "-o train={lr: 1, lr: 2}: duplicate key 'lr'"),
        ("seed=" + "[" * 20000, "nested deeper than 50 levels"),
        ("data.data_root=a\x00b", "-o 'data.data_root=a\\x00b': not valid YAML: character U+0000"),
        ("data.data_root=\"a\\0b\"", "a NUL character (U+0000)"),
        ("train.epochs=" + "9" * 5000, "cannot read the value"),
    ],
)
def test_bad_overrides_are_one_line_errors_from_the_command_line(tmp_path, override, expected):
    path = write(tmp_path, GOOD)
    with pytest.raises(SuiteError) as err:
        expand(load_suite(path), path, [override])
    message = str(err.value)
    assert message.startswith("-o ") and "\n" not in message and str(path) not in message, message
    assert expected in message, message


@pytest.mark.parametrize("override", ["=", "a..b=1", "train.lr", "train.lr=[1", "train.lr=*x"])
def test_validate_prints_override_errors_without_traceback(tmp_path, capsys, override):
    path = write(tmp_path, GOOD)
    assert main(["validate", str(path), "-o", override]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"-o {override}") and "\n" not in out and "Traceback" not in out, out


def test_good_overrides_apply_and_a_bad_one_among_them_is_named(tmp_path):
    path = write(tmp_path, GOOD)
    specs = expand(load_suite(path), path, ["train={epochs: 2}", "train.lr=2e-4", "data.params.train_size=64"])
    assert {(s.config.train.epochs, s.config.train.lr, s.config.data.params["train_size"]) for s in specs} == {(2, 2e-4, 64)}
    with pytest.raises(SuiteError, match=r"^-o data.params.train_size=\[64: not valid YAML"):
        expand(load_suite(path), path, ["train.lr=2e-4", "data.params.train_size=[64"])


# --- how many runs -----------------------------------------------------------------------------


def test_matrix_of_10001_runs_is_refused_before_any_is_built(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_MAX_RUNS", raising=False)
    seeds = ", ".join(str(i) for i in range(10_001))
    path = write(tmp_path, GOOD.replace("method: [sft, grpo_rm]\n  seed: [0, 1]", f"method: [sft]\n  seed: [{seeds}]"))
    import bench.suite

    built = []
    monkeypatch.setattr(bench.suite, "_tree", lambda *a, **k: built.append(1))  # counts matrix points built
    with pytest.raises(SuiteError, match=r"s.yaml:8: matrix: the suite expands to 10,001 runs .* more than the limit of 10,000; .* --max-runs 10001"):
        expand(load_suite(path), path)
    assert built == []  # refused from the axis lengths alone: not one run was built


def test_max_runs_flag_and_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BENCH_MAX_RUNS", raising=False)  # restored after the test, whatever main sets
    path = write(tmp_path, GOOD)  # 4 runs
    assert main(["validate", str(path), "--max-runs", "3"]) == 2
    assert "expands to 4 runs" in capsys.readouterr().out
    # the command's own later expansions (launcher stages, Slurm jobs it submits) read the limit from the
    # environment while it runs; once it returns, the caller's environment is as it was
    assert "BENCH_MAX_RUNS" not in os.environ
    assert main(["validate", str(path), "--max-runs", "4"]) == 0
    monkeypatch.setenv("BENCH_MAX_RUNS", "2")
    with pytest.raises(SuiteError, match="more than the limit of 2"):
        expand(load_suite(path), path)
    assert len(expand(load_suite(path), path, max_runs=4)) == 4
    monkeypatch.setenv("BENCH_MAX_RUNS", "lots")
    assert main(["validate", str(path)]) == 2
    assert "$BENCH_MAX_RUNS='lots': not a whole number" in capsys.readouterr().out


def test_run_count_includes_tuning_runs_and_included_suites(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_MAX_RUNS", raising=False)
    from bench.suite import planned_runs

    selecting = write(tmp_path, GOOD + "select:\n  tune: {train.lr: [1.0e-4, 2.0e-4, 3.0e-4]}\n  seeds: [0, 1]\n", "sel.yaml")
    assert planned_runs(load_suite(selecting)) == 4 + 2 * 3 * 2  # finals + groups × grid × tuning seeds
    parent = write(tmp_path, "name: both\ninclude: [sel.yaml, s2.yaml]\n", "both.yaml")
    write(tmp_path, GOOD.replace("name: t", "name: u"), "s2.yaml")
    assert planned_runs(load_suite(parent)) == 16 + 4
    with pytest.raises(SuiteError, match="expands to 20 runs .*with included suites"):
        expand(load_suite(parent), parent, max_runs=19)


# --- fuzzing -------------------------------------------------------------------------------------

CORPUS = sorted((ROOT / "tests" / "bad_suites").glob("*.yaml")) + sorted((ROOT / "suites").glob("*.yaml"))
SEEDS = [p.read_bytes() for p in CORPUS if p.stat().st_size < 8192]  # the 20,000-bracket file is covered by the corpus test

KEYS = ["name", "description", "defaults", "methods", "matrix", "resources", "profile", "evaluations", "expected", "data_root",
        "select", "include", "method", "seed", "backbone", "data", "train", "model", "params", "img_size", "train_size", "lr",
        "epochs", "batch_size", "eval_splits", "grpo_rm", "sft", "epsilon", "group_size", "partition", "extra", "tune", "seeds",
        "gpus", "mem_gb", "train.lr", "method.params.epsilon", "data.name", "weights", "tolerance", "value"]
NAMES = ["sft", "grpo_rm", "dinov2_tiny", "random", "fmnist_composites", "voc2012", "id", "shift", "heldout", "default", "t",
         "s.yaml", "~", "..", "~no_such_user_for_bench/x", "/dev/null", "a\x00b", "x\n#SBATCH --wrap=id", "\u202e", "2020-02-30"]
SYNTAX = ":-[]{},&*!|>'\"#%@`?<=~.\\\n \t0123456789aeTn_"
# byte tokens for the soup: YAML syntax, hostile constructs, and bytes that are not UTF-8
TOKENS = [b"name: t\n", b"matrix:\n", b"  method: [sft, grpo_rm]\n", b"  seed: ", b"defaults:\n", b"  data: ", b"methods:\n",
          b"  grpo_rm: ", b"resources:\n", b"  gpu: {partition: ", b"data_root: ", b"include: [", b"&a ", b"*a ", b"<<: ",
          b"!!python/object/apply:os.system ", b"!!str ", b"? ", b": ", b"- ", b"[", b"]", b"{", b"}", b", ", b"\n", b"\n  ",
          b"\t", b"'", b'"', b"\\0", b"\x00", b"\xff", b"\xfe\xff", b"\xc3", b"#", b"1e400", b".inf", b"-5", b"true",
          b"99999999999999999999999999999999", b"[" * 60, b"---\n"]

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(NAMES) | st.text(alphabet=SYNTAX, max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
                      max_leaves=25)
sections = st.fixed_dictionaries({}, optional={
    "backbone": st.fixed_dictionaries({"name": st.just("dinov2_tiny"), "weights": st.just("random"), "img_size": st.just(28)}) | values,
    "data": st.fixed_dictionaries({}, optional={"name": st.sampled_from(NAMES) | values, "params": values, "eval_splits": values,
                                                "data_root": scalars}) | values,
    "train": st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "head_lr", "grad_clip", "typo"]), scalars, max_size=3),
    "method": values, "seed": scalars,
})
# suite-shaped documents reach expand(); arbitrary mappings exercise the schema's edges
suites = st.fixed_dictionaries({"name": st.just("t") | scalars}, optional={
    "defaults": sections | values,
    "methods": st.dictionaries(st.sampled_from(["sft", "grpo_rm", "grpo"]) | st.text(SYNTAX, max_size=4), values, max_size=3) | values,
    "matrix": st.dictionaries(st.sampled_from(["method", "seed", "profile", "train.lr", "data.name", "method.params.epsilon", "a..b", ""]),
                              st.lists(scalars | values, max_size=4), max_size=4) | values,
    "resources": st.dictionaries(st.sampled_from(["default", "gpu"]) | st.text(SYNTAX, max_size=4),
                                 st.dictionaries(st.sampled_from(["gpus", "partition", "mem_gb", "extra", "constraint"]), values, max_size=3),
                                 max_size=2) | values,
    "profile": scalars, "data_root": scalars, "evaluations": values, "expected": values, "select": values, "include": values,
})
documents = suites | st.dictionaries(st.sampled_from(KEYS), values, max_size=8)

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PER_EXAMPLE_S = 30  # generous: catches blow-ups (an expanded alias bomb takes minutes and GBs), never machine load
MAX_RSS_GROWTH_MB = 200


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def check_document(folder: Path, data: bytes) -> None:
    """load_suite + expand on ``data``: runs, or SuiteError; anything else fails the test."""
    path = folder / "s.yaml"
    path.write_bytes(data)
    started = time.perf_counter()
    try:
        expand(load_suite(path), path)
    except SuiteError:
        pass
    elapsed = time.perf_counter() - started
    assert elapsed < PER_EXAMPLE_S, f"{elapsed:.1f} s for {data[:300]!r}"


@pytest.fixture(scope="module")
def rss_budget():
    before = _max_rss_mb()
    yield
    grown = _max_rss_mb() - before
    assert grown < MAX_RSS_GROWTH_MB, f"max RSS grew by {grown:.0f} MB while fuzzing"


@FUZZ
@given(doc=documents, style=st.sampled_from(["block", "flow"]))
def test_fuzz_structured_documents(tmp_path, rss_budget, doc, style):
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=style == "flow")
    check_document(tmp_path, text.encode())


@FUZZ
@given(parts=st.lists(st.sampled_from(TOKENS) | st.text(alphabet=SYNTAX, max_size=6).map(str.encode) | st.binary(max_size=3), max_size=60))
def test_fuzz_yaml_syntax_soup(tmp_path, rss_budget, parts):
    check_document(tmp_path, b"".join(parts))


@FUZZ
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace", "dupline", "swaplines"]),
                                                        st.integers(0, 4000), st.binary(min_size=1, max_size=8)), min_size=1, max_size=6))
def test_fuzz_mutated_suites(tmp_path, rss_budget, seed, edits):
    data = bytearray(seed)
    for op, at, blob in edits:
        at = at % (len(data) + 1)
        if op == "insert":
            data[at:at] = blob
        elif op == "delete":
            del data[at:at + len(blob)]
        elif op == "replace":
            data[at:at + len(blob)] = blob
        else:
            lines = bytes(data).split(b"\n")
            i = at % len(lines)
            j = (i + 1 + blob[0]) % len(lines)
            if op == "dupline":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    check_document(tmp_path, bytes(data))
