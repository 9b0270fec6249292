"""Stage: pair VMM and guest interrupt-entry stamps, and summarise the latencies.

Inputs are plain data: VMM stamps (cpu, irq, tsc), e.g. `xentrace.VmmStamp`,
and guest stamps (`GuestStamp`, from `parse_ftrace`), both on the one TSC
(the RT guest runs with tsc_mode="native"), and the TSC frequency Xen reports.

Pairing rule: both sides are first sorted by TSC (stable), so input order does
not matter: VMM stamps from several CPUs are merged by TSC, and a console
capture that reorders lines is harmless. Then, for each guest stamp in TSC
order, its partner is the *latest* still-unpaired VMM stamp of the same
physical IRQ with a strictly smaller TSC; each VMM stamp pairs at most once.
So every paired latency is > 0 by construction. A guest stamp that finds no
earlier VMM stamp, while the next VMM stamp of its IRQ (same or later TSC)
stays unpaired, would have had a latency <= 0: that pair is reported in
`Pairing.nonpositive` (a clock problem: the run must fail), not in `samples`.
Pairing cannot detect a skew smaller than the spacing of interrupts (each
guest stamp then pairs with the previous interrupt): watch the latency range.
"""

import csv
import fnmatch
import math
import re
import statistics
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from .errors import TestbedError

PERCENTILES = {"p90": 0.90, "p99": 0.99, "p999": 0.999}


class AnalysisError(TestbedError, ValueError):
    """Bad input to the analysis (a record file, a parameter); the message names file and line."""


@dataclass(frozen=True)
class GuestStamp:
    tsc: int
    irq: int  # the guest's Linux IRQ number; pair() maps it to Xen's physical IRQ
    upcall_tsc: int | None = None  # latest event-channel upcall entry on the same guest CPU before it
    cpu: int | None = None  # guest vCPU
    name: str | None = None
    line: int | None = None  # line number in the source text


@dataclass(frozen=True)
class Sample:
    seq: int
    cpu: int  # the pCPU on which Xen took the interrupt
    irq: int  # Xen's physical IRQ
    vmm_tsc: int
    guest_tsc: int
    latency_ticks: int
    latency_ns: float
    upcall_tsc: int | None = None  # the guest's upcall entry before its handler, if stamped
    # The vCPU plugin's split of latency_ticks (vcpucount.SPLIT_COLUMNS), when it ran and placed both stamps
    rt_own: int | None = None
    others: int | None = None
    idle_skipped: int | None = None


@dataclass
class Pairing:
    samples: list  # Sample, in guest TSC order, latency > 0
    unpaired_vmm: int  # measured-IRQ VMM stamps (inside the window, if one is given) with no guest stamp
    unpaired_guest: int  # guest stamps with no partner (and no would-be partner)
    nonpositive: list = field(default_factory=list)  # would-be pairs with latency <= 0 (Sample objects)
    vmm_outside: int = 0  # unpaired measured-IRQ VMM stamps outside the window: not counted as unpaired

    @property
    def unpaired_pct_raw(self):
        """Percent of interrupts not paired, before coalesced VMM stamps are set aside (summary.json's
        `unpaired_pct` is after): a pair is one interrupt, and so is each unpaired stamp and each
        would-be (non-positive) pair."""
        bad = self.unpaired_vmm + self.unpaired_guest + len(self.nonpositive)
        return 100 * bad / (len(self.samples) + bad) if self.samples or bad else 0.0


# ---------------------------------------------------------------- pairing

def cycles_to_ns(cycles, tsc_khz):
    return cycles * 1e6 / tsc_khz  # kHz = cycles per ms; 1 ms = 1e6 ns


