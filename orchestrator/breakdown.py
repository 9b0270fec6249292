"""Split each paired interrupt into the segments of its delivery path.

Inputs, all on the one TSC: the paired samples (Xen's interrupt entry E, the guest's
upcall entry U and handler entry G) and Xen's path records (`xentrace.PathStamp`: the
event set pending P, the vCPU kicked or woken N, the vCPU scheduled in S, the upcall
bounce frame built B). Both variants write exactly these stamps (the measurement
patch, hypervisor_patch/0001), so their segments compare one to one.

For a sample, its path record is the first one of the RT domain whose bounce lies in
(E, U] (or (E, G) when the guest did not stamp its upcall). The record's stamps are
first-wins per delivery, so a P before E means the event was already pending when this
interrupt came in: the interrupt was coalesced into an earlier delivery.
"""

from bisect import bisect_right
from dataclasses import dataclass

from . import analysis

# Order is the path's order; one source for the CSV columns, the report's table and its bars.
SEGMENTS = (
    ("entry_to_pending", "Xen's interrupt entry to the event set pending"),
    ("pending_to_notify", "event pending to the vCPU kicked (running) or woken (blocked)"),
    ("notify_to_schedin", "vCPU woken to scheduled in (blocked path only)"),
    ("to_bounce", "last of those to the upcall bounce frame built on the return to the guest"),
    ("bounce_to_upcall", "bounce frame to the guest's upcall entry"),
    ("upcall_to_handler", "guest's upcall entry to its handler entry"),
)
SEGMENT_NAMES = tuple(name for name, _ in SEGMENTS)
# running: the vCPU ran when the event came; woken: it was blocked; coalesced: the event was
# already pending; no_notify: pending, but no kick or wake stamped (another event had already
# raised the upcall); unmatched: no path record between entry and upcall.
PATHS = ("running", "woken", "coalesced", "no_notify", "unmatched")


@dataclass(frozen=True)
class Breakdown:
    path: str  # one of PATHS
    segments: dict  # segment name -> ticks, or None where the path has no such segment


def attach(samples, path_stamps, rt_domid):
    """-> one Breakdown per sample, in the samples' order."""
    mine = sorted((p for p in path_stamps if p.domid == rt_domid), key=lambda p: p.bounce_tsc)
    bounces = [p.bounce_tsc for p in mine]
    return [_one(s, mine, bounces) for s in samples]


def _one(s, mine, bounces):
    end = s.upcall_tsc if s.upcall_tsc is not None and s.upcall_tsc > s.vmm_tsc else s.guest_tsc
    k = bisect_right(bounces, s.vmm_tsc)
    if k == len(mine) or mine[k].bounce_tsc > end:
        return Breakdown("unmatched", dict.fromkeys(SEGMENT_NAMES))
    p = mine[k]
    seg = dict.fromkeys(SEGMENT_NAMES)
    upcall = s.upcall_tsc if s.upcall_tsc is not None and s.upcall_tsc >= p.bounce_tsc else None
    if upcall is not None:
        seg["bounce_to_upcall"] = upcall - p.bounce_tsc
        seg["upcall_to_handler"] = s.guest_tsc - upcall
    if p.pending_tsc < s.vmm_tsc:
        return Breakdown("coalesced", seg)
    seg["entry_to_pending"] = p.pending_tsc - s.vmm_tsc
    last = p.pending_tsc
    if p.notify_tsc is not None:
        seg["pending_to_notify"] = p.notify_tsc - p.pending_tsc
        last = p.notify_tsc
    if p.schedin_tsc is not None and p.schedin_tsc >= last:
        seg["notify_to_schedin"] = p.schedin_tsc - last
        last = p.schedin_tsc
    seg["to_bounce"] = p.bounce_tsc - last
    path = "woken" if p.woken else "running" if p.kicked else "no_notify"
    return Breakdown(path, seg)


def path_counts(breakdowns):
    counts = dict.fromkeys(PATHS, 0)
    for b in breakdowns:
        counts[b.path] += 1
    return counts


def segment_stats(breakdowns, latencies):
    """{path or "all": {"n": .., "latency": {median, p99}, segment: {median, p99, n}}}: per path class,
    each segment's median and p99 over the samples that have it, next to the whole latency's."""
    groups = {"all": list(zip(breakdowns, latencies))}
    for b, lat in groups["all"]:
        groups.setdefault(b.path, []).append((b, lat))
    out = {}
    for name, members in groups.items():
        entry = {"n": len(members), "latency": _mp([lat for _, lat in members])}
        for seg in SEGMENT_NAMES:
            values = [b.segments[seg] for b, _ in members if b.segments[seg] is not None]
            # bar: the median over every member, 0 where it lacks the segment, so a rare
            # segment does not stand for the whole class in a stacked bar
            bar = _mp([b.segments[seg] or 0 for b, _ in members])["median"]
            entry[seg] = _mp(values) | {"n": len(values), "bar": bar}
        out[name] = entry
    return out


def _mp(values):
    xs = sorted(values)
    if not xs:
        return {"median": None, "p99": None}
    return {"median": analysis.percentile(xs, 0.5), "p99": analysis.percentile(xs, 0.99)}
