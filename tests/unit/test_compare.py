"""Comparison report: Figure 2 as a table, overlaid plots, per-run lines; comparison definitions."""

import json
import textwrap
from types import SimpleNamespace

import pytest

from orchestrator import analysis, compare, report, scenario
from orchestrator.errors import ScenarioError
from tests.conftest import ROOT


def test_figure2_table_differences_and_improvement():
    stats = {"stock": {"min": 2000, "mean": 10000, "median": 8000, "p99": 30000, "max": 40000},
             "natsume": {"min": 1000, "mean": 4000, "median": 4000, "p99": 12000, "max": 50000}}
    table = report.figure2_table(stats, "stock")
    assert "| mean | 10.00 | 4.00 | +6.00 | +60.0 % |" in table
    assert "| max | 40.00 | 50.00 | -10.00 | -25.0 % |" in table  # worse is shown as worse


def _fake_run(tmp_path, name, latencies, code=0):
    folder = tmp_path / f"{name}-run"
    folder.mkdir()
    samples = [analysis.Sample(i, 1, 29, 1000 * i, 1000 * i + lat, lat, float(lat)) for i, lat in enumerate(latencies)]
    analysis.write_samples_csv(folder / "samples.csv", samples)
    summary = {"latency_ns": analysis.stats([float(x) for x in latencies]), "accelerator": "tcg",
               "paired": len(samples), "unpaired_pct": 0.0, "coalesced_vmm": 2,
               "absorbed": {"rt_guest_rx": 500},
               "traffic": {"measured": {"frames": 1024}, "load": {"frames": 99}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return SimpleNamespace(bundle=folder, code=code, checks=[])


def test_report_has_table_plots_and_runs(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "load-on-stock")
    comp = scenario.Comparison("cmp", "two runs", (s, s.__class__(**{**s.__dict__, "name": "other"})))
    outcomes = [(comp.scenarios[0], _fake_run(tmp_path, "a", [5000, 6000, 7000])),
                (comp.scenarios[1], _fake_run(tmp_path, "b", [2000, 3000, 4000]))]
    text = compare.write_report(comp, outcomes, tmp_path)
    assert "emulated time" in text and "one after the other in this one invocation" in text
    assert "| median | 6.00 | 3.00 | +3.00 | +50.0 % |" in text
    assert (tmp_path / "latency-cdf.png").exists() and (tmp_path / "latency-box.png").exists()
    assert "| other | stock | 0 | 3 | 0.00 % | 2 | 1024 / 99 | 500 | – |" in text
    assert json.loads((tmp_path / "comparison.json").read_text())["baseline"] == "load-on-stock"


def test_report_without_samples_says_so(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "load-on-stock")
    empty = tmp_path / "empty"
    empty.mkdir()
    comp = scenario.Comparison("cmp", "", (s, s))
    text = compare.write_report(comp, [(s, SimpleNamespace(bundle=empty, code=2, checks=[]))] * 2, tmp_path)
    assert "**No comparison**" in text


def _file_with(tmp_path, extra):
    """testbed.yaml with more comparisons (`extra` is a `comparisons:` block)."""
    path = tmp_path / "t.yaml"
    entries = textwrap.dedent(extra).split("\n", 1)[1]
    path.write_text((ROOT / "testbed.yaml").read_text().replace("comparisons:\n", "comparisons:\n" + entries, 1))
    return path


def test_comparison_needs_identical_measurements(tmp_path):
    path = _file_with(tmp_path, """\
        comparisons:
          bad:
            scenarios: [load-on-stock, load-off-stock]
        """)
    with pytest.raises(ScenarioError, match="other measurement settings"):
        scenario.load_target(path, "bad")


def test_comparison_of_unknown_or_boot_only_scenarios(tmp_path):
    path = _file_with(tmp_path, """\
        comparisons:
          bad:
            scenarios: [load-on-stock, nope]
          boot:
            scenarios: [boot-stock, boot-stock-icount]
        """)
    with pytest.raises(ScenarioError) as info:
        scenario.validate_file(path)
    text = str(info.value)
    assert "comparisons.bad.scenarios: no scenario named 'nope'" in text
    assert "scenario 'boot-stock' measures nothing" in text
