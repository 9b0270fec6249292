"""From raw records (a synthetic xentrace file and guest dump) to samples, summary, plots, checks."""

import csv
import dataclasses
import json

import pytest

from orchestrator import evaluate, report, scenario
from orchestrator.measure import MeasureRecords
from orchestrator.stages import StageResult
from tests.conftest import ROOT
from tests.unit.test_xentrace import natsume, window

IRQ_TABLE = """\
(XEN) IRQ information:
(XEN)    IRQ:   0 vec:f0 IO-APIC-edge      status=000 aff:{0}/{0} time.c#timer_interrupt()
(XEN)    IRQ:  16 vec:38 IO-APIC-level     status=030 aff:{0}/{0-1} in-flight=0 d0: 16(---)
(XEN)    IRQ:  29 vec:51 PCI-MSI/-X        status=030 aff:{1}/{1} in-flight=0 d1:151(---)
(XEN)    IRQ:  30 vec:59 PCI-MSI/-X        status=030 aff:{1}/{1} in-flight=0 d1:150(---)
"""
FTRACE_HEAD = "# tracer: nop\n#\n"


def _line(tsc, irq=40, name="eth0-rx-0"):
    return f"          <idle>-0       [000] d.h1.  {tsc}: irq_handler_entry: irq={irq} name={name}\n"


@pytest.fixture
def s():
    base = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    return dataclasses.replace(base, measurement=dataclasses.replace(base.measurement, min_samples=3))


def _records(tmp_path, vmm_tscs, guest_tscs, table=IRQ_TABLE):
    trace = tmp_path / "xentrace.bin"
    trace.write_bytes(window(1, *[natsume(0x51, 29, 1, t) for t in vmm_tscs])
                      + window(0, natsume(0x38, 16, 0, 5)))  # the load NIC: not the RT guest's, ignored
    dump = tmp_path / "dump.log"
    dump.write_text("rtagent dump\nRTAGENT-DUMP-BEGIN\n" + FTRACE_HEAD + "".join(_line(t) for t in guest_tscs)
                    + "RTAGENT-DUMP-END lines=3\n")
    return MeasureRecords(trace_path=trace, guest_dump_path=dump, tsc_khz=1_000_000, rt_domid=1,
                          xen_irq_table=table, guest_irq_mode="msix",
                          traffic={"measured": {"frames": 3072, "send_errors": 0}})


def test_xen_guest_irqs_parses_the_debug_key_dump():
    irqs = evaluate.xen_guest_irqs(IRQ_TABLE, 1)
    assert [(x.irq, x.vector, x.kind, x.pirq) for x in irqs] == [(29, 0x51, "PCI-MSI/-X", 151),
                                                                 (30, 0x59, "PCI-MSI/-X", 150)]
    assert [x.irq for x in evaluate.xen_guest_irqs(IRQ_TABLE, 0)] == [16]


def test_irq_map_by_entry_order_or_activity():
    from collections import Counter
    mapping, how = evaluate.map_irqs({31, 29, 30}, {11, 9, 10}, Counter(), Counter())
    assert mapping == {9: 29, 10: 30, 11: 31} and how.startswith("MSI-X entry order")
    mapping, how = evaluate.map_irqs({29, 30}, set(), Counter({29: 100, 30: 0}), Counter({40: 99}))
    assert mapping == {40: 29} and how == "activity rank"
    with pytest.raises(evaluate.InfraCheckFailed, match="2 vectors"):
        evaluate.map_irqs({29}, set(), Counter({29: 5}), Counter({40: 5, 41: 1}))


