"""Natsume's variant booted for real: its boot option (good and bad), its dedicated vectors
pinned to the RT pCPU, its fast-path counter, and a short stock-vs-Natsume comparison."""

import dataclasses
import json
import re

import pytest

from orchestrator import compare, run, scenario
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
FILE = ROOT / "testbed.yaml"


@pytest.fixture(scope="module")
def comparison():
    comp = scenario.load_target(FILE, "smoke-comparison")
    outcome = compare.run_comparison(FILE, comp, ROOT / "results", print)
    print(outcome.report)
    first = {}
    for s, o in outcome.runs:  # the run of each scenario that booted its machine
        first.setdefault(s.name, o)
    return outcome.code, outcome.bundle, first, outcome.report, outcome


def test_repeats_measure_the_first_runs_boot(comparison):
    """Boot reuse for real: repeat 2 of each scenario measured the machine repeat 1 booted (side by side
    with the other scenario's), and the pool shut both down after the last run."""
    outcome = comparison[4]
    assert [s.name for s, _ in outcome.runs] == ["smoke-stock", "smoke-natsume"] * 2
    for (s, first), (_, again) in zip(outcome.runs[:2], outcome.runs[2:]):
        manifest = json.loads((again.bundle / "manifest.json").read_text())
        assert manifest["boot"]["reused_from"] == first.bundle.name, manifest.get("boot")
        assert [r.name for r in again.runner.results] == ["measure", "evaluate", "collect"]
        assert again.code == 0, again.checks
    rows = {r.name: r for r in outcome.runner.results}
    assert rows["shutdown:smoke-stock"].status == "passed" and rows["shutdown:smoke-natsume"].status == "passed"


def test_both_variants_measure(comparison):
    code, final, outcomes, text, _ = comparison
    for name, o in outcomes.items():
        assert o.error is None, f"{name}: {o.error}"
        assert o.code == 0, f"{name}: {o.checks}"
    assert code == 0
    assert "## Figure 2 as a table" in text and "improvement of smoke-natsume" in text
    for name in ("report.md", "latency-cdf.png", "latency-box.png", "comparison.json", "junit.xml"):
        assert (final / name).exists(), name


def test_natsume_option_accepted_and_fast_path_used(comparison):
    o = comparison[2]["smoke-natsume"]
    stages = {r.name: r for r in o.runner.results}
    assert stages["natsume_option"].detail.startswith("natsume: device 0000:00:04.0 -> pCPU 1")
    summary = json.loads((o.bundle / "summary.json").read_text())
    assert summary["natsume_fast_path_irqs"] > 0
    assert summary["absorbed"]["rt_guest_rx"] > 0


def test_dedicated_vectors_pinned_to_the_rt_pcpu(comparison):
    o = comparison[2]["smoke-natsume"]
    console = (o.bundle / "logs" / "console.log").read_text(errors="replace")
    first, last = (int(x, 16) for x in re.search(r"natsume: dedicated vectors (0x[0-9a-f]+)-(0x[0-9a-f]+) "
                                                 r"on pCPU 1", console).groups())
    table = (o.bundle / "raw" / "sysinfo-before" / "xen-irqs.txt").read_text()
    irqs = json.loads((o.bundle / "summary.json").read_text())["xen_irqs_of_rt_guest"]
    assert len(irqs) == 3  # the e1000e's three MSI-X vectors
    for x in irqs:
        assert first <= x["vector"] <= last, x
        line = next(ln for ln in table.splitlines() if re.search(rf"IRQ:\s*{x['irq']}\s", ln))
        assert "aff:{1}/{1}" in line, line  # destination fixed to the RT pCPU only


def test_bad_natsume_option_is_a_scenario_error():
    s = scenario.load(FILE, "smoke-natsume")
    bad = dataclasses.replace(
        s, name="bad-natsume-option",
        hypervisor=dataclasses.replace(s.hypervisor, options=s.hypervisor.options + ("natsume=0000:00:09.0,cpu=1",)),
        measurement=dataclasses.replace(s.measurement, enabled=False))
    outcome = run.run(FILE, bad, ROOT / "results", print)
    assert outcome.code == 2
    assert outcome.runner.failed_stage() == "natsume_option"
    assert "scenario error: Xen refused the natsume= option" in str(outcome.error)
    assert "0000:00:09.0" in str(outcome.error)
