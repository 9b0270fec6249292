"""Each vCPU's own instructions inside a measured span (the TCG plugin images/plugin/vcpucount.c).

Under `-icount shift=0` a span of TSC ticks on the RT pCPU counts the instructions of every
vCPU that ran inside it (single-threaded TCG runs them round robin) plus the idle time QEMU
skipped (`sleep=off`). The plugin logs, at every TSC read of the stamp sites executed by the
RT pCPU's vCPU, the instructions of all vCPUs so far (`total`) and the RT pCPU's own (`own`).
Here those records are aligned with the stamps' TSC values: between two idle skips TSC - total
is one constant, so a stamp's record is the one at `total = tsc - offset`. A sample then splits
into the RT pCPU's own instructions, the other vCPUs' and the skipped idle time.

Sites: 0 is Xen's do_IRQ (its entry stamp; xen-syms gives the range), 1 is the guest kernel's
ftrace clock, trace_clock_x86_tsc (the RT guest runs dom0's kernel; its address is read from
dom0's /proc/kallsyms once dom0 runs and handed to the plugin through its control file).
"""

import bisect
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .deadline import Deadline
from .errors import TestbedError

RECORD = struct.Struct("<QQQII")  # total, own, pc, site, vcpu (the plugin's struct record)
SITE_TOTALS = 0xFFFFFFFF
SITE_XEN_ENTRY, SITE_GUEST_CLOCK = 0, 1
GUEST_TEXT = (0xFFFFFFFF80000000, 0xFFFFFFFFC0000000)  # the PV kernel's text, where site 1 may lie
GUEST_CLOCK_SYMBOL = "trace_clock_x86_tsc"
XEN_ENTRY_SYMBOL = "do_IRQ"
LOG_FILE = "vcpu-counts.bin"
# An instruction that faults is counted by the plugin (before it runs) but not by icount (it is
# retired later): TSC - total drifts down a little (measured: 36-133 ticks over 2-4 million
# instructions). A match allows DRIFT plus DRIFT_RATE of the instructions since the last match.
DRIFT = 64
DRIFT_RATE = 1e-4
MAX_SKIP = 8  # records of a site its stamps may skip at one place (reads the dump left out)


class VcpuCountError(TestbedError):
    pass


@dataclass(frozen=True)
class Event:
    total: int
    own: int
    pc: int
    site: int
    vcpu: int


