"""Decoder of the binary trace files written by Xen's `xentrace` (Xen 4.17).

Debian's `xentrace_format` is Python 2 and fails, so we read the format ourselves.

File layout (x86: little-endian, 32-bit words), from tools/xentrace/xentrace.c
(`struct cpu_change_record`, `write_buffer()`): the file is a sequence of windows,
one per read of one CPU's trace buffer:

    cpu_change record, 12 bytes:
        u32 header  = CPU_CHANGE_HEADER = TRC_TRACE_CPU_CHANGE | (2 << 28) = 0x2001f003
        i32 cpu
        u32 window_size            bytes of trace records that follow
    window_size bytes of t_rec records, all from that CPU, in time order

A wrapped ring buffer is written as two write() calls but one cpu_change
record whose window_size covers both. Each t_rec (xen/include/public/trace.h):

    u32 header: event = bits 0..27, extra_u32 = bits 28..30, cycles_included = bit 31
    if cycles_included: u32 cycles_lo, u32 cycles_hi    (the TSC, get_cycles())
    extra_u32 x u32 data

Xen never splits a record at the end of its ring: it pads with a
TRC_TRACE_WRAP_BUFFER record (xen/common/trace.c insert_wrap_record), so a
window holds whole records. Padding and TRC_LOST_RECORDS records are kept
like any other event; the cpu_change framing records are not returned.

Truncation: `decode()` raises TraceError naming the file and offset of the
first incomplete record. `read_trace(..., allow_truncated=True)` instead
returns the complete records plus `truncated_at` (xentrace killed mid-write
loses at most its last window).
"""

import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import TestbedError

# ---- from xen/include/public/trace.h (4.17)
TRACE_EXTRA_MAX = 7
TRACE_EXTRA_SHIFT = 28
TRC_HD_CYCLE_FLAG = 1 << 31
EVENT_MASK = 0x0FFFFFFF

TRC_GEN = 0x0001F000
TRC_LOST_RECORDS = TRC_GEN + 1
TRC_TRACE_WRAP_BUFFER = TRC_GEN + 2
TRC_TRACE_CPU_CHANGE = TRC_GEN + 3

TRC_HW = 0x0080F000
TRC_HW_IRQ = 0x00802000
TRC_HW_IRQ_MOVE_CLEANUP_DELAY = TRC_HW_IRQ + 0x1
TRC_HW_IRQ_MOVE_CLEANUP = TRC_HW_IRQ + 0x2
TRC_HW_IRQ_BIND_VECTOR = TRC_HW_IRQ + 0x3
TRC_HW_IRQ_CLEAR_VECTOR = TRC_HW_IRQ + 0x4
TRC_HW_IRQ_MOVE_FINISH = TRC_HW_IRQ + 0x5
TRC_HW_IRQ_ASSIGN_VECTOR = TRC_HW_IRQ + 0x6
TRC_HW_IRQ_UNMAPPED_VECTOR = TRC_HW_IRQ + 0x7
TRC_HW_IRQ_HANDLED = TRC_HW_IRQ + 0x8  # (irq, tsc_in low 32 bits, tsc_out low 32 bits), after ack + lock

# ---- ours: the measurement-only patch (hypervisor_patch/0001, xen/include/xen/testbed.h),
# applied to every variant. A subclass of our own: class TRC_HW (0x008), subclass 4 (4.17
# uses 1 = TRC_HW_PM, 2 = TRC_HW_IRQ). Xen's __trace_var() matches the class bits and the
# subclass nibble against the event mask separately, so `xentrace -e XENTRACE_EVENTS`
# records ours and none of stock's TRC_HW_IRQ records (TRC_HW_IRQ_HANDLED is written inside
# the measured span by stock's path only).
TRC_TESTBED = 0x00804000
XENTRACE_EVENTS = f"0x{TRC_TESTBED:08x}"  # the event mask measure.py gives `xentrace -e`
# Interrupt entry, top of do_IRQ(): (vector, irq, cpu, tsc_lo, tsc_hi); irq is signed
# (negative: no IRQ bound to the vector at entry); tsc is the full 64-bit TSC read first thing.
TRC_TESTBED_IRQ_ENTRY = TRC_TESTBED + 0x1
IRQ_ENTRY_WORDS = 5
# One upcall delivery of a pirq event to a vCPU of the measured guest, written when the
# bounce frame is built: (domid << 16 | vcpu, flags, bounce tsc_lo, tsc_hi, bounce - pending,
# bounce - notify or 0, bounce - schedin or 0); deltas in TSC ticks, clamped to 0..2**32-1.
TRC_TESTBED_PATH = TRC_TESTBED + 0x2
PATH_WORDS = 7
PATH_PENDING = 1 << 0  # the pirq event was set pending (always set in a record)
PATH_KICKED = 1 << 1  # vcpu_kick() found the vCPU running
PATH_WOKEN = 1 << 2  # vcpu_kick() found it not running: vcpu_unblock()
PATH_SCHEDIN = 1 << 3  # context_switch() to the vCPU before the bounce
PATH_NATSUME_FIRST = 1 << 4  # the bounce frame was built by Natsume's upcall-first path

