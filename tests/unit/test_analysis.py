"""Pairing, statistics, samples.csv and the guest's ftrace records: hand-made inputs with
hand-computed answers, plus the recorded trace files in tests/data end to end."""

import math
import statistics

import pytest

from orchestrator import analysis as an
from orchestrator import xentrace as xt
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data"
KHZ = 2_400_000  # 2.4 GHz: 2.4 cycles per ns


def V(tsc, irq=29, cpu=1):
    return xt.VmmStamp(cpu=cpu, irq=irq, vector=0x51, tsc=tsc)


def G(tsc, irq=29, upcall=None):
    return an.GuestStamp(tsc=tsc, irq=irq, upcall_tsc=upcall)


def pairs(p):
    return [(s.vmm_tsc, s.guest_tsc) for s in p.samples]


# ---- pairing

def test_pairs_with_latest_unpaired_earlier_stamp_and_converts_to_ns():
    p = an.pair([V(1000), V(5000), V(5200)], [G(1240), G(5440)], KHZ)
    assert pairs(p) == [(1000, 1240), (5200, 5440)]  # 5000 is earlier but not the latest
    assert [s.latency_ticks for s in p.samples] == [240, 240]
    assert [s.latency_ns for s in p.samples] == [100.0, 100.0]
    assert [s.seq for s in p.samples] == [0, 1]
    assert (p.unpaired_vmm, p.unpaired_guest, p.nonpositive) == (1, 0, [])


def test_input_order_does_not_matter_cpus_merged_by_tsc():
    vmm = [V(3000, cpu=0), V(1000, cpu=1), V(2000, cpu=0)]
    guest = [G(3100), G(1100), G(2100)]
    p = an.pair(vmm, guest, KHZ)
    assert pairs(p) == [(1000, 1100), (2000, 2100), (3000, 3100)]
    assert [s.cpu for s in p.samples] == [1, 0, 0]


def test_each_vmm_stamp_pairs_at_most_once():
    p = an.pair([V(1000)], [G(1100), G(1200)], KHZ)
    assert pairs(p) == [(1000, 1100)] and p.unpaired_guest == 1 and p.unpaired_vmm == 0


def test_strictly_earlier_only_equal_tsc_is_flagged_nonpositive():
    p = an.pair([V(1000)], [G(1000)], KHZ)
    assert p.samples == [] and p.unpaired_guest == 0 and p.unpaired_vmm == 0
    [flag] = p.nonpositive
    assert (flag.vmm_tsc, flag.guest_tsc, flag.latency_ticks, flag.latency_ns) == (1000, 1000, 0, 0.0)


def test_negative_latency_is_flagged_not_paired():
    # the guest's stamp comes before Xen's: a clock problem, reported with the would-be latency
    p = an.pair([V(1000), V(2000)], [G(1100), G(1900)], KHZ)
    assert pairs(p) == [(1000, 1100)]
    assert [(s.vmm_tsc, s.guest_tsc, s.latency_ticks) for s in p.nonpositive] == [(2000, 1900, -100)]
    assert p.nonpositive[0].latency_ns == pytest.approx(-100 / 2.4)
    assert p.unpaired_vmm == 0 and p.unpaired_guest == 0
    assert p.unpaired_pct_raw == pytest.approx(50)


def test_unpaired_on_both_sides():
    vmm = [V(1000), V(2000), V(3000), V(8000, irq=30), V(9000, irq=30)]
    guest = [G(500), G(1100), G(3200), G(9100, irq=30)]
    p = an.pair(vmm, guest, KHZ)
    assert pairs(p) == [(1000, 1100), (3000, 3200), (9000, 9100)]
    assert p.unpaired_vmm == 2  # 2000 (irq 29), 8000 (irq 30)
    assert p.unpaired_guest == 1 and p.nonpositive == []  # 500: its next VMM stamp (1000) went to 1100
    assert p.unpaired_pct_raw == pytest.approx(50)


def test_lonely_guest_stamp_without_any_vmm_stamp():
    p = an.pair([V(1000), V(2000)], [G(500), G(1100), G(2100)], KHZ)
    assert pairs(p) == [(1000, 1100), (2000, 2100)]
    assert (p.unpaired_guest, p.unpaired_vmm, p.nonpositive) == (1, 0, [])


