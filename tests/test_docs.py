"""The README and docs/ stay true: short README, no dead links or anchors, every docs page reachable
from the README, only real `bench` subcommands and flags, and only tests that exist cited as
evidence. Cheap: reads text files and builds `bench.cli.parser()`; trains nothing."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
README_MAX_LINES = 150

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
BENCH_CMD = re.compile(r"(?:^|(?<=[\s/(`=]))bench[ \t]+([a-z][\w-]*)(?:[ \t]+([a-z][\w-]*)(?![^\s`]))?")
FLAG = re.compile(r"(?<!\S)(--?[A-Za-z][\w-]*)")


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def markdown_files() -> list[Path]:
    return [README, *doc_pages()]


def strip_code(text: str) -> str:
    """Text outside fenced blocks and code spans (links inside code are not links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub("code", text)


def code_fragments(text: str) -> list[str]:
    """Every line of every fenced block, and every inline code span outside them."""
    fragments: list[str] = []
    for block in FENCE.finditer(text):
        fragments.extend(block.group(0).splitlines()[1:-1])
    fragments.extend(m.group(2) for m in CODE_SPAN.finditer(FENCE.sub("", text)))
    return fragments


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed (letters of
    any script, digits, `_` and `-` stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(strip_code(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]  # no http:, mailto:


def resolve(source: Path, target: str) -> tuple[Path, str]:
    file_part, _, fragment = target.partition("#")
    dest = (source.parent / file_part).resolve() if file_part else source.resolve()
    return dest, fragment


# ------------------------------------------------------------------ size and links


def test_readme_is_at_most_150_lines() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (limit {README_MAX_LINES})"


def test_there_are_docs_pages() -> None:
    assert doc_pages(), "docs/ holds no .md pages"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_anchor(page: Path) -> None:
    problems = []
    for target in relative_links(page):
        dest, fragment = resolve(page, target)
        if not dest.exists():
            problems.append(f"{target}: no such file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
            continue
        if not dest.is_relative_to(ROOT):
            problems.append(f"{target}: points outside the repository")
        if fragment:
            if dest.suffix != ".md":
                problems.append(f"{target}: #{fragment} on a file that is not Markdown")
            elif fragment.lower() not in anchors(dest):
                problems.append(f"{target}: no heading with anchor #{fragment} in {dest.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {resolve(README, t)[0] for t in relative_links(README)}
    orphans = [p.relative_to(ROOT).as_posix() for p in doc_pages() if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_the_demo_results_table_is_one_delimited_table_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## What the demo shows\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README has no section '## What the demo shows'"
    begin, end = "<!-- BEGIN demo results table", "<!-- END demo results table -->"
    assert section.group(1).count(begin) == 1 and section.group(1).count(end) == 1
    table = section.group(1).split(begin, 1)[1].split(end, 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows and rows[0].startswith("| evaluation | SFT") and "GRPO-RM" in rows[0], rows[:1]
    for needle in ("test (ID)", "OOD average", "test NLL", "test ECE"):
        assert any(needle in r for r in rows), f"demo table lost its '{needle}' row"
    assert text.count(begin) == 1, "the demo results table must exist once"


def test_the_readme_suite_example_is_suites_demo_yaml() -> None:
    """The README says its annotated example is suites/demo.yaml (without the description)."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)
    assert blocks, "README has no YAML suite example"
    example = yaml.safe_load(blocks[0])
    demo = yaml.safe_load((ROOT / "suites" / "demo.yaml").read_text(encoding="utf-8"))
    demo.pop("description", None)
    assert example == demo


# ------------------------------------------------------------------ bench commands


@pytest.fixture(scope="module")
def cli() -> argparse.ArgumentParser:
    from bench.cli import parser

    return parser()


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def bench_commands(path: Path) -> list[tuple[str, str | None, str]]:
    """(subcommand, next word, rest of the command up to a `#` comment) for each `bench …` in code."""
    found = []
    for fragment in code_fragments(path.read_text(encoding="utf-8")):
        for m in BENCH_CMD.finditer(fragment):
            rest = re.split(r"\s#", fragment[m.end():], maxsplit=1)[0]
            found.append((m.group(1), m.group(2), rest))
    return found


def test_the_readme_shows_the_main_subcommands(cli: argparse.ArgumentParser) -> None:
    mentioned = {sub for sub, _, _ in bench_commands(README)}
    for sub in ("validate", "run", "status", "report", "ls", "config", "data"):
        assert sub in mentioned, f"README shows no `bench {sub}`"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_bench_subcommand_and_flag_in_code_is_real(page: Path, cli: argparse.ArgumentParser) -> None:
    commands = subparsers(cli)
    assert commands, "bench.cli.parser() has no subcommands"
    problems = []
    for sub, word, rest in bench_commands(page):
        if sub not in commands:
            problems.append(f"`bench {sub}`: not a subcommand (real: {sorted(commands)})")
            continue
        target = commands[sub]
        nested = subparsers(target)
        if nested:
            if word not in nested:
                problems.append(f"`bench {sub} {word}`: not a subcommand of `bench {sub}` ({sorted(nested)})")
                continue
            target = nested[word]
        elif word:
            rest = f"{word} {rest}"
        flags = set(target._option_string_actions)
        for flag in FLAG.findall(rest):
            if flag not in flags:
                problems.append(f"`bench {sub}` has no option {flag}")
    assert not problems, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_the_subcommand_check_can_fail(cli: argparse.ArgumentParser, tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text("Run `bench frobnicate x.yaml` or\n\n```bash\n.venv/bin/bench run s.yaml --nope\n```\n")
    found = bench_commands(page)
    assert ("frobnicate", None, "x.yaml") in [(s, w, r.strip()) for s, w, r in found]
    assert any(s == "run" and "--nope" in r for s, _, r in found)
    assert "frobnicate" not in subparsers(cli)


# ------------------------------------------------------------------ cited tests and paths


def defined_tests() -> dict[str, set[str]]:
    """test file name -> names of the test functions it defines."""
    out: dict[str, set[str]] = {}
    for f in TESTS.glob("test_*.py"):
        out[f.name] = set(re.findall(r"^\s*(?:async\s+)?def\s+(test_\w+)\s*\(", f.read_text(encoding="utf-8"), re.M))
    return out


def test_every_test_the_reliability_page_cites_exists() -> None:
    page = DOCS / "reliability.md"
    tests = defined_tests()
    every = set().union(*tests.values())
    spans = [m.group(2) for m in CODE_SPAN.finditer(page.read_text(encoding="utf-8"))]
    cited = 0
    problems = []
    for span in spans:
        for m in re.finditer(r"(?:(?:tests/)?(test_\w+\.py)::)?\b(test_\w+)\b(?!\.py)", span):
            file, name = m.group(1), m.group(2)
            cited += 1
            if file:
                if file not in tests:
                    problems.append(f"{file}: no such test file")
                elif name not in tests[file]:
                    problems.append(f"{file}::{name}: not defined there")
            elif name not in every:
                problems.append(f"{name}: defined in no tests/test_*.py")
        for file in re.findall(r"\b(test_\w+\.py)\b", span):
            if file not in tests:
                problems.append(f"{file}: no such test file")
    assert cited >= 10, f"docs/reliability.md cites only {cited} tests; the table lost its evidence"
    assert not problems, "docs/reliability.md cites:\n  " + "\n  ".join(problems)


REPO_PATH = re.compile(r"^((?:bench|suites|tests|benchmarks|slurm|\.ci)/[\w./-]*[\w/])")


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_in_code_spans_exists(page: Path) -> None:
    missing = []
    for fragment in code_fragments(page.read_text(encoding="utf-8")):
        m = REPO_PATH.match(fragment.strip())
        example_message = m and re.match(r":\d", fragment.strip()[m.end():])  # `suites/x.yaml:7: …`
        if m and not example_message and not any(c in fragment for c in "<*{…"):
            if not (ROOT / m.group(1)).exists():
                missing.append(m.group(1))
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_github_slugs() -> None:
    assert github_slug("What GRPO-RM reduces to at μ = 1") == "what-grpo-rm-reduces-to-at-μ--1"
    assert github_slug("`make reproduce-table`") == "make-reproduce-table"
    assert github_slug("Claims (`expected:`) and their verdicts") == "claims-expected-and-their-verdicts"
    assert github_slug("The fused per-pixel form (`bench/methods/grpo_rm_fused.py`)") == (
        "the-fused-per-pixel-form-benchmethodsgrpo_rm_fusedpy"
    )
