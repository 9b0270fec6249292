"""xentrace decoder: synthetic traces from a small independent encoder (multiple CPUs, records with and
without cycles, wrapped windows, truncated, empty, corrupt). `python -m tests.unit.test_xentrace`
rewrites tests/data/xentrace-natsume-2cpu.bin from build_sample_trace()."""

import struct
import sys

import pytest

from orchestrator import xentrace as xt
from tests.conftest import ROOT

SAMPLE = ROOT / "tests" / "data" / "xentrace-natsume-2cpu.bin"
SCHED_SWITCH = 0x0002800A  # TRC_SCHED_SWITCH: an event we do not interpret
# ours, from xen/include/xen/testbed.h (hypervisor_patch/0001), not from the decoder
IRQ_ENTRY = 0x00804001
PATH = 0x00804002


# ---- encoder, written from trace.h / xentrace.c independently of the decoder

def rec(event, data=(), tsc=None):
    header = event | (len(data) << 28) | ((1 << 31) if tsc is not None else 0)
    out = struct.pack("<I", header)
    if tsc is not None:
        out += struct.pack("<II", tsc & 0xFFFFFFFF, tsc >> 32)
    return out + struct.pack(f"<{len(data)}I", *data)


def window(cpu, *records):
    body = b"".join(records)
    return struct.pack("<IiI", 0x2001F003, cpu, len(body)) + body  # struct cpu_change_record


def natsume(vector, irq, cpu, tsc, stamp_tsc=None):
    """Our entry record: the header TSC is taken a little after the stamp."""
    data = (vector, irq & 0xFFFFFFFF, cpu, tsc & 0xFFFFFFFF, tsc >> 32)
    return rec(IRQ_ENTRY, data, tsc + 50 if stamp_tsc is None else stamp_tsc)


def path(domid, vcpu, flags, bounce, pending, notify=None, schedin=None):
    """Our path record as testbed_upcall_stamp() writes it: distances back from the bounce TSC, 0 for a
    step not stamped; the header TSC is taken after the bounce TSC."""
    data = ((domid << 16) | vcpu, flags, bounce & 0xFFFFFFFF, bounce >> 32, bounce - pending,
            0 if notify is None else bounce - notify, 0 if schedin is None else bounce - schedin)
    return rec(PATH, data, bounce + 80)


def build_sample_trace():
    """Two pCPUs, interleaved windows. cpu1 owns the measured NIC's IRQ 29 (vector 0x51); cpu0 sees
    the load NIC's IRQ 16. Matches tests/data/ftrace-rt-guest.txt (tsc_khz 2400000)."""
    return b"".join([
        window(0, rec(SCHED_SWITCH, (0, 1), tsc=999_000_000),
               natsume(0x38, 16, 0, 999_500_000),
               rec(xt.TRC_HW_IRQ_HANDLED, (16, 999_500_100, 999_501_000), tsc=999_501_010)),
        window(1, natsume(0x51, 29, 1, 1_000_000_000),
               rec(xt.TRC_HW_IRQ_HANDLED, (29, 1_000_000_300, 1_000_001_000), tsc=1_000_001_010),
               natsume(0x51, 29, 1, 1_000_500_000),
               rec(xt.TRC_LOST_RECORDS, (0, 0, 0, 0), tsc=1_000_600_000),
               rec(xt.TRC_TRACE_WRAP_BUFFER, (0, 0)),  # padding before the ring wraps, no cycles
               natsume(0x51, 29, 1, 1_001_000_000)),
        window(0, natsume(0x38, 16, 0, 1_001_200_000), rec(SCHED_SWITCH, (1, 0))),
        window(1, natsume(0x51, 29, 1, 1_001_500_000), natsume(0x51, 29, 1, 1_002_000_000)),
    ])


# ---- tests

def test_empty_file_decodes_to_nothing(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert xt.decode(path) == []
    assert xt.decode(b"") == []
    assert xt.vmm_stamps([]) == []


def test_records_with_and_without_cycles():
    data = window(3, rec(SCHED_SWITCH, (7, 8, 9)), rec(0x0080_2008, (1, 2, 3), tsc=0x1_2345_6789),
                  rec(xt.TRC_GEN + 0x7FF), rec(0x0FFFFFFF, tuple(range(7)), tsc=5))
    records = xt.decode(data)
    assert [(r.cpu, r.event, r.tsc, r.data) for r in records] == [
        (3, SCHED_SWITCH, None, (7, 8, 9)),
        (3, xt.TRC_HW_IRQ_HANDLED, 0x1_2345_6789, (1, 2, 3)),
        (3, xt.TRC_GEN + 0x7FF, None, ()),
        (3, 0x0FFFFFFF, 5, (0, 1, 2, 3, 4, 5, 6)),  # 7 extra words: the maximum
    ]
    assert [r.offset for r in records] == [12, 28, 52, 56]  # cpu_change record is 12 bytes


def test_sample_file_is_what_the_encoder_writes():
    assert SAMPLE.read_bytes() == build_sample_trace(), "regenerate: python -m tests.unit.test_xentrace"


def test_multiple_cpus_and_unknown_events_kept():
    records = xt.decode(SAMPLE)
    assert [r.cpu for r in records] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]
    assert records[0].event == SCHED_SWITCH and records[0].data == (0, 1)
    assert xt.event_counts(records)[IRQ_ENTRY] == 7
    assert xt.lost_records(records) == 0
    assert all(r.event != xt.TRC_TRACE_CPU_CHANGE for r in records)