def pair(vmm_stamps, guest_stamps, tsc_khz, irq_map=None, window=None):
    """Pair stamps (rule in the module docstring).

    irq_map: guest Linux IRQ -> Xen physical IRQ (None: the numbers are the same).
    window: (first_tsc, last_tsc) of the measurement; unpaired VMM stamps outside it are
    counted in `vmm_outside` instead of `unpaired_vmm` (None: no window, all count).
    Only VMM stamps of the measured IRQs count: the irq_map's physical IRQs if given (so an
    empty guest trace still shows every VMM stamp unpaired), else those the guest stamps name."""
    _check_khz(tsc_khz)
    guest = sorted(guest_stamps, key=lambda g: g.tsc)
    phys = [_physical_irq(g.irq, irq_map) for g in guest]
    measured = set(irq_map.values()) if irq_map is not None else set(phys)
    vmm = sorted((v for v in vmm_stamps if v.irq in measured), key=lambda v: v.tsc)
    matched, lonely_guest, leftover = _match(vmm, guest, phys)
    nonpositive, leftover, lonely_guest = _would_be_pairs(lonely_guest, vmm, leftover)
    samples = [_sample(i, v, g, tsc_khz) for i, (v, g) in enumerate(matched)]
    negatives = [_sample(i, v, g, tsc_khz) for i, (v, g) in enumerate(nonpositive)]
    inside = [v for v in leftover if window is None or window[0] <= v.tsc <= window[1]]
    return Pairing(samples, len(inside), len(lonely_guest), negatives, len(leftover) - len(inside))


def coalesced(vmm_stamps, samples):
    """Split the unpaired VMM stamps: `coalesced` when the next guest stamp of the same IRQ was
    paired with a later VMM stamp (Xen took the interrupt again before the guest's handler ran,
    so one handler run served both entries), `lonely` otherwise. -> (coalesced, lonely)."""
    paired = {(s.irq, s.vmm_tsc) for s in samples}
    runs = {}
    for s in samples:
        runs.setdefault(s.irq, []).append((s.guest_tsc, s.vmm_tsc))
    for lst in runs.values():
        lst.sort()
    merged = lonely = 0
    for v in vmm_stamps:
        if (v.irq, v.tsc) in paired:
            continue
        lst = runs.get(v.irq, [])
        k = bisect_right(lst, (v.tsc, float("inf")))
        if k < len(lst) and lst[k][1] > v.tsc:
            merged += 1
        else:
            lonely += 1
    return merged, lonely


def _physical_irq(irq, irq_map):
    if irq_map is None:
        return irq
    if irq not in irq_map:
        raise AnalysisError(f"guest IRQ {irq} has no physical IRQ in the irq map {dict(irq_map)}")
    return irq_map[irq]


def _match(vmm, guest, phys):
    """Sweep by TSC; per IRQ a stack of unpaired VMM stamps whose top is the latest one."""
    stacks, i = {}, 0
    matched, lonely_guest = [], []
    for g, irq in zip(guest, phys):
        while i < len(vmm) and vmm[i].tsc < g.tsc:
            stacks.setdefault(vmm[i].irq, []).append(vmm[i])
            i += 1
        stack = stacks.get(irq)
        if stack:
            matched.append((stack.pop(), g, irq))
        else:
            lonely_guest.append((g, irq))
    leftover = sorted([v for s in stacks.values() for v in s] + vmm[i:], key=lambda v: v.tsc)
    return [(v, g) for v, g, _ in matched], lonely_guest, leftover


def _would_be_pairs(lonely_guest, vmm, leftover):
    """A lonely guest stamp whose IRQ's next VMM stamp (same or later TSC) stayed unpaired is a
    would-be pair with latency <= 0; otherwise (that VMM stamp went to a later guest stamp) it is
    just unpaired, e.g. a guest stamp from before xentrace started."""
    by_irq = {}
    for v in vmm:
        by_irq.setdefault(v.irq, []).append(v)
    tscs = {irq: [v.tsc for v in vs] for irq, vs in by_irq.items()}
    free = {id(v) for v in leftover}
    pairs, still_lonely = [], []
    for g, irq in lonely_guest:
        k = bisect_left(tscs.get(irq, []), g.tsc)
        nxt = by_irq[irq][k] if k < len(tscs.get(irq, [])) else None
        if nxt is not None and id(nxt) in free:
            free.discard(id(nxt))
            pairs.append((nxt, g))
        else:
            still_lonely.append(g)
    return pairs, [v for v in leftover if id(v) in free], still_lonely