def test_evaluate_writes_samples_summary_plots(tmp_path, s):
    rec = _records(tmp_path, [1000, 3000, 5000], [1500, 3700, 5100])
    summary, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    rows = list(csv.DictReader((tmp_path / "samples.csv").open()))
    assert [int(r["latency_ticks"]) for r in rows] == [500, 700, 100]
    assert float(rows[0]["latency_ns"]) == 500.0  # 1 GHz TSC
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["paired"] == 3 and saved["irq_map"] == {"40": 29} and saved["latency_ns"]["max"] == 700.0
    assert "emulated time" in saved["note"]
    assert {c["name"]: c["ok"] for c in checks} == {"enough_samples": True, "unpaired": True,
                                                    "positive_latencies": True, "trace_complete": True}
    for png in ("latency-histogram.png", "latency-cdf.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_few_and_unpaired_samples_fail_their_checks(tmp_path, s):
    rec = _records(tmp_path, [1000, 3000, 5000, 7000], [1500])
    _, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    failed = {c["name"]: c["detail"] for c in checks if not c["ok"]}
    assert set(failed) == {"enough_samples", "unpaired"}
    assert failed["unpaired"].startswith("75.00 % unpaired (VMM 3, guest 0")


def test_no_msi_is_an_infrastructure_failure(tmp_path, s):
    table = IRQ_TABLE.replace("PCI-MSI/-X", "IO-APIC-level")
    rec = _records(tmp_path, [1000], [1500], table=table)
    with pytest.raises(evaluate.InfraCheckFailed, match="not message-signalled"):
        evaluate.evaluate(s, rec, tmp_path, "tcg")


def test_junit_has_a_case_per_stage_and_check(tmp_path):
    stages = [StageResult("images", "passed", 1.0, "cached"), StageResult("measure", "failed", 2.0, "boom"),
              StageResult("collect", "skipped", 0.0)]
    checks = [{"name": "unpaired", "ok": False, "detail": "5 % unpaired"}]
    text = report.junit(tmp_path / "junit.xml", "testbed.x", stages, checks).read_text()
    assert 'tests="4"' in text and 'failures="2"' in text and 'skipped="1"' in text
    assert 'name="check.unpaired"' in text and "5 % unpaired" in text


def test_coalesced_entries_are_not_unpaired(tmp_path, s):
    # Xen took IRQ 29 at 1000 and again at 1200 before the guest's handler ran at 1500.
    rec = _records(tmp_path, [1000, 1200, 3000, 5000], [1500, 3500, 5500])
    summary, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    assert summary["paired"] == 3 and summary["coalesced_vmm"] == 1 and summary["lonely_vmm"] == 0
    assert summary["unpaired_pct"] == 0.0 and all(c["ok"] for c in checks)
    assert "1 VMM entries coalesced" in next(c["detail"] for c in checks if c["name"] == "unpaired")


def test_guest_stamps_outside_the_trace_are_left_out(tmp_path, s):
    # The guest traced before xentrace started (900) and after it stopped (9000, 9500).
    rec = _records(tmp_path, [1000, 3000, 5000], [900, 1500, 3500, 5500, 9000, 9500])
    summary, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    assert summary["outside_common_window"] == 3
    assert summary["paired"] == 3 and summary["unpaired_guest"] == 0


def test_natsume_run_without_fast_path_is_refused(tmp_path, s):
    rec = _records(tmp_path, [1000], [1500])
    rec.natsume_fast_path = 0
    with pytest.raises(evaluate.InfraCheckFailed, match="fast path took no interrupt"):
        evaluate.evaluate(s, rec, tmp_path, "tcg")
    rec.natsume_fast_path = 12
    summary, _ = evaluate.evaluate(s, rec, tmp_path, "tcg")
    assert summary["natsume_fast_path_irqs"] == 12


def test_natsume_interrupts_dropped_by_the_fast_path_fail_a_check(tmp_path, s):
    from orchestrator import measure
    text = ("(XEN) natsume:   vector 0xf2 IRQ 29 entry 0: irqs=703 unbound=0 busy=2 refused=0 -> d1 pirq 55 port 9\n"
            "(XEN) natsume:   vector 0xf3 IRQ 30 entry 1: irqs=12 unbound=1 busy=0 refused=0 -> d1 pirq 54 port 10\n")
    assert measure.dropped_counts(text) == {"unbound": 1, "busy": 2, "ratelimited": 0}
    limited = text.replace("busy=2", "busy=2 ratelimited=7")
    assert measure.dropped_counts(limited)["ratelimited"] == 7
    rec = _records(tmp_path, [1000], [1500])
    rec.natsume_fast_path, rec.natsume_dropped = 715, measure.dropped_counts(text)
    _, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    failed = {c["name"]: c["detail"] for c in checks if not c["ok"]}
    assert failed["natsume_delivered_all"] == "Natsume's dedicated handler dropped 1 unbound, 2 busy"
    rec.natsume_dropped = {"unbound": 0, "busy": 0}
    _, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    assert next(c for c in checks if c["name"] == "natsume_delivered_all")["ok"]


def test_guest_handler_runs_beyond_natsumes_fast_path_fail_a_check(tmp_path, s):
    rec = _records(tmp_path, [1000], [1500])
    rec.natsume_fast_path = 724
    rec.counters_after = {"rt_guest": {"if": "eth0", "rx_packets": "8444", "irq9": "614", "irq10": "21", "irq11": "1"}}
    _, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    took = next(c for c in checks if c["name"] == "natsume_took_every_interrupt")
    assert took["ok"] and "636 times" in took["detail"] and "took 724" in took["detail"]
    rec.counters_after["rt_guest"]["irq9"] = "800"  # 88 handler runs came another way: stock Xen's path
    _, checks = evaluate.evaluate(s, rec, tmp_path, "tcg")
    assert not next(c for c in checks if c["name"] == "natsume_took_every_interrupt")["ok"]