def symbol_range(xen_syms, name=XEN_ENTRY_SYMBOL):
    """[start, end) of a function in xen-syms (nm -S)."""
    try:
        out = subprocess.run(["nm", "-S", "--defined-only", str(xen_syms)], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise VcpuCountError(f"cannot read the symbols of {xen_syms}: {exc}") from None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == name:
            start = int(parts[0], 16)
            return start, start + int(parts[1], 16)
    raise VcpuCountError(f"{xen_syms} has no symbol {name}")


def plugin_option(plugin, log, ctl, vcpu, xen_entry, gate=None):
    """The -plugin value: Xen's entry site logging from the start, the guest clock site off until
    the control file names its function; `gate`: the (out, in) FIFOs of instruction pacing."""
    lo, hi = xen_entry
    return (f"file={plugin},out={log},ctl={ctl},vcpu={vcpu},site={lo:x}:{hi:x},"
            f"site={GUEST_TEXT[0]:x}:{GUEST_TEXT[1]:x}:off" + (f",gate={gate[0]}:{gate[1]}" if gate else ""))


def kallsyms_range(text, name=GUEST_CLOCK_SYMBOL):
    """/proc/kallsyms text -> [start, end) of a function (end: the next higher address)."""
    addrs = sorted({int(a, 16) for a, _t, _n in (ln.split()[:3] for ln in text.splitlines() if len(ln.split()) >= 3)})
    m = re.search(rf"^([0-9a-f]+) [tT] {re.escape(name)}$", text, re.M)
    if not m or int(m.group(1), 16) == 0:
        raise VcpuCountError(f"/proc/kallsyms shows no address of {name} (kptr_restrict?)")
    start = int(m.group(1), 16)
    k = bisect.bisect_right(addrs, start)
    return start, addrs[k] if k < len(addrs) else start + 64


def write_ctl(ctl, lines, replace=None):
    """Rewrite the control file with `lines`; `replace`: keep its other lines, dropping those that
    start with this word. The plugin reads it every 100 ms: it is renamed into place, never half written."""
    old = Path(ctl).read_text().splitlines() if replace and Path(ctl).exists() else []
    kept = [ln for ln in old if ln.split()[:1] != [replace]]
    tmp = Path(f"{ctl}.tmp")
    tmp.write_text("".join(f"{ln}\n" for ln in kept + list(lines)))
    tmp.replace(ctl)


def open_gate(ctl, generation, step):
    """Tell the plugin to gate every `step` instructions (0: close); a new generation makes it act."""
    write_ctl(ctl, [f"gate {generation} {step}"], replace="gate")


def activate_guest_clock(agent, ctl, log, wait_s=10):
    """Find the guest clock function in dom0's kernel (the RT guest's too), let the plugin log it and
    move its log to `log` (this measurement's); -> the function's range once the plugin writes there."""
    # the function's line and the next higher text symbol: its end
    text = agent.run(f"awk '$2 ~ /^[tT]$/ && NF == 3' /proc/kallsyms | sort | grep -A1 ' {GUEST_CLOCK_SYMBOL}$'",
                     timeout=60).stdout
    lo, hi = kallsyms_range(text)
    if " " in str(log):
        raise VcpuCountError(f"the plugin's log path {log} contains a space")
    write_ctl(ctl, [f"{SITE_GUEST_CLOCK} {lo:x} {hi:x}", f"out {log}"])
    for _ in Deadline(wait_s).poll(0.1):
        if Path(log).exists():
            return lo, hi
    raise VcpuCountError(f"the vCPU plugin did not open its log {log} within {wait_s} s of being told to "
                         f"(control file {ctl}): is QEMU running with it?")


def read_log(path):
    """-> (events in log order, {vcpu: instructions over the run} or {} if QEMU had not exited)."""
    data = Path(path).read_bytes()
    usable = len(data) - len(data) % RECORD.size  # a record being written when read: dropped
    events, totals = [], {}
    for total, own, pc, site, vcpu in RECORD.iter_unpack(data[:usable]):
        if site == SITE_TOTALS:
            totals[vcpu] = own
        else:
            events.append(Event(total, own, pc, site, vcpu))
    return events, totals


def align(stamps, events):
    """stamps: [(tsc, site)] of TSC reads on the watched vCPU, any order; events: the plugin's
    records. -> {index in stamps: Event} for the stamps placed on a record.

    Per site, the records are the stamps one to one, in order, but for a few reads the dump left
    out: stamp i is record i + shift, the shift growing by one at each such read. TSC - total
    is one offset between idle skips, which come between most stamps of an idle guest; where
    none came, the gap from a stamp to its neighbour equals the gap between their records (to a
    drift of DRIFT + DRIFT_RATE of the gap). Such a "pin" fixes the shift; between pins the
    shift stays. A site's range may hold other TSC reads than the stamps' (do_IRQ reads the TSC at
    three places): per site the records of the one address that pins the most stamps are used."""
    out = {}
    for site in sorted({st[1] for st in stamps}):
        idx = sorted((i for i, st in enumerate(stamps) if st[1] == site), key=lambda i: stamps[i][0])
        by_pc = {}
        for e in events:
            if e.site == site:
                by_pc.setdefault(e.pc, []).append(e)
        if not by_pc:
            continue
        tscs = [stamps[i][0] for i in idx]
        tried = {pc: _align_site(tscs, [e.total for e in records]) for pc, records in by_pc.items()}
        pc = max(tried, key=lambda pc: (tried[pc][1], -pc))
        for n, j in tried[pc][0].items():
            out[idx[n]] = by_pc[pc][j]
    return out


def _pin_vector(T, G, i, shifts):
    """For stamp i and each candidate shift d (record i + d): does a neighbour's gap equal its record's
    (no idle skip between, to the drift)? G: the gaps between consecutive records."""
    out = np.zeros(len(shifts), dtype=bool)
    j = i + shifts
    for step in (1, -1):
        if not 0 <= i + step < len(T):
            continue
        gap_t = abs(T[i + step] - T[i])
        k = j if step == 1 else j - 1  # the gap between record j and its neighbour
        ok = (k >= 0) & (k < len(G)) & (j >= 0) & (j <= len(G))
        gap_c = G[np.clip(k, 0, max(len(G) - 1, 0))] if len(G) else np.zeros(len(shifts))
        out |= ok & (np.abs(gap_t - gap_c) <= DRIFT + DRIFT_RATE * gap_c)
    return out


def _offset_bounds(T, C, js, pins):
    """Per stamp: (lowest, highest) offset TSC - total it may have: idle skips only raise the offset, so
    it lies between the pinned stamps' before and after it (give or take the drift)."""
    n = len(T)
    lo, hi = [-np.inf] * n, [np.inf] * n
    last = -np.inf
    for i in range(n):
        lo[i] = last
        if pins[i] and 0 <= js[i] < len(C):
            last = T[i] - C[js[i]]
    nxt = np.inf
    for i in range(n - 1, -1, -1):
        hi[i] = nxt
        if pins[i] and 0 <= js[i] < len(C):
            nxt = T[i] - C[js[i]]
    return [(lo[i] - DRIFT, hi[i] + DRIFT) for i in range(n)]


SKIP_COST, BACK_COST, FAR_COST = 0.5, 2.0, 0.05  # per record skipped, per step back, per record of start shift


def _align_site(T, C):
    """Sorted stamp TSCs T and record totals C of one site -> ({stamp index: record index}, pins).

    The shift d (stamp i is record i + d) is chosen per stamp by dynamic programming: a pin scores 1,
    each record skipped (d up) costs SKIP_COST, a stamp without record (d down) BACK_COST, a start far
    from 0 FAR_COST per record. Periodic gaps (a timer's) pin at several shifts; the path that keeps
    pinning through the irregular gaps wins."""
    if not T or not C:
        return {}, 0
    T, C = np.asarray(T, dtype=np.int64), np.asarray(C, dtype=np.int64)
    G = np.diff(C)
    shifts = np.arange(-MAX_SKIP, max(64, len(C) - len(T) + 2 * MAX_SKIP) + 1)
    pinned = [None] * len(T)
    pinned[0] = _pin_vector(T, G, 0, shifts)
    score = -FAR_COST * np.abs(shifts) + pinned[0]
    moves = np.zeros((len(T), len(shifts)), dtype=np.int8)  # the shift change that led to each state
    for i in range(1, len(T)):
        best, move = score.copy(), np.zeros(len(shifts), dtype=np.int8)
        for k in range(1, MAX_SKIP + 1):  # from shift d - k: k records skipped
            cand = np.full(len(shifts), -np.inf)
            cand[k:] = score[:-k] - SKIP_COST * k
            better = cand > best
            best[better], move[better] = cand[better], k
        cand = np.full(len(shifts), -np.inf)  # from shift d + 1: stamp i - 1 had no record
        cand[:-1] = score[1:] - BACK_COST
        better = cand > best
        best[better], move[better] = cand[better], -1
        pinned[i] = _pin_vector(T, G, i, shifts)
        score, moves[i] = best + pinned[i], move
    at = int(np.argmax(score))
    path = [0] * len(T)
    for i in range(len(T) - 1, -1, -1):
        path[i] = at
        at -= int(moves[i][at])
    out, owner, n_pins = {}, {}, 0
    pins_at = [bool(pinned[i][at]) for i, at in enumerate(path)]
    bounds = _offset_bounds(T, C, [i + int(shifts[at]) for i, at in enumerate(path)], pins_at)
    d = [int(shifts[at]) for at in path]
    for i, at in enumerate(path):
        j, pin = i + d[i], pins_at[i]
        n_pins += pin
        if not pin:
            # Beside a change of shift an unpinned stamp may belong to either side: its offset must lie
            # between the pinned stamps' around it, and if both sides' records do, it is left out.
            near = {i + d[k] for k in (i - 1, i, i + 1) if 0 <= k < len(d)}
            fit = [c for c in sorted(near) if 0 <= c < len(C) and bounds[i][0] <= T[i] - C[c] <= bounds[i][1]]
            if len(fit) != 1:
                continue
            j = fit[0]
        if not (0 <= j < len(C) and T[i] - C[j] >= -DRIFT):  # the offset is never negative
            continue
        rival = owner.pop(j, None)
        if rival is not None:  # two stamps on one record: keep the pinned one (or neither)
            out.pop(rival, None)
            if not pin:
                if pins_at[rival]:
                    out[rival], owner[j] = j, rival
                continue
        out[i], owner[j] = j, i
    return out, n_pins


SPLIT_COLUMNS = ("rt_own", "others", "idle_skipped")


def split_samples(samples, entry_stamps, guest_stamps, events):
    """-> one dict per sample: rt_own (the RT pCPU's own instructions from Xen's entry to the guest
    handler), others (the other vCPUs' instructions inside it), idle_skipped (ticks QEMU skipped with
    every vCPU idle, less the drift: a few tens below 0 over millions of instructions); None where a
    stamp found no record. Also -> how many samples were split."""
    stamps = [(t, SITE_XEN_ENTRY) for t in entry_stamps] + [(t, SITE_GUEST_CLOCK) for t in guest_stamps]
    placed = align(stamps, events)
    at = {}
    for i, e in placed.items():
        at[stamps[i]] = e
    rows, split = [], 0
    for s in samples:
        e, g = at.get((s.vmm_tsc, SITE_XEN_ENTRY)), at.get((s.guest_tsc, SITE_GUEST_CLOCK))
        if e is None or g is None or g.total < e.total:
            rows.append(dict.fromkeys(SPLIT_COLUMNS))
            continue
        everyone, own = g.total - e.total, g.own - e.own
        row = {"rt_own": own, "others": everyone - own, "idle_skipped": (s.guest_tsc - s.vmm_tsc) - everyone}
        # records that cannot be this span's: not split (idle_skipped may dip below 0 by the drift)
        if row["others"] < 0 or row["idle_skipped"] < -(DRIFT + DRIFT_RATE * everyone):
            rows.append(dict.fromkeys(SPLIT_COLUMNS))
            continue
        split += 1
        rows.append(row)
    return rows, split


def split_stats(rows, samples, breakdowns, rt_pcpu, n_events):
    """summary.json's vcpu_split: per path class, the medians and p99s of the elapsed ticks and of
    their three parts, over the samples that were split."""
    from .analysis import percentile
    groups = {}
    for row, s, b in zip(rows, samples, breakdowns or [None] * len(samples)):
        if row["rt_own"] is None:
            continue
        for name in ["all"] + ([b.path] if b else []):
            groups.setdefault(name, []).append((s.latency_ticks, row))
    out = {"rt_pcpu": rt_pcpu, "plugin_records": n_events, "samples": len(samples),
           "split": sum(1 for r in rows if r["rt_own"] is not None), "paths": {}}
    for name, members in groups.items():
        entry = {"n": len(members)}
        for key, values in (("elapsed", [lat for lat, _ in members]),
                            *((c, [r[c] for _, r in members]) for c in SPLIT_COLUMNS)):
            xs = sorted(values)
            entry[key] = {"median": percentile(xs, 0.5), "p99": percentile(xs, 0.99)}
        out["paths"][name] = entry
    return out
