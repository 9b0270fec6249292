"""The storm stage's parsing and arithmetic, and where it sits in a run's plan."""

import pytest

from orchestrator import render, run, scenario, storm
from orchestrator.measure import MeasureError
from tests.conftest import ROOT


def test_parse_storm_reads_icsstorm_line():
    assert storm.parse_storm("junk\nICSSTORM writes=1000000 ticks=123456789 start=42\n$ ") == (1000000, 123456789, 42)


def test_parse_storm_error_carries_what_the_guest_printed():
    with pytest.raises(MeasureError, match="open /dev/mem errno=1"):
        storm.parse_storm("ICSSTORM-ERROR open /dev/mem errno=1\n")


def test_irq_total_sums_only_the_irq_lines():
    assert storm.irq_total({"if": "eth0", "rx_packets": "99", "irq60": "10", "irq61": "5", "irq62": "NA"}) == 15


def test_summarize_in_the_limiter_unit():
    # 2,000 interrupts in 20 M ticks at 1 GHz = 20 ms: 1,000 per 10 ms, far below Xen's 10,000
    result = storm.summarize(writes=10**6, ticks=20_000_000, irqs=2000, tsc_khz=1_000_000, answered_s=1.234)
    assert result["interrupts_per_10ms"] == 1000.0
    assert result["reached_ratelimit"] is False
    assert result["answered_after_s"] == 1.23
    assert storm.summarize(1, 0, 0, 1_000_000, 0)["interrupts_per_10ms"] == 0.0


def test_storm_stage_planned_only_with_writes_and_guest_may_map_the_bar():
    quiet = scenario.load(ROOT / "testbed.yaml", "soak-stock")
    stormy = scenario.load(ROOT / "testbed.yaml", "storm-stock")
    assert "storm" not in run.stage_names(quiet)
    names = run.stage_names(stormy)
    assert names.index("load_guest") < names.index("storm") < names.index("measure")
    assert "iomem=relaxed" in render.xl_config(stormy, "rt")
    assert "iomem=relaxed" not in render.xl_config(quiet, "rt")


def test_debug_keys_without_a_pressed_line_are_cut_at_their_own_header():
    """Xen's i and M handlers print no "'k' pressed" line: their output starts at its header, not at
    the ring's last 40 lines (which cut the IRQ table short)."""
    from types import SimpleNamespace
    from orchestrator import diagnose

    ring = {"i": "(XEN) boot\n" * 100 + "(XEN) IRQ information:\n" + "(XEN)    IRQ:  29 vec:d8\n" * 60,
            "e": "(XEN) boot\n(XEN) 'e' pressed -> dumping event-channel info\n(XEN) chan 1\n"}

    class Agent:
        def run(self, command, timeout=60):
            key = command.split()[2]
            return SimpleNamespace(stdout=ring[key], stderr="", rc=0)

    text = diagnose.xen_debug_keys(Agent(), "ie")
    i_part, e_part = text.split("==== xl debug-keys e")
    assert i_part.count("IRQ:  29") == 60 and "boot" not in i_part
    assert "'e' pressed" in e_part and "boot" not in e_part


def test_xen_view_counts_entries_on_the_rt_guests_irqs_and_its_upcalls(tmp_path):
    """Xen's side of a storm from its trace: entries on the RT guest's IRQs only (not dom0's) and the
    upcalls delivered to the RT domain, inside the storm's TSC window only."""
    from tests.unit.test_evaluate import IRQ_TABLE
    from tests.unit.test_xentrace import natsume, path, window

    trace = tmp_path / "storm-xentrace.bin"
    trace.write_bytes(window(1, natsume(0x51, 29, 1, 1_000), natsume(0x51, 29, 1, 5_000), natsume(0x59, 30, 1, 9_000),
                             path(1, 0, 0, 2_000, 1_500), path(0, 0, 0, 2_500, 2_400))
                      + window(0, natsume(0x38, 16, 0, 3_000)))
    view = storm.xen_view(trace, IRQ_TABLE, 1, start=900, ticks=6_000)  # the storm: TSC 900 .. 6,900
    assert view == {"entries": 2, "entries_per_irq": {"29": 2}, "upcalls": 1, "lost_records": 0}