def test_other_irqs_are_ignored_and_irq_map_translates():
    vmm = [V(1000, irq=16, cpu=0), V(1010, irq=29), V(1020, irq=16, cpu=0)]
    p = an.pair(vmm, [G(1100, irq=24)], KHZ, irq_map={24: 29})
    assert pairs(p) == [(1010, 1100)] and p.samples[0].irq == 29
    assert p.unpaired_vmm == 0  # irq 16 is not measured
    with pytest.raises(an.AnalysisError, match="guest IRQ 25 has no physical IRQ in the irq map"):
        an.pair(vmm, [G(1100, irq=25)], KHZ, irq_map={24: 29})


def test_empty_guest_trace_with_irq_map_leaves_vmm_stamps_unpaired():
    p = an.pair([V(1000), V(2000), V(3000, irq=16)], [], KHZ, irq_map={24: 29})
    assert (len(p.samples), p.unpaired_vmm, p.unpaired_pct_raw) == (0, 2, 100.0)


def test_window_moves_outside_stamps_out_of_unpaired():
    p = an.pair([V(100), V(1000), V(5000)], [G(1100)], KHZ, window=(900, 2000))
    assert pairs(p) == [(1000, 1100)]
    assert (p.unpaired_vmm, p.vmm_outside) == (0, 2)


def test_empty_inputs_give_an_empty_pairing():
    p = an.pair([], [], KHZ)
    assert (p.samples, p.unpaired_vmm, p.unpaired_guest, p.nonpositive) == ([], 0, 0, [])
    assert p.unpaired_pct_raw == 0.0
    assert an.summary(p)["latency_ns"]["n"] == 0


@pytest.mark.parametrize("khz", [0, -1, None, "2400000", True])
def test_bad_tsc_khz(khz):
    with pytest.raises(an.AnalysisError, match="tsc_khz must be a positive number"):
        an.pair([], [], khz)


def test_ns_conversion():
    assert an.cycles_to_ns(3_000_000, 3_000_000) == 1_000_000.0  # 3 GHz: 1 ms of cycles
    assert an.cycles_to_ns(1, 1_000_000) == 1.0
    assert an.cycles_to_ns(12000, KHZ) == 5000.0


# ---- statistics

def test_stats_hand_computed():
    s = an.stats([5000, 3000, 4000, 2000])
    assert (s["n"], s["min"], s["max"], s["mean"], s["median"]) == (4, 2000, 5000, 3500, 3500)
    # linear interpolation, h = (n-1)p: p90 h=2.7 -> 4000+0.7*1000; p99 h=2.97; p999 h=2.997
    assert s["p90"] == pytest.approx(4700)
    assert s["p99"] == pytest.approx(4970)
    assert s["p999"] == pytest.approx(4997)
    assert s["stddev"] == pytest.approx(math.sqrt(5_000_000 / 3))  # sample stddev (n-1)


def test_percentile_method_on_one_to_ten():
    xs = list(range(1, 11))
    assert an.percentile(xs, 0.9) == pytest.approx(9.1)
    assert an.percentile(xs, 0.5) == 5.5 == statistics.median(xs)
    assert an.percentile(xs, 0.0) == 1 and an.percentile(xs, 1.0) == 10
    # the same method as the stdlib's 'inclusive' quantiles
    assert an.percentile(xs, 0.9) == pytest.approx(statistics.quantiles(xs, n=10, method="inclusive")[8])


def test_stats_edge_cases():
    one = an.stats([7])
    assert one["n"] == 1 and one["min"] == one["max"] == one["p999"] == 7 and one["stddev"] == 0.0
    empty = an.stats([])
    assert empty["n"] == 0 and all(empty[k] is None for k in empty if k != "n")
    assert set(empty) == {"n", "min", "mean", "median", "p90", "p99", "p999", "max", "stddev"}


# ---- samples.csv

HEADER = ("sequence,cpu,irq,vmm_tsc,guest_tsc,upcall_tsc,latency_ticks,latency_ns,path,entry_to_pending,"
          "pending_to_notify,notify_to_schedin,to_bounce,bounce_to_upcall,upcall_to_handler,"
          "rt_own,others,idle_skipped")


