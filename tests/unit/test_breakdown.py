"""Per-interrupt breakdown: each paired sample split at Xen's path stamps, and classified."""

from types import SimpleNamespace

from orchestrator import analysis, breakdown

RT = 5


def sample(entry, upcall, handler):
    return analysis.Sample(0, 1, 29, entry, handler, handler - entry, float(handler - entry), upcall)


def path(bounce, pending, notify=None, schedin=None, kicked=False, woken=False, domid=RT):
    return SimpleNamespace(domid=domid, bounce_tsc=bounce, pending_tsc=pending, notify_tsc=notify,
                           schedin_tsc=schedin, kicked=kicked, woken=woken)


def test_running_vcpu_segments_add_up_to_the_latency():
    s = sample(1000, 2500, 3100)
    [b] = breakdown.attach([s], [path(2000, 1300, notify=1400, kicked=True)], RT)
    assert b.path == "running"
    assert b.segments == {"entry_to_pending": 300, "pending_to_notify": 100, "notify_to_schedin": None,
                          "to_bounce": 600, "bounce_to_upcall": 500, "upcall_to_handler": 600}
    assert sum(v for v in b.segments.values() if v) == s.latency_ticks


def test_blocked_vcpu_is_woken_and_scheduled_in():
    [b] = breakdown.attach([sample(1000, 9000, 9500)], [path(8000, 1200, notify=1300, schedin=7000, woken=True)], RT)
    assert b.path == "woken" and b.segments["notify_to_schedin"] == 5700 and b.segments["to_bounce"] == 1000


def test_event_already_pending_before_the_entry_is_coalesced():
    [b] = breakdown.attach([sample(1000, 2500, 3000)], [path(2000, 900, notify=950, kicked=True)], RT)
    assert b.path == "coalesced" and b.segments["entry_to_pending"] is None
    assert b.segments["bounce_to_upcall"] == 500  # what follows the bounce is still this interrupt's


def test_records_of_other_domains_or_outside_the_span_do_not_match():
    s = sample(1000, 2500, 3000)
    assert breakdown.attach([s], [path(2000, 1100, domid=0)], RT)[0].path == "unmatched"
    assert breakdown.attach([s], [path(2600, 1100)], RT)[0].path == "unmatched"  # after the upcall
    assert breakdown.attach([s], [path(900, 800)], RT)[0].path == "unmatched"  # before the entry


def test_first_bounce_after_the_entry_is_the_samples():
    recs = [path(5000, 4100, notify=4200, kicked=True), path(2000, 1100, notify=1200, kicked=True)]
    got = breakdown.attach([sample(1000, 2500, 3000), sample(4000, 5500, 6000)], recs, RT)
    assert [b.segments["entry_to_pending"] for b in got] == [100, 100]


def test_no_kick_stamped_is_its_own_path():
    assert breakdown.attach([sample(1000, 2500, 3000)], [path(2000, 1100)], RT)[0].path == "no_notify"


def test_segment_stats_per_path_and_overall():
    bs = [breakdown.Breakdown("running", dict.fromkeys(breakdown.SEGMENT_NAMES, v)) for v in (10, 20, 30)]
    bs.append(breakdown.Breakdown("woken", dict.fromkeys(breakdown.SEGMENT_NAMES)))
    st = breakdown.segment_stats(bs, [60, 120, 180, 999])
    assert st["running"]["n"] == 3 and st["running"]["to_bounce"]["median"] == 20
    assert st["all"]["latency"]["median"] == 150
    assert st["woken"]["to_bounce"] == {"median": None, "p99": None, "n": 0, "bar": 0}
    assert st["all"]["to_bounce"]["bar"] == 15  # median of 10, 20, 30 and the absent 0
    assert breakdown.path_counts(bs) == {"running": 3, "woken": 1, "coalesced": 0, "no_notify": 0, "unmatched": 0}
