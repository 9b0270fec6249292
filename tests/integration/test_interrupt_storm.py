"""A guest-made interrupt storm on both variants: the RT guest turns its e1000e's throttling off
and writes its ICS millions of times; the RT pCPU must still answer (the RT guest's console, then
dom0), and the short measurement after it must pass. raw/storm.json says what the storm achieved."""

import json

import pytest

from orchestrator import run, scenario
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["storm-stock", "storm-natsume"])
def test_the_rt_pcpu_survives_a_guest_made_interrupt_storm(name):
    s = scenario.load(ROOT / "testbed.yaml", name)
    outcome = run.run(ROOT / "testbed.yaml", s, ROOT / "results", print)
    print(outcome.runner.table())
    assert outcome.error is None, str(outcome.error)
    assert outcome.code == 0, outcome.checks
    rows = {r.name: r for r in outcome.runner.results}
    assert rows["storm"].status == "passed" and rows["measure"].status == "passed"
    storm = json.loads((outcome.bundle / "raw" / "storm.json").read_text())
    print(json.dumps(storm, indent=2))
    assert storm["writes"] == s.measurement.storm_ics_writes and storm["interrupts"] > 0
    assert storm["answered_after_s"] < 120
    after = outcome.bundle / "raw" / "storm-after"
    assert "IRQ information:" in (after / "xen-debug-keys.txt").read_text()
    assert json.loads((after / "e1000e-registers.json").read_text())["registers"]["IMS"]
    if s.hypervisor.variant == "natsume":
        assert storm["natsume"]["unbound"] == 0 and storm["natsume"]["busy"] == 0, storm["natsume"]