def test_vmm_stamps_full_tsc_merged_over_cpus():
    stamps = xt.vmm_stamps(xt.decode(SAMPLE))
    assert [(s.cpu, s.irq, s.vector, s.tsc) for s in stamps] == [
        (0, 16, 0x38, 999_500_000),
        (1, 29, 0x51, 1_000_000_000),
        (1, 29, 0x51, 1_000_500_000),
        (1, 29, 0x51, 1_001_000_000),
        (0, 16, 0x38, 1_001_200_000),
        (1, 29, 0x51, 1_001_500_000),
        (1, 29, 0x51, 1_002_000_000),
    ]


def test_vmm_stamp_uses_the_data_tsc_not_the_header_and_keeps_64_bits():
    big = (7 << 32) + 123
    [stamp] = xt.vmm_stamps(xt.decode(window(2, natsume(0x40, -1, 2, big, stamp_tsc=None))))
    assert stamp.tsc == big and stamp.irq == -1
    [stamp] = xt.vmm_stamps(xt.decode(window(2, rec(IRQ_ENTRY, (0x40, 5, 2, 1, 0)))))
    assert stamp.tsc == 1  # a record without header cycles still has its stamp


def test_truncated_final_record_names_file_and_offset(tmp_path):
    data = build_sample_trace()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:-6])  # inside the last natsume record
    last = len(data) - 4 - 8 - 20
    with pytest.raises(xt.TraceError, match=rf"{path}: truncated at offset {last}\b"):
        xt.decode(path)
    trace = xt.read_trace(path, allow_truncated=True)
    assert trace.truncated_at == last
    assert len(trace.records) == len(xt.decode(SAMPLE)) - 1


def test_truncated_inside_cpu_change_record():
    data = build_sample_trace() + struct.pack("<I", 0x2001F003)
    with pytest.raises(xt.TraceError, match=rf"<bytes>: truncated at offset {len(data) - 4}: 4 bytes left"):
        xt.decode(data)
    assert xt.read_trace(data, allow_truncated=True).truncated_at == len(data) - 4


def test_truncated_window_keeps_complete_records():
    data = window(0, rec(SCHED_SWITCH, (1,), tsc=10), rec(SCHED_SWITCH, (2,), tsc=11))
    trace = xt.read_trace(data[:-3], allow_truncated=True)
    assert [r.data for r in trace.records] == [(1,)] and trace.truncated_at == 12 + 16


def test_not_an_xentrace_file():
    with pytest.raises(xt.TraceError, match=r"<bytes>: offset 0: expected a cpu_change record \(0x2001f003\), "
                                             r"found 0x64636261"):
        xt.decode(b"abcdefghijklmnop")


def test_record_crossing_its_window_is_corrupt():
    body = rec(SCHED_SWITCH, (1, 2, 3), tsc=1)
    data = struct.pack("<IiI", 0x2001F003, 0, len(body) - 4) + body + window(1)
    with pytest.raises(xt.TraceError, match=r"offset 12: record crosses the end of cpu 0's window"):
        xt.decode(data)


def test_bad_natsume_record_is_named():
    data = window(1, rec(IRQ_ENTRY, (1, 2, 3), tsc=5))
    with pytest.raises(xt.TraceError, match=r"^t.bin: offset 12: TRC_TESTBED_IRQ_ENTRY with 3 data words"):
        xt.vmm_stamps(xt.decode(data), source="t.bin")
    data = window(1, natsume(0x51, 29, 0, 100))
    with pytest.raises(xt.TraceError, match=r"says cpu 0 but sits in cpu 1's buffer"):
        xt.vmm_stamps(xt.decode(data))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(xt.TraceError, match=r"nope.bin: cannot read trace file"):
        xt.decode(tmp_path / "nope.bin")