def test_csv_round_trip_and_exact_columns(tmp_path):
    from orchestrator.breakdown import Breakdown, SEGMENT_NAMES
    p = an.pair([V(1000), V(2000, cpu=0)], [G(1240), G(2241)], KHZ)
    path = tmp_path / "samples.csv"
    segs = dict.fromkeys(SEGMENT_NAMES) | {"entry_to_pending": 40, "to_bounce": 100}
    an.write_samples_csv(path, p.samples, [Breakdown("running", segs), Breakdown("unmatched", dict.fromkeys(SEGMENT_NAMES))])
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1:] == ["0,1,29,1000,1240,,240,100.000,running,40,,,100,,,,,",
                         "1,0,29,2000,2241,,241,100.417,unmatched,,,,,,,,,"]
    back = an.read_samples_csv(path)
    assert [(s.seq, s.cpu, s.irq, s.vmm_tsc, s.guest_tsc, s.latency_ticks) for s, _ in back] == \
        [(s.seq, s.cpu, s.irq, s.vmm_tsc, s.guest_tsc, s.latency_ticks) for s in p.samples]
    assert back[1][0].latency_ns == 100.417
    assert back[0][1] == Breakdown("running", segs)


def test_csv_without_breakdown_leaves_the_columns_empty(tmp_path):
    p = an.pair([V(1000)], [G(1240)], KHZ)
    path = tmp_path / "samples.csv"
    an.write_samples_csv(path, p.samples)
    assert path.read_text().splitlines()[1] == "0,1,29,1000,1240,,240,100.000,,,,,,,,,,"
    assert an.read_samples_csv(path)[0][1] is None


def test_csv_with_the_vcpu_split_and_the_layout_before_it(tmp_path):
    p = an.pair([V(1000)], [G(1240)], KHZ)
    path = tmp_path / "samples.csv"
    an.write_samples_csv(path, p.samples, splits=[{"rt_own": 200, "others": 30, "idle_skipped": 10}])
    assert path.read_text().splitlines()[1].endswith(",200,30,10")
    old = tmp_path / "old.csv"  # written before the split columns: still read
    old.write_text(HEADER.rsplit(",rt_own", 1)[0] + "\n0,1,29,1000,1240,,240,100.000,,,,,,,\n")
    assert an.read_samples_csv(old)[0][0].latency_ticks == 240


@pytest.mark.parametrize("text, message", [
    ("", r":1: expected header sequence,cpu,.*found an empty file"),
    ("seq,cpu\n", r":1: expected header .* found seq,cpu"),
    (HEADER + "\n0,1,29,1000,1240,240\n", r":2: 6 fields, expected 18"),
    (HEADER + "\n0,1,29,1000,1240,,240,1.0,,,,,,,,,,\n1,1,x,1,2,,1,1,,,,,,,,,,\n", r":3: column irq: 'x' is not a number"),
    (HEADER + "\n0,1,29,1000,1240,,240,1.0,sideways,,,,,,,,,\n", r":2: column path: 'sideways' is not one of"),
])
def test_bad_csv_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(an.AnalysisError, match=str(path) + message):
        an.read_samples_csv(path)


# ---- guest ftrace records

LINE = "          <idle>-0       [000] d.h1. {tsc}: irq_handler_entry: irq={irq} name={name}\n"


def test_parse_recorded_ftrace_file():
    t = an.parse_ftrace((DATA / "ftrace-rt-guest.txt").read_text(), irq_names=["eth0*"])
    assert [(g.tsc, g.irq, g.name, g.upcall_tsc, g.cpu) for g in t.stamps] == [
        (1000012000, 24, "eth0-rx-0", 1000010000, 0),
        (1000507200, 24, "eth0-rx-0", 1000505000, 0),
        (1001509600, 24, "eth0-rx-0", 1001507000, 0),
        (1002004800, 24, "eth0-rx-0", 1002003000, 0),
    ]
    assert (t.cut_off, t.lost_events, t.other_events) == (1, 1, 4)
    assert t.stamps[0].line == 14
    everything = an.parse_ftrace((DATA / "ftrace-rt-guest.txt").read_text())
    assert [g.name for g in everything.stamps].count("xenbus") == 1


