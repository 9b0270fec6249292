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
    assert all(int(r["latency_cycles"]) > 0 and int(r["guest_tsc"]) > int(r["vmm_tsc"]) for r in rows)
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