def xen_keeps(mask, event):
    """__trace_var()'s filter in xen/common/trace.c (4.17): any common bit, then the class bits
    (>> TRC_CLS_SHIFT 16) and the subclass nibble (>> TRC_SUBCLS_SHIFT 12) must each overlap."""
    return bool(mask & event and (mask >> 16) & (event >> 16) and (mask >> 12) & 0xF & (event >> 12) & 0xF)


def test_event_ids():
    assert xt.CPU_CHANGE_HEADER == 0x2001F003
    assert xt.TRC_HW_IRQ_HANDLED == 0x00802008
    assert (xt.TRC_TESTBED, xt.TRC_TESTBED_IRQ_ENTRY, xt.TRC_TESTBED_PATH) == (0x00804000, IRQ_ENTRY, PATH)


def test_event_mask_records_ours_and_no_stock_irq_record():
    from orchestrator import measure
    assert measure.XENTRACE_EVENTS == xt.XENTRACE_EVENTS == "0x00804000"
    mask = int(xt.XENTRACE_EVENTS, 16)
    assert xen_keeps(mask, IRQ_ENTRY) and xen_keeps(mask, PATH)
    stock = [xt.TRC_HW_IRQ + n for n in range(1, 9)] + [0x00801001, 0x00801002, 0x00801003]  # TRC_HW_IRQ/PM
    assert [e for e in stock if xen_keeps(mask, e)] == []
    assert xen_keeps(0x00802000, xt.TRC_HW_IRQ_HANDLED)  # the old mask kept stock's record: the asymmetry


# ---- path records

KICK, WAKE, SCHEDIN, NATSUME = 1 << 1, 1 << 2, 1 << 3, 1 << 4


def test_path_record_decodes_to_its_stamps():
    bounce = (3 << 32) + 100  # the distances reach back across a 2**32 boundary
    data = window(1, path(0x7FF5, 0x1A2, 1 | WAKE | SCHEDIN, bounce, pending=bounce - 4000, notify=bounce - 3500,
                          schedin=bounce - 700))
    [p] = xt.path_records(xt.decode(data))
    assert p == xt.PathStamp(cpu=1, domid=0x7FF5, vcpu=0x1A2, flags=1 | WAKE | SCHEDIN, bounce_tsc=bounce,
                             pending_tsc=bounce - 4000, notify_tsc=bounce - 3500, schedin_tsc=bounce - 700,
                             natsume_first=False, kicked=False, woken=True)


@pytest.mark.parametrize("flags, kicked, woken, natsume_first, notified, scheduled", [
    (1, False, False, False, False, False),  # pending only: nothing was kicked
    (1 | KICK, True, False, False, True, False),
    (1 | WAKE | SCHEDIN, False, True, False, True, True),
    (1 | KICK | NATSUME, True, False, True, True, False),
    (1 | SCHEDIN | NATSUME, False, False, True, False, True),
])
def test_path_flag_bits(flags, kicked, woken, natsume_first, notified, scheduled):
    [p] = xt.path_records(xt.decode(window(0, path(1, 0, flags, 10_000, 9_000, notify=9_500, schedin=9_800))))
    assert (p.kicked, p.woken, p.natsume_first, p.flags) == (kicked, woken, natsume_first, flags)
    # a stamp counts only when its flag says it was taken, whatever its word holds
    assert p.notify_tsc == (9_500 if notified else None)
    assert p.schedin_tsc == (9_800 if scheduled else None)
    assert p.pending_tsc == 9_000 and p.bounce_tsc == 10_000


def test_path_records_sorted_by_bounce_over_cpus_and_entries_ignored():
    data = window(0, path(1, 0, 1 | KICK, 2_000, 1_900, notify=1_950), natsume(0x51, 29, 0, 2_500)) \
        + window(1, path(2, 1, 1, 1_000, 900))
    paths = xt.path_records(xt.decode(data))
    assert [(p.cpu, p.domid, p.vcpu, p.bounce_tsc) for p in paths] == [(1, 2, 1, 1_000), (0, 1, 0, 2_000)]
    assert xt.path_records(xt.decode(SAMPLE)) == []  # the sample trace has entry records only


def test_bad_path_record_is_named():
    data = window(1, rec(PATH, (1 << 16, 1, 5, 0, 1, 0), tsc=9))
    with pytest.raises(xt.TraceError, match=r"^t.bin: offset 12: TRC_TESTBED_PATH with 6 data words, expected 7"):
        xt.path_records(xt.decode(data), source="t.bin")


if __name__ == "__main__":
    SAMPLE.write_bytes(build_sample_trace())
    print(f"wrote {SAMPLE} ({SAMPLE.stat().st_size} bytes)", file=sys.stderr)