def _sample(seq, v, g, tsc_khz):
    cycles = g.tsc - v.tsc
    return Sample(seq, v.cpu, v.irq, v.tsc, g.tsc, cycles, cycles_to_ns(cycles, tsc_khz), g.upcall_tsc)


def _check_khz(tsc_khz):
    if not isinstance(tsc_khz, (int, float)) or isinstance(tsc_khz, bool) or not tsc_khz > 0:
        raise AnalysisError(f"tsc_khz must be a positive number (Xen's reported TSC frequency), got {tsc_khz!r}")


# ---------------------------------------------------------------- statistics

def percentile(sorted_values, p):
    """Linear interpolation between closest ranks (Hyndman-Fan type 7, numpy's default,
    statistics.quantiles(method='inclusive')): h = (n-1)*p, x[floor h] + frac(h)*(x[floor h+1]-x[floor h])."""
    if not sorted_values:
        raise AnalysisError("percentile of no values")
    if not 0 <= p <= 1:
        raise AnalysisError(f"percentile {p} outside 0..1")
    h = (len(sorted_values) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def stats(values):
    """n, min, mean, median, p90, p99, p999, max, stddev (sample, n-1; 0.0 for one value).

    No values: n=0 and every other entry None (JSON null), not an error."""
    xs = sorted(values)
    if not xs:
        return dict.fromkeys(("n", "min", "mean", "median", *PERCENTILES, "max", "stddev")) | {"n": 0}
    out = {"n": len(xs), "min": xs[0], "mean": statistics.fmean(xs), "median": statistics.median(xs)}
    out |= {name: percentile(xs, p) for name, p in PERCENTILES.items()}
    out |= {"max": xs[-1], "stddev": statistics.stdev(xs) if len(xs) > 1 else 0.0}
    return out


def summary(pairing):
    """The numbers for summary.json."""
    return {"paired": len(pairing.samples), "unpaired_vmm": pairing.unpaired_vmm,
            "unpaired_guest": pairing.unpaired_guest, "nonpositive": len(pairing.nonpositive),
            "vmm_outside": pairing.vmm_outside,
            "latency_ns": stats([s.latency_ns for s in pairing.samples]),
            "latency_ticks": stats([s.latency_ticks for s in pairing.samples])}


# ---------------------------------------------------------------- samples.csv

# One row per paired interrupt. latency_ticks is the primary quantity (TSC ticks: guest
# instructions under instruction timing); latency_ns converts it at Xen's reported TSC rate.
# The breakdown columns (breakdown.SEGMENTS) are empty where a path has no such segment.
BASE_COLUMNS = ("sequence", "cpu", "irq", "vmm_tsc", "guest_tsc", "upcall_tsc", "latency_ticks", "latency_ns")


def csv_columns():
    from .breakdown import SEGMENT_NAMES
    from .vcpucount import SPLIT_COLUMNS
    return BASE_COLUMNS + ("path",) + SEGMENT_NAMES + SPLIT_COLUMNS


def accepted_csv_headers():
    """The current header, and the one before the vCPU split columns (read with those empty)."""
    from .vcpucount import SPLIT_COLUMNS
    return (csv_columns(), csv_columns()[:-len(SPLIT_COLUMNS)])


def write_samples_csv(path, samples, breakdowns=None, splits=None):
    """splits: vcpucount.split_samples()'s rows, one per sample (None: the plugin did not run)."""
    from .breakdown import SEGMENT_NAMES
    from .vcpucount import SPLIT_COLUMNS
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(csv_columns())
        for i, s in enumerate(samples):
            b = breakdowns[i] if breakdowns else None
            segs = [("" if b is None or b.segments[n] is None else b.segments[n]) for n in SEGMENT_NAMES]
            split = splits[i] if splits else {}
            own = ["" if split.get(n) is None else split[n] for n in SPLIT_COLUMNS]
            w.writerow((s.seq, s.cpu, s.irq, s.vmm_tsc, s.guest_tsc, "" if s.upcall_tsc is None else s.upcall_tsc,
                        s.latency_ticks, f"{s.latency_ns:.3f}", "" if b is None else b.path, *segs, *own))


def read_samples_csv(path):
    """-> list of (Sample, Breakdown or None)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise AnalysisError(f"{path}: cannot read samples: {exc.strerror}") from None
    if not rows or tuple(rows[0]) not in accepted_csv_headers():
        found = ",".join(rows[0]) if rows else "an empty file"
        raise AnalysisError(f"{path}:1: expected header {','.join(csv_columns())}, found {found}")
    columns = tuple(rows[0])
    return [_csv_row(path, n, row, columns) for n, row in enumerate(rows[1:], start=2) if row]


def _csv_row(path, line, row, columns):
    from .breakdown import PATHS, SEGMENT_NAMES, Breakdown
    from .vcpucount import SPLIT_COLUMNS
    if len(row) != len(columns):
        raise AnalysisError(f"{path}:{line}: {len(row)} fields, expected {len(columns)}")
    values = {}
    for column, text in zip(columns, row):
        if column == "path":
            if text and text not in PATHS:
                raise AnalysisError(f"{path}:{line}: column path: {text!r} is not one of {', '.join(PATHS)}")
            values[column] = text
            continue
        if text == "" and (column == "upcall_tsc" or column in SEGMENT_NAMES or column in SPLIT_COLUMNS):
            values[column] = None
            continue
        try:
            values[column] = float(text) if column == "latency_ns" else int(text)
        except ValueError:
            raise AnalysisError(f"{path}:{line}: column {column}: {text!r} is not a number") from None
    sample = Sample(values["sequence"], values["cpu"], values["irq"], values["vmm_tsc"], values["guest_tsc"],
                    values["latency_ticks"], values["latency_ns"], values["upcall_tsc"],
                    *(values.get(n) for n in SPLIT_COLUMNS))
    brk = Breakdown(values["path"], {n: values[n] for n in SEGMENT_NAMES}) if values["path"] else None
    return sample, brk


# ---------------------------------------------------------------- guest ftrace records

# `<comm>-<pid> [(<tgid>)] [<cpu>] [<flags>] <timestamp>: <event>`. With trace_clock x86-tsc the
# timestamp is the raw TSC, printed without a decimal point.
FTRACE_LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                         r"(?:(?P<flags>\S{4,5})\s+)?(?P<ts>\d+(?:\.\d+)?):\s(?P<rest>.*)$")
TRACEPOINT = re.compile(r"^\s*(?P<event>[\w.]+):\s*(?P<body>.*)$")
FUNCTION = re.compile(r"^\s*(?P<event>[\w.]+)\s+<-\S+\s*$")  # function tracer: `func <-caller`
IRQ_ENTRY = re.compile(r"^irq=(?P<irq>-?\d+) name=(?P<name>.*\S)\s*$")
LOST = re.compile(r"^\s*CPU:(?P<cpu>\d+) \[LOST (?P<n>\d+) EVENTS\]\s*$")
# The PV guest's event-channel upcall, as a function-tracer entry or a kprobe event of that name.
UPCALL_EVENTS = ("xen_evtchn_do_upcall", "__xen_evtchn_do_upcall", "xen_pv_evtchn_do_upcall")


def ftrace_timestamps(text):
    """Every event's timestamp in ftrace text (x86-tsc: raw TSC values), in order."""
    out = []
    for line in text.splitlines():
        m = FTRACE_LINE.match(line)
        if m and "." not in m.group("ts"):
            out.append(int(m.group("ts")))
    return out


@dataclass
class GuestTrace:
    stamps: list  # GuestStamp, sorted by TSC
    cut_off: int = 0  # malformed lines at the very end (or a last line without newline), ignored
    lost_events: int = 0  # from ftrace's `CPU:n [LOST m EVENTS]` lines
    other_events: int = 0  # well-formed event lines we do not use


@dataclass(frozen=True)
class _Event:
    line: int
    cpu: int
    tsc: int
    kind: str  # "irq" or "upcall"
    irq: int = 0
    name: str = ""


def parse_ftrace(text, irq_names=None, upcall_events=UPCALL_EVENTS, source="<ftrace>"):
    """Guest stamps from ftrace text (trace_clock x86-tsc) -> GuestTrace.

    irq_names: fnmatch patterns for the IRQ names to keep (e.g. ["eth0*"]); None keeps all.
    Blank lines, `#` headers and comments are skipped. A malformed line followed by a good
    one is an AnalysisError naming source:line; malformed lines at the end are counted in
    `cut_off` and ignored, and so is a last line without its newline (it may be cut inside a
    number, e.g. irq=2 of irq=24). A non-integer timestamp means the wrong trace_clock: error."""
    lines = text.splitlines()
    if lines and not text.endswith(("\n", "\r")):
        lines, cut_off = lines[:-1], 1
    else:
        cut_off = 0
    events, pending_bad, lost, other = [], [], 0, 0
    for number, line in enumerate(lines, start=1):
        kind = _classify(source, number, line, upcall_events)
        if kind is None:
            continue
        if kind == "bad":
            pending_bad.append((number, line))
            continue
        if pending_bad:
            _malformed(source, *pending_bad[0])
        if isinstance(kind, int):
            lost += kind
        elif kind == "other":
            other += 1
        elif kind.kind == "upcall" or _wanted(kind.name, irq_names):
            events.append(kind)
    return GuestTrace(_stamps(events), cut_off + len(pending_bad), lost, other)


def _classify(source, number, line, upcall_events):
    """None (skip), 'bad', 'other', a lost-events count, or an _Event."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    lost = LOST.match(line)
    if lost:
        return int(lost["n"])
    m = FTRACE_LINE.match(line)
    if not m:
        return "bad"
    if "." in m["ts"]:
        raise AnalysisError(f"{source}:{number}: timestamp {m['ts']} is not a raw TSC: "
                            f"set trace_clock to x86-tsc in the guest")
    point = TRACEPOINT.match(m["rest"]) or FUNCTION.match(m["rest"])
    if not point:
        return "bad"
    cpu, tsc, event = int(m["cpu"]), int(m["ts"]), point["event"]
    if event in upcall_events:
        return _Event(number, cpu, tsc, "upcall")
    if event != "irq_handler_entry":
        return "other"
    body = IRQ_ENTRY.match(point.groupdict().get("body") or "")
    if not body:
        return "bad"
    return _Event(number, cpu, tsc, "irq", int(body["irq"]), body["name"])


def _malformed(source, number, line):
    shown = line if len(line) <= 120 else line[:117] + "..."
    raise AnalysisError(f"{source}:{number}: not an ftrace event line: {shown!r}")


def _wanted(name, patterns):
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _stamps(events):
    """Sort by TSC (stable) and attach to each IRQ entry the latest upcall on its CPU at or before it."""
    last_upcall, stamps = {}, []
    for e in sorted(events, key=lambda e: (e.tsc, e.kind != "upcall")):  # upcall first on a tie
        if e.kind == "upcall":
            last_upcall[e.cpu] = e.tsc
        else:
            stamps.append(GuestStamp(e.tsc, e.irq, last_upcall.get(e.cpu), e.cpu, e.name, e.line))
    return stamps
