"""The vCPU plugin's records aligned with the stamps' TSCs (orchestrator/vcpucount.py)."""

import random

import pytest

from orchestrator import vcpucount
from orchestrator.analysis import Sample
from orchestrator.vcpucount import SITE_GUEST_CLOCK, SITE_XEN_ENTRY, Event


def timeline(seed=1, n=400, warp_every=37, extra_every=97):
    """Events of both sites with their TSCs: TSC = total + offset, the offset raised by idle skips.
    Every `extra_every`-th event of the guest clock has no stamp (a read the dump left out)."""
    rng = random.Random(seed)
    total, own, offset = 1000, 0, 5_000_000
    events, tscs, stamped = [], [], []
    for i in range(n):
        step = rng.randint(200, 90_000)
        total += step
        own += rng.randint(0, step)
        if i % warp_every == warp_every - 1:
            offset += rng.randint(10_000, 10_000_000)  # all vCPUs idle: QEMU skipped ahead
        site = SITE_XEN_ENTRY if i % 3 == 0 else SITE_GUEST_CLOCK
        events.append(Event(total, own, 0xFFFF82D040328000 if site == 0 else 0xFFFFFFFF81100000, site, 1))
        tscs.append(total + offset)
        stamped.append(not (site == SITE_GUEST_CLOCK and i % extra_every == 0))
    return events, tscs, stamped


def test_align_recovers_every_stamped_record_across_idle_skips():
    events, tscs, stamped = timeline()
    stamps = [(t, e.site) for e, t, keep in zip(events, tscs, stamped) if keep]
    want = [e for e, keep in zip(events, stamped) if keep]
    placed = vcpucount.align(list(reversed(stamps)), events)  # any order in
    got = [placed.get(len(stamps) - 1 - i) for i in range(len(stamps))]
    assert got == want


def test_align_tolerates_drift_from_faulting_instructions():
    events, tscs, _ = timeline(seed=2, warp_every=10**9)
    drifted = [t - i // 20 for i, t in enumerate(tscs)]  # one fault every 20 records: TSC - total sinks
    placed = vcpucount.align([(t, e.site) for e, t in zip(events, drifted)], events)
    assert len(placed) == len(events)


def test_align_leaves_a_stamp_without_record_unplaced():
    events, tscs, _ = timeline(seed=3)
    stamps = [(t, e.site) for e, t in zip(events, tscs)]
    stamps.insert(50, (tscs[49] + 7, SITE_XEN_ENTRY))  # nothing in the log at this TSC
    placed = vcpucount.align(stamps, events)
    assert 50 not in placed
    assert len(placed) == len(events)


def test_split_samples_splits_elapsed_into_own_others_and_idle():
    # entry at total 1000 (own 400), handler at total 6000 (own 2400); TSC offset +500 after an idle skip
    events = [Event(1000, 400, 0, SITE_XEN_ENTRY, 3), Event(3000, 1000, 0, SITE_GUEST_CLOCK, 3),
              Event(6000, 2400, 0, SITE_GUEST_CLOCK, 3)]
    entry, upcall, handler = 1000 + 10_000, 3000 + 10_000, 6000 + 10_500
    sample = Sample(1, 3, 40, entry, handler, handler - entry, 0.0, upcall)
    with_more = [(entry + 1_000_000 * k, SITE_XEN_ENTRY) for k in range(1, 6)]
    more_events = [Event(1000 + 1_000_000 * k - 500, 0, 0, SITE_XEN_ENTRY, 3) for k in range(1, 6)]
    rows, split = vcpucount.split_samples([sample], [entry] + [t for t, _ in with_more], [upcall, handler],
                                          events + more_events)
    assert split == 1
    assert rows == [{"rt_own": 2000, "others": 3000, "idle_skipped": 500}]


def test_split_samples_leaves_unplaced_samples_empty():
    sample = Sample(1, 3, 40, 10, 20, 10, 0.0)
    rows, split = vcpucount.split_samples([sample], [10], [20], [])
    assert split == 0 and rows == [dict.fromkeys(vcpucount.SPLIT_COLUMNS)]


def test_read_log_separates_totals_and_drops_a_torn_record(tmp_path):
    path = tmp_path / vcpucount.LOG_FILE
    data = vcpucount.RECORD.pack(10, 4, 0x1234, 0, 3) + vcpucount.RECORD.pack(99, 50, 0, vcpucount.SITE_TOTALS, 3)
    path.write_bytes(data + b"\x01\x02\x03")
    events, totals = vcpucount.read_log(path)
    assert events == [Event(10, 4, 0x1234, 0, 3)]
    assert totals == {3: 50}


def test_kallsyms_range_ends_at_the_next_symbol():
    text = ("ffffffff81123450 T trace_clock_x86_tsc\nffffffff81123470 T trace_clock_counter\n")
    assert vcpucount.kallsyms_range(text) == (0xFFFFFFFF81123450, 0xFFFFFFFF81123470)


@pytest.mark.parametrize("text", ["", "0000000000000000 T trace_clock_x86_tsc\n"])
def test_kallsyms_range_without_an_address_is_an_error(text):
    with pytest.raises(vcpucount.VcpuCountError, match="trace_clock_x86_tsc"):
        vcpucount.kallsyms_range(text)


def test_plugin_option_names_both_sites_and_the_control_file():
    opt = vcpucount.plugin_option("/c/vcpucount.so", "/r/raw/vcpu-counts.bin", "/t/vcpu-ctl", 3, (0x10, 0x20))
    assert opt == ("file=/c/vcpucount.so,out=/r/raw/vcpu-counts.bin,ctl=/t/vcpu-ctl,vcpu=3,site=10:20,"
                   "site=ffffffff80000000:ffffffffc0000000:off")


def test_periodic_gaps_do_not_pull_the_alignment_off():
    """A busy guest's timer ticks give runs of equal gaps, which pin at many shifts; with a few reads the
    dump left out (three at the start, then one every 150) every stamp still lands on its own record."""
    rng = random.Random(7)
    total, offset, events, stamped = 10_000, 1_000_000_000, [], []
    for i in range(3000):
        if i % 10 < 6:
            step = 4_000_000  # ticks of the guest's timer, nothing skipped between them
        else:
            step = rng.randint(1_000, 80_000)
            if rng.random() < 0.5:
                offset += rng.randint(1_000, 5_000_000)  # an idle skip
        total += step
        events.append(Event(total, total // 2, 0xFFFFFFFF81076823, SITE_GUEST_CLOCK, 3))
        stamped.append(i >= 3 and i % 150 != 77)
        events[-1] = Event(total, total // 2, 0xFFFFFFFF81076823, SITE_GUEST_CLOCK, 3)
        if stamped[-1]:
            stamped[-1] = total + offset
    stamps = [(t, SITE_GUEST_CLOCK) for t in stamped if t]
    want = [e for e, t in zip(events, stamped) if t]
    placed = vcpucount.align(stamps, events)
    wrong = [i for i, e in placed.items() if e != want[i]]
    assert not wrong and len(placed) >= 0.99 * len(stamps), (wrong[:5], len(placed), len(stamps))
