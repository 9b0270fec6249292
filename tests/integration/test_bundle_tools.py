"""The bundle tools on bundles of real runs: show, reanalyze and compare on the downloaded-style
tarballs that test_measurement.py (smoke-stock) and test_natsume.py (smoke-comparison) left in
results/ during this session. It boots nothing: tests/integration/conftest.py runs it after them."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import SESSION_STARTED

pytestmark = pytest.mark.integration


def _tarballs(kind):
    """Finished bundles' tarballs in results/ made during this session, newest first."""
    found = []
    for tar in (ROOT / "results").glob("*.tar.gz"):
        folder = tar.parent / tar.name.removesuffix(".tar.gz")
        if tar.stat().st_mtime < SESSION_STARTED or not (folder / "manifest.json").exists():
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        measured = isinstance(manifest.get("scenario"), dict) and (folder / "samples.csv").exists()
        if (kind == "comparison" and "comparison" in manifest) or (kind == "run" and measured):
            found.append((tar.stat().st_mtime, tar, folder, manifest))
    return [f[1:] for f in sorted(found, key=lambda f: f[0], reverse=True)]


def _testbed(*args):
    res = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT, timeout=900)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_show_reanalyze_and_compare_a_real_runs_tarball(tmp_path):
    runs = _tarballs("run")
    if not runs:
        pytest.skip("no measurement bundle was made in this session: run it with tests/integration/test_measurement.py")
    tar, folder, manifest = runs[0]
    res = _testbed("show", tar)
    assert res.returncode == 0, res.stderr
    assert manifest["scenario"]["name"] in res.stdout
    assert re.search(r"^latency +\((instructions|µs, host clock)\)$", res.stdout, re.M), res.stdout  # the stats table's head
    assert "archive, read from a temporary copy" in res.stdout and "raw/:" in res.stdout

    # the current code reproduces this run's own evaluation from its raw records
    res = _testbed("reanalyze", tar, "--out", tmp_path / "re")
    assert res.returncode == manifest["exit_code"], res.stdout + res.stderr
    [again] = [p for p in (tmp_path / "re").iterdir() if p.is_dir()]
    assert (again / "samples.csv").read_text() == (folder / "samples.csv").read_text()
    redo = json.loads((again / "manifest.json").read_text())
    assert redo["reanalysis"]["producer"] == manifest["git"] and redo["reanalysis"]["changes"] == {}
    assert redo["reanalysis"]["inputs"]["tsc_khz"] == "logs/xl-info.txt"
    assert redo["reanalysis"]["inputs"]["traffic"] == "raw/traffic.json"
    assert (again / "report.html").exists() and (tmp_path / "re" / f"{again.name}.tar.gz").exists()

    # the original, its reanalysis and (if this session made one) a comparison's runs, side by side
    inputs = [tar, tmp_path / "re" / f"{again.name}.tar.gz"] + [c[0] for c in _tarballs("comparison")[:1]]
    res = _testbed("compare", *inputs, "--name", "bundle-tools", "--out", tmp_path / "cmp")
    # the comparison's exit code is its runs' worst (1 or 2 when an input run failed), not an error of its own
    assert res.returncode in (0, 1, 2) and "error:" not in res.stderr, res.stdout + res.stderr
    [cmp] = [p for p in (tmp_path / "cmp").iterdir() if p.is_dir()]
    text = (cmp / "report.md").read_text()
    assert "## Verdict" in text and "## Figure 2 as a table" in text and "## Sources" in text
    assert "no difference detectable between " + manifest["scenario"]["name"] in text  # same records, same result

    # the comparison's page in a real browser: not blank, no console message, report.png kept
    res = _testbed("show", cmp, "--screenshot")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (cmp / "report.png").exists() and "no console messages" in res.stdout