CPU_CHANGE_HEADER = TRC_TRACE_CPU_CHANGE | (2 << TRACE_EXTRA_SHIFT)
CPU_CHANGE = struct.Struct("<IiI")  # header, cpu, window_size
MAX_CPUS = 4096  # sanity bound: a larger cpu number means we are not reading a cpu_change record


class TraceError(TestbedError, ValueError):
    """The trace file is not what xentrace writes; the message names the file and byte offset."""


@dataclass(frozen=True)
class TraceRecord:
    cpu: int
    event: int
    tsc: int | None  # None when the record carries no cycle count
    data: tuple
    offset: int  # byte offset of the record's header in the file


@dataclass(frozen=True)
class Trace:
    records: list
    truncated_at: int | None = None  # offset of the first incomplete record/window, if any
    size: int = 0


@dataclass(frozen=True)
class VmmStamp:
    cpu: int
    irq: int
    vector: int
    tsc: int


@dataclass(frozen=True)
class PathStamp:
    """One TRC_TESTBED_PATH record: the TSCs of one upcall delivery's steps (all on the one TSC)."""
    cpu: int  # the pCPU that built the bounce frame (the record's buffer)
    domid: int
    vcpu: int
    flags: int  # the raw PATH_* bits
    bounce_tsc: int
    pending_tsc: int
    notify_tsc: int | None  # None: no kick or wake stamped
    schedin_tsc: int | None  # None: not scheduled in between
    natsume_first: bool
    kicked: bool
    woken: bool


