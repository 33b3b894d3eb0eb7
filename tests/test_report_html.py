"""The HTML report opens in headless Chromium (no server), its figures decode, and every number
in its tables equals the CSV written next to it."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.report import build_report
from bench.suite import load_suite
from report_fixtures import SUITE, write_suite

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (make test installs the Debian package 'chromium')")
NUMBER = re.compile(r"^([+−]?\d+\.\d+)(?: \[([+−]\d+\.\d+), ([+−]\d+\.\d+)\])?(?: ± (\d+\.\d+))?")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


class Tables(HTMLParser):
    """Cells (text, class) of every <table id=...> body row, as Chromium's DOM has them."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.root: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._class = ""
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.root = a
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table and self._in_body:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table and self._in_body:
            self._cell, self._class = [], a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(("".join(self._cell).strip(), self._class))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def number(text: str) -> float:
    return float(text.replace("−", "-"))


@pytest.mark.figures
def test_html_report_renders_in_chromium_and_its_tables_equal_the_csvs(tmp_path):
    text = SUITE + "expected:\n  - {quantity: delta, split: ood_avg, value: 4.26, tolerance: 1.0, source: paper}\n"
    path, specs = write_suite(tmp_path, skip={("grpo_rm", 2)}, fail={("sft", 1)}, text=text)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    page = out / "report.html"
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # nothing fetched from a server

    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Tables()
    parsed.feed(dom.stdout)
    figures = [p for p in report.files if p.suffix == ".png"]
    # bars, forest, id_vs_ood, curves, severity (no calibration bins in these results: no reliability diagram)
    assert parsed.root.get("data-images-ok") == "true" and parsed.root.get("data-images") == str(len(figures)) == "5"

    checked = 0
    for table in report.tables:
        csv = pd.read_csv(out / f"table_{table.key}.csv")
        rows = parsed.tables[f"table-{table.key}"]
        assert len(rows) == len(csv)
        for cells, (_, r) in zip(rows, csv.iterrows()):
            assert [c[0] for c in cells[:3]] == [r[c] for c in table.labels]  # dataset, protocol (calibration: metric), evaluation
            for (text, cls), prefix in zip(cells[3:], [*table.methods, "delta"]):
                m = NUMBER.match(text)
                assert m, text
                assert number(m.group(1)) == pytest.approx(round(r[f"{prefix}_mean"], 2), abs=1e-9)
                if pd.isna(r[f"{prefix}_ci_low"]):
                    assert m.group(4) is None
                else:
                    assert number(m.group(4)) == pytest.approx(round((r[f"{prefix}_ci_high"] - r[f"{prefix}_ci_low"]) / 2, 2), abs=1e-9)
                if prefix != "delta":
                    assert ("best" in cls) == (prefix in str(r["best"]).split(";"))
                checked += 1
    assert checked >= 3 * (1 + 7)

    expected = pd.read_csv(out / "expected.csv")
    rows = parsed.tables["table-expected"]
    assert len(rows) == len(expected) == 1
    actual = NUMBER.match(rows[0][3][0])
    assert number(actual.group(1)) == pytest.approx(round(expected["actual"].iloc[0], 2))
    assert rows[0][4] == (expected["verdict"].iloc[0], expected["verdict"].iloc[0])
    verdict = pd.read_csv(out / "verdict.csv")  # the box at the top: every Δ equal to its CSV
    rows = parsed.tables["table-verdict"]
    assert [cells[0][0] for cells in rows] == list(verdict["family"]) and [cells[1][0] for cells in rows] == list(verdict["setting"])
    for cells, r in zip(rows, verdict.itertuples()):  # one row per Δ: family, setting, quantity, Δ [CI], p, MDE, n
        m = NUMBER.match(cells[3][0])
        assert m and number(m.group(1)) == pytest.approx(round(r.mean, 2), abs=1e-9), cells
        assert (m.group(2) is None) == pd.isna(r.ci_low)
        if m.group(2) is not None:
            assert (number(m.group(2)), number(m.group(3))) == pytest.approx((round(r.ci_low, 2), round(r.ci_high, 2)), abs=1e-9)

    not_done = {cells[4][0] for cells in parsed.tables["not-done"]}
    assert not_done == {"failed", "pending"}

    shot = tmp_path / "shot.png"
    assert chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()).returncode == 0
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and figures were drawn, not a blank page
