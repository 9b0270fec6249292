"""A short real measurement: stock Xen under load, stamps paired into a bundle."""

import csv
import json

import pytest

from orchestrator import run, scenario
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def measured():
    s = scenario.load(ROOT / "testbed.yaml", "smoke-stock")
    outcome = run.run(ROOT / "testbed.yaml", s, ROOT / "results", print)
    print(outcome.runner.table())
    return s, outcome


def test_measurement_passes_its_checks(measured):
    s, outcome = measured
    assert outcome.error is None, str(outcome.error)
    assert outcome.code == 0, outcome.checks
    assert {c["name"] for c in outcome.checks} == {"enough_samples", "unpaired", "positive_latencies",
                                                   "trace_complete"}


def test_samples_are_paired_positive_and_msi(measured):
    s, outcome = measured
    rows = list(csv.DictReader((outcome.bundle / "samples.csv").open()))
    assert len(rows) >= s.measurement.min_samples
    assert all(int(r["latency_ticks"]) > 0 and int(r["guest_tsc"]) > int(r["vmm_tsc"]) for r in rows)
    summary = json.loads((outcome.bundle / "summary.json").read_text())
    assert summary["irq_mode_guest"] == "msix"
    assert all("MSI" in x["kind"] for x in summary["xen_irqs_of_rt_guest"])
    assert summary["absorbed"]["rt_guest_rx"] > 0 and summary["absorbed"]["load_guest_rx"] > 0
    assert summary["traffic"]["measured"]["frames"] == s.measurement.bursts * s.measurement.frames_per_burst


def test_bundle_holds_plots_junit_and_sysinfo(measured):
    _, outcome = measured
    b = outcome.bundle
    for name in ("latency-histogram.png", "latency-cdf.png", "junit.xml", "raw/xentrace.bin",
                 "raw/rt-guest-dump.log", "raw/traffic.json", "raw/sysinfo-before/rt-guest-interrupts.txt",
                 "raw/sysinfo-after/xen-irqs.txt"):
        assert (b / name).exists(), name
    assert "MSI-X: Enable+" in (b / "raw/sysinfo-before/rt-guest-interrupts.txt").read_text()


def test_the_vcpu_plugin_splits_the_samples_into_own_and_others(measured):
    """Instruction timing's caveat made visible: the TCG plugin's records place (nearly) every sample, an
    interrupt on the running path is the RT pCPU's own work alone, and elapsed = own + others + skipped."""
    from orchestrator import analysis
    _, outcome = measured
    assert (outcome.bundle / "raw" / "vcpu-counts.bin").stat().st_size > 0
    split = json.loads((outcome.bundle / "summary.json").read_text())["vcpu_split"]
    assert split["split"] >= 0.9 * split["samples"], split
    assert split["paths"]["running"]["others"]["median"] == 0, split["paths"]["running"]
    for x, _ in analysis.read_samples_csv(outcome.bundle / "samples.csv"):
        if x.rt_own is not None:
            assert x.rt_own + x.others + x.idle_skipped == x.latency_ticks and x.rt_own > 0


def _hog(seconds, processes=1):
    """Busy host processes for the length of a run: instruction timing must not notice them."""
    import subprocess
    import sys
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(processes)]


def test_a_second_run_under_a_host_cpu_hog_repeats_the_median_and_the_p10(measured):
    """Instruction timing counts guest instructions and instruction pacing hands the frames in at
    the same instructions however slow the host is: the same scenario again, with a host core kept
    busy, gives the same median, p10 and median of the `running` path within 1 %. The number of
    samples and the share of the `woken` path are not asserted: each boot reaches the measurement in
    a state of its own (the boot's agent calls are host-timed), and 1,331 vs 1,221 samples, 164 vs 42
    woken, was seen with medians of 3,866 both."""
    from orchestrator import analysis
    s, first = measured
    hogs = _hog(1800)
    try:
        again = run.run(ROOT / "testbed.yaml", s, ROOT / "results", print)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert again.error is None, str(again.error)
    assert again.code == 0, again.checks
    runs = []
    for outcome in (first, again):
        rows = analysis.read_samples_csv(outcome.bundle / "samples.csv")
        ticks = sorted(x.latency_ticks for x, _ in rows)
        running = sorted(x.latency_ticks for x, b in rows if b is not None and b.path == "running")
        assert len(running) >= 5, f"{outcome.bundle}: only {len(running)} samples on the running path"
        runs.append({"p10": analysis.percentile(ticks, 0.1), "running median": analysis.percentile(running, 0.5),
                     "median": analysis.percentile(ticks, 0.5), "n": len(ticks)})
    print("repeatability:", runs)
    for stat in ("median", "p10", "running median"):
        a, b = runs[0][stat], runs[1][stat]
        assert abs(a - b) <= 0.01 * a, f"{stat}: {a} then {b} instructions under a host CPU hog"