def _load(source):
    """-> (name for messages, bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    path = Path(source)
    try:
        return str(path), path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace file: {exc.strerror}") from None


def read_trace(source, allow_truncated=False):
    """Decode a whole xentrace file (path or bytes) into a Trace."""
    name, buf = _load(source)
    records, offset = [], 0
    while offset < len(buf):
        try:
            cpu, window_size, start = _cpu_change(name, buf, offset)
        except _Truncated as cut:
            return _truncated(name, records, buf, offset, str(cut), allow_truncated)
        end = start + window_size
        offset = _window(buf, cpu, start, min(end, len(buf)), records)
        if offset < end <= len(buf):
            raise TraceError(f"{name}: offset {offset}: record crosses the end of cpu {cpu}'s window "
                             f"(window ends at {end}): corrupt window size or record header")
        if offset < end:
            why = (f"window of cpu {cpu} at offset {start - CPU_CHANGE.size} promises {window_size} bytes, "
                   f"file ends at {len(buf)}")
            return _truncated(name, records, buf, offset, why, allow_truncated)
    return Trace(records, None, len(buf))


class _Truncated(Exception):
    pass


def _truncated(name, records, buf, offset, why, allow_truncated):
    if not allow_truncated:
        raise TraceError(f"{name}: truncated at offset {offset}: {why}")
    return Trace(records, offset, len(buf))


def decode(source):
    """Strict decode: list of TraceRecord in file order; TraceError on any damage, [] for an empty file."""
    return read_trace(source).records


def _cpu_change(name, buf, offset):
    if len(buf) - offset < CPU_CHANGE.size:
        raise _Truncated(f"{len(buf) - offset} bytes left, a cpu_change record needs {CPU_CHANGE.size}")
    header, cpu, window_size = CPU_CHANGE.unpack_from(buf, offset)
    if header != CPU_CHANGE_HEADER:
        raise TraceError(f"{name}: offset {offset}: expected a cpu_change record (0x{CPU_CHANGE_HEADER:08x}), "
                         f"found 0x{header:08x}: not an xentrace file, or a window size is wrong")
    if not 0 <= cpu < MAX_CPUS or window_size % 4:
        raise TraceError(f"{name}: offset {offset}: implausible cpu_change record (cpu {cpu}, "
                         f"window_size {window_size})")
    return cpu, window_size, offset + CPU_CHANGE.size


def _window(buf, cpu, offset, end, out):
    """Append the records in buf[offset:end]; return the offset after the last complete one."""
    while offset < end:
        record = _record(buf, cpu, offset, end)
        if record is None:
            break
        out.append(record)
        offset = record_end(record)
    return offset


def _record(buf, cpu, offset, end):
    """One t_rec at offset, or None if it does not fit before end."""
    if end - offset < 4:
        return None
    (header,) = struct.unpack_from("<I", buf, offset)
    n_extra = (header >> TRACE_EXTRA_SHIFT) & TRACE_EXTRA_MAX
    has_tsc = bool(header & TRC_HD_CYCLE_FLAG)
    size = 4 + (8 if has_tsc else 0) + 4 * n_extra
    if end - offset < size:
        return None
    words = struct.unpack_from(f"<{size // 4 - 1}I", buf, offset + 4)
    tsc = (words[0] | (words[1] << 32)) if has_tsc else None
    data = words[2:] if has_tsc else words
    return TraceRecord(cpu, header & EVENT_MASK, tsc, tuple(data), offset)


def record_end(record):
    return record.offset + 4 + (8 if record.tsc is not None else 0) + 4 * len(record.data)


# ---------------------------------------------------------------- interpretation

def vmm_stamps(records, source="<trace>"):
    """TRC_TESTBED_IRQ_ENTRY records -> VmmStamps, merged over CPUs by TSC (stable).

    source names the trace file in error messages."""
    stamps = [_stamp(source, r) for r in records if r.event == TRC_TESTBED_IRQ_ENTRY]
    return sorted(stamps, key=lambda s: s.tsc)


def _stamp(source, r):
    if len(r.data) != IRQ_ENTRY_WORDS:
        raise TraceError(f"{source}: offset {r.offset}: TRC_TESTBED_IRQ_ENTRY with {len(r.data)} data words, "
                         f"expected {IRQ_ENTRY_WORDS} (vector, irq, cpu, tsc_lo, tsc_hi)")
    vector, irq, cpu, lo, hi = r.data
    if cpu != r.cpu:
        raise TraceError(f"{source}: offset {r.offset}: TRC_TESTBED_IRQ_ENTRY says cpu {cpu} "
                         f"but sits in cpu {r.cpu}'s buffer")
    irq = irq - (1 << 32) if irq & 0x80000000 else irq
    return VmmStamp(cpu, irq, vector, lo | (hi << 32))


def path_records(records, source="<trace>"):
    """TRC_TESTBED_PATH records -> PathStamps sorted by bounce TSC (ties: by cpu, domid, vcpu).

    The record carries the bounce TSC and the other stamps as distances back from it, so
    pending_tsc = bounce_tsc - w4, and notify/schedin likewise when their flag says they were
    stamped (a distance clamped at 2**32-1 makes the stamp look later than it was).
    source names the trace file in error messages."""
    paths = [_path(source, r) for r in records if r.event == TRC_TESTBED_PATH]
    return sorted(paths, key=lambda p: (p.bounce_tsc, p.cpu, p.domid, p.vcpu))


def _path(source, r):
    if len(r.data) != PATH_WORDS:
        raise TraceError(f"{source}: offset {r.offset}: TRC_TESTBED_PATH with {len(r.data)} data words, "
                         f"expected {PATH_WORDS} (domid<<16|vcpu, flags, tsc_lo, tsc_hi, "
                         "bounce-pending, bounce-notify, bounce-schedin)")
    ids, flags, lo, hi, to_pending, to_notify, to_schedin = r.data
    bounce = lo | (hi << 32)
    notified = bool(flags & (PATH_KICKED | PATH_WOKEN))
    return PathStamp(cpu=r.cpu, domid=ids >> 16, vcpu=ids & 0xFFFF, flags=flags, bounce_tsc=bounce,
                     pending_tsc=bounce - to_pending,
                     notify_tsc=bounce - to_notify if notified else None,
                     schedin_tsc=bounce - to_schedin if flags & PATH_SCHEDIN else None,
                     natsume_first=bool(flags & PATH_NATSUME_FIRST),
                     kicked=bool(flags & PATH_KICKED), woken=bool(flags & PATH_WOKEN))


def lost_records(records):
    """Total records Xen dropped (TRC_LOST_RECORDS: lost count, did|vid<<16, first_tsc lo, hi)."""
    return sum(r.data[0] for r in records if r.event == TRC_LOST_RECORDS and r.data)


def event_counts(records):
    counts = {}
    for r in records:
        counts[r.event] = counts.get(r.event, 0) + 1
    return counts
