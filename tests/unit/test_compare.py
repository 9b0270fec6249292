"""Comparison report: Figure 2 as a table, overlaid plots, per-run lines; comparison definitions."""

import dataclasses
import json
import textwrap
import time
from types import SimpleNamespace

import pytest

from orchestrator import analysis, compare, report, scenario
from orchestrator.errors import ScenarioError
from tests.conftest import ROOT


def test_figure2_table_differences_and_improvement():
    stats = {"stock": {"min": 2000, "mean": 10000, "median": 8000, "p99": 30000, "max": 40000},
             "natsume": {"min": 1000, "mean": 4000, "median": 4000, "p99": 12000, "max": 50000}}
    table = report.figure2_table(stats, "stock", report.UNITS["host"])
    assert "| mean | 10.00 | 4.00 | +6.00 | +60.0 % |" in table
    assert "| max | 40.00 | 50.00 | -10.00 | -25.0 % |" in table  # worse is shown as worse
    table = report.figure2_table(stats, "stock", report.UNITS["instructions"])
    assert "statistic | stock (instructions) | natsume (instructions)" in table
    assert "| mean | 10,000 | 4,000 | +6,000 | +60.0 % |" in table


def _fake_run(tmp_path, name, latencies, code=0, timing="instructions", paths=True, own=None):
    """own: the RT pCPU's share of each latency (the vCPU plugin's split), or None: no split."""
    from orchestrator.breakdown import SEGMENT_NAMES, Breakdown
    folder = tmp_path / f"{name}-run"
    folder.mkdir()
    samples = [analysis.Sample(i, 1, 29, 1000 * i, 1000 * i + lat, lat, float(lat)) for i, lat in enumerate(latencies)]
    segs = [Breakdown("running", dict.fromkeys(SEGMENT_NAMES, lat // 6)) for lat in latencies] if paths else None
    splits = [{"rt_own": int(lat * own), "others": lat - int(lat * own), "idle_skipped": 0}
              for lat in latencies] if own is not None else None
    analysis.write_samples_csv(folder / "samples.csv", samples, segs, splits)
    summary = {"latency_ns": analysis.stats([float(x) for x in latencies]), "accelerator": "tcg",
               "latency_ticks": analysis.stats(latencies), "timing": timing,
               "calibration": {"ticks_per_instruction": 1.0},
               "paired": len(samples), "unpaired_pct": 0.0, "coalesced_vmm": 2,
               "paths": {"running": len(latencies)}, "absorbed": {"rt_guest_rx": 500},
               "traffic": {"measured": {"frames": 1024}, "load": {"frames": 99}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return SimpleNamespace(bundle=folder, code=code, checks=[])


def _two(s):
    return scenario.Comparison("cmp", "two runs", (s, s.__class__(**{**s.__dict__, "name": "other"})), repeats=2)


def test_report_has_verdict_table_cis_breakdown_plots_and_runs(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = _two(s)
    base = [5000 + (i % 7) * 100 for i in range(300)]
    fast = [3000 + (i % 7) * 100 for i in range(300)]
    outcomes = [(comp.scenarios[0], _fake_run(tmp_path, "a1", base)), (comp.scenarios[1], _fake_run(tmp_path, "b1", fast)),
                (comp.scenarios[0], _fake_run(tmp_path, "a2", base)), (comp.scenarios[1], _fake_run(tmp_path, "b2", fast))]
    text = compare.write_report(comp, outcomes, tmp_path)
    assert "## Verdict" in text and "- other is faster than iso-stock: median 3,300 vs 5,300 instructions" in text
    assert "Timing: instructions" in text and "Runs were interleaved (2 per scenario)" in text
    assert "- interrupts on the `running` path only" in text and text.count("other is faster than iso-stock") == 2
    assert "| median | 5,300 | 3,300 | +2,000 | +37.7 % |" in text
    assert "| other | median | 5,300 | 3,300 | -2,000 | -2,000 to -2,000 | -37.7 % |" in text
    assert "| iso-stock | 2 | 5,300, 5,300 | 0.00 % |" in text  # run-to-run spread
    assert "| other | running | 600 |" in text  # breakdown, runs pooled
    for png in ("latency-cdf.png", "latency-box.png", "breakdown.png"):
        assert (tmp_path / png).exists()
    assert "| other | stock | instructions | 0 | 300 | 0.00 % | 2 | 300 / 0 / 0 / 0 / 0 | 1.00000 | 1024 / 99 | 500 | – |" \
        in text
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["baseline"] == "iso-stock" and saved["verdicts"]["other"]["outcome"] == "faster"


def test_report_splits_each_span_into_the_rt_pcpus_own_and_the_others_instructions(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = _two(s)
    outcomes = [(comp.scenarios[0], _fake_run(tmp_path, "a1", [4000] * 50, own=0.5)),
                (comp.scenarios[1], _fake_run(tmp_path, "b1", [3000] * 50))]  # the other run had no plugin
    text = compare.write_report(comp, outcomes, tmp_path)
    assert "## Whose instructions a span holds" in text
    assert "| iso-stock | all | 50 | 4,000 / 4,000 | 2,000 / 2,000 | 2,000 / 2,000 | 0 / 0 |" in text
    assert "| other |" not in text.split("## Whose instructions")[1].split("## Runs")[0]


def test_same_distributions_give_no_detectable_difference(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = _two(s)
    same = [4000 + (i * 37) % 1000 for i in range(400)]
    outcomes = [(comp.scenarios[0], _fake_run(tmp_path, "a", same)), (comp.scenarios[1], _fake_run(tmp_path, "b", same))]
    assert "- no difference detectable between other and iso-stock" in compare.write_report(comp, outcomes, tmp_path)


def test_runs_in_different_timing_modes_are_not_compared(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = _two(s)
    outcomes = [(comp.scenarios[0], _fake_run(tmp_path, "a", [5000, 6000])),
                (comp.scenarios[1], _fake_run(tmp_path, "b", [2000, 3000], timing="host"))]
    text = compare.write_report(comp, outcomes, tmp_path)
    assert "**No comparison**: the runs were made in different timing modes" in text


def test_repeats_interleave_the_scenarios():
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = scenario.Comparison("cmp", "", (s, s.__class__(**{**s.__dict__, "name": "b"})), repeats=3)
    assert [(r, x.name) for r, x in comp.schedule()] == [(1, "iso-stock"), (1, "b"), (2, "iso-stock"), (2, "b"),
                                                         (3, "iso-stock"), (3, "b")]
    assert scenario.load_target(ROOT / "testbed.yaml", "stock-vs-natsume").repeats == 2


def test_report_without_samples_says_so(tmp_path):
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
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
            scenarios: [iso-stock, load-off-stock]
        """)
    with pytest.raises(ScenarioError, match="other measurement settings"):
        scenario.load_target(path, "bad")


def test_comparison_of_unknown_or_boot_only_scenarios(tmp_path):
    path = _file_with(tmp_path, """\
        comparisons:
          bad:
            scenarios: [iso-stock, nope]
          boot:
            scenarios: [boot-stock, boot-stock-host]
        """)
    with pytest.raises(ScenarioError) as info:
        scenario.validate_file(path)
    text = str(info.value)
    assert "comparisons.bad.scenarios: no scenario named 'nope'" in text
    assert "scenario 'boot-stock' measures nothing" in text


def test_an_interrupted_run_stops_the_comparison(tmp_path, monkeypatch):
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = _two(s)
    started = []

    def fake_run(file, sc, results, say, pack=True, sets=(), pool=None, turn=None):
        if turn is not None:  # a first round boots side by side: the runs start measuring in turn
            turn.wait()
        started.append(sc.name)
        folder = results / f"{sc.name}-{len(started)}"
        folder.mkdir(parents=True)
        return SimpleNamespace(bundle=folder, code=2, checks=[], interrupted=len(started) == 2, error=None)

    monkeypatch.setattr(compare, "run", fake_run)
    outcome = compare.run_comparison(ROOT / "testbed.yaml", comp, tmp_path, lambda t: None,
                                     ensure_images=lambda variant, progress: None)
    assert started == ["iso-stock", "other"] and outcome.code == 2 and len(outcome.runs) == 2
    assert outcome.interrupted
    assert (outcome.bundle / "report.md").exists() and outcome.archive.exists()


def test_machines_booted_side_by_side_outlive_their_threads(tmp_path, monkeypatch):
    """QEMU is started with PR_SET_PDEATHSIG, which fires when the *thread* that started it ends: the
    first round's threads must live until the pool has shut the machines down."""
    import subprocess
    from orchestrator import machine
    s = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    comp = _two(s)
    children = []

    def fake_run(file, sc, results, say, pack=True, sets=(), pool=None, turn=None):
        children.append(subprocess.Popen(["sleep", "60"], preexec_fn=machine._die_with_parent))
        if turn is not None:
            turn.wait()
        folder = results / f"{sc.name}-{len(children)}"
        folder.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(bundle=folder, code=0, checks=[], interrupted=False, error=None)

    def check_alive(self, graceful=True):
        time.sleep(0.3)  # a dead thread's child gets its SIGKILL at once
        alive.extend(c.poll() is None for c in children)

    alive = []
    monkeypatch.setattr(compare, "run", fake_run)
    monkeypatch.setattr(compare.BootPool, "_close", check_alive)
    try:
        compare.run_comparison(ROOT / "testbed.yaml", dataclasses.replace(comp, repeats=1), tmp_path,
                               lambda t: None, ensure_images=lambda variant, progress: None)
    finally:
        for c in children:
            c.kill()
            c.wait()
    assert alive == [True, True]


def test_a_comparison_builds_every_variants_images_before_its_first_run(tmp_path, monkeypatch):
    comp = scenario.load_target(ROOT / "testbed.yaml", "smoke-comparison")
    events = []

    def fake_run(file, sc, results, say, pack=True, sets=(), pool=None, turn=None):
        events.append(("run", sc.hypervisor.variant))
        folder = results / f"{sc.name}-{len(events)}"
        folder.mkdir(parents=True)
        return SimpleNamespace(bundle=folder, code=2, checks=[], interrupted=False, error=None)

    monkeypatch.setattr(compare, "run", fake_run)
    compare.run_comparison(ROOT / "testbed.yaml", comp, tmp_path, lambda t: None,
                           ensure_images=lambda variant, progress: events.append(("images", variant)))
    assert events[:2] == [("images", "natsume"), ("images", "stock")]
    assert [e[0] for e in events[2:]] == ["run"] * len(comp.schedule())


def test_a_failed_image_build_starts_no_run_and_names_the_stage(tmp_path, monkeypatch):
    from orchestrator.errors import ImageError
    comp = scenario.load_target(ROOT / "testbed.yaml", "smoke-comparison")
    monkeypatch.setattr(compare, "run", lambda *a, **k: pytest.fail("a run started"))

    def broken(variant, progress):
        raise ImageError(f"image xen-{variant}: build failed", log_path="/x/build.log")

    outcome = compare.run_comparison(ROOT / "testbed.yaml", comp, tmp_path, lambda t: None, ensure_images=broken)
    assert outcome.code == 2 and outcome.runs == []
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["runs"] == []
    assert "No run started: stage images failed" in (outcome.bundle / "report.md").read_text()
    assert "build failed" in (outcome.bundle / "stages.txt").read_text()