def test_ftrace_line_variants():
    text = ("  kworker/0:1-my-task-12  [001] .... 500: irq_handler_entry: irq=5 name=eth0 queue 1\n"
            "   bash-300   (  300) [000] d.h2. 400: irq_handler_entry: irq=24 name=eth0\n"
            "   bash-300   [000]   300: irq_handler_entry: irq=24 name=eth0\n")
    t = an.parse_ftrace(text)
    assert [(g.tsc, g.irq, g.cpu, g.name) for g in t.stamps] == [
        (300, 24, 0, "eth0"), (400, 24, 0, "eth0"), (500, 5, 1, "eth0 queue 1")]  # sorted by TSC


def test_out_of_order_lines_sorted_and_upcall_taken_per_cpu():
    text = (LINE.format(tsc=2000, irq=24, name="eth0")
            + "  <idle>-0 [000] d.h1. 1500: xen_evtchn_do_upcall <-asm_exc_xen_hypervisor_callback\n"
            + "  <idle>-0 [001] d.h1. 1900: xen_evtchn_do_upcall <-asm_exc_xen_hypervisor_callback\n"
            + LINE.format(tsc=1000, irq=24, name="eth0"))
    t = an.parse_ftrace(text)
    assert [(g.tsc, g.upcall_tsc) for g in t.stamps] == [(1000, None), (2000, 1500)]


def test_empty_and_header_only_ftrace():
    assert an.parse_ftrace("").stamps == []
    t = an.parse_ftrace("# tracer: nop\n#\n\n")
    assert (t.stamps, t.cut_off) == ([], 0)


def test_truncated_tail_is_ignored_and_counted():
    text = LINE.format(tsc=1000, irq=24, name="eth0") + "          <idle>-0       [000] d.h1. 20"
    t = an.parse_ftrace(text)
    assert [g.tsc for g in t.stamps] == [1000] and t.cut_off == 1
    # a complete-looking last line without its newline may be cut inside a number: dropped too
    t = an.parse_ftrace(LINE.format(tsc=1000, irq=24, name="eth0") + LINE.format(tsc=2000, irq=2, name="e").rstrip())
    assert [g.tsc for g in t.stamps] == [1000] and t.cut_off == 1
    # garbled lines at the very end, with newlines, count as cut off as well
    t = an.parse_ftrace(LINE.format(tsc=1000, irq=24, name="eth0") + "    <idle>-0   [000] d.h1. 2000: irq_hand\n~ #\n")
    assert t.cut_off == 2


def test_malformed_line_in_the_middle_names_its_line():
    text = "# tracer: nop\n" + LINE.format(tsc=1000, irq=24, name="eth0") + "garbage here\n" \
        + LINE.format(tsc=2000, irq=24, name="eth0")
    with pytest.raises(an.AnalysisError, match=r"guest.trace:3: not an ftrace event line: 'garbage here'"):
        an.parse_ftrace(text, source="guest.trace")


def test_wrong_trace_clock_is_named():
    with pytest.raises(an.AnalysisError, match=r"<ftrace>:1: timestamp 123.456789 is not a raw TSC"):
        an.parse_ftrace(LINE.format(tsc="123.456789", irq=24, name="eth0"))


# ---- end to end on the recorded files

def test_recorded_traces_pair_to_the_expected_samples(tmp_path):
    vmm = xt.vmm_stamps(xt.decode(DATA / "xentrace-natsume-2cpu.bin"))
    guest = an.parse_ftrace((DATA / "ftrace-rt-guest.txt").read_text(), irq_names=["eth0*"]).stamps
    p = an.pair(vmm, guest, KHZ, irq_map={24: 29})
    assert (len(p.samples), p.unpaired_vmm, p.unpaired_guest, p.nonpositive) == (4, 1, 0, [])
    out = tmp_path / "samples.csv"
    an.write_samples_csv(out, p.samples)
    assert out.read_text() == (DATA / "expected-samples.csv").read_text()
    s = an.summary(p)["latency_ns"]
    assert (s["min"], s["median"], s["max"]) == (2000.0, 3500.0, 5000.0)
    assert [smp.upcall_tsc for smp in p.samples][0] == 1000010000
