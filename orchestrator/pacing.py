"""Stage: traffic paced by guest instructions (measurement.pacing: instructions).

Host-paced frames reach the guest at whatever guest instruction QEMU's I/O thread happens to run,
so how much traffic a guest second holds, and where it lands, follows the host's load. Here the
guest waits for the host instead: the vCPU plugin (images/plugin/vcpucount.c) holds the vCPU
thread at a gate every `step` instructions of the pCPUs other than the RT guest's (so the RT
guest's idling or busy loop moves no frame), and guest time stands still until the
host has handed QEMU that gate's frames: the flood's chunk (load_rate_pps x load_interval_us) and,
every period_ms x 10^6 instructions, a burst. Each NIC's socket netdev has a `filter-dump` that logs
every frame QEMU takes in, stamped with the guest clock (`ArrivalLog`: the host's flow control, and
the proof that a chunk came in whole at one guest instant), and a `filter-buffer` behind it, so
QEMU takes every frame off the socket even while the NIC's ring is full. Once a gate's frames are
all in, the host releases them into the NIC over QMP (`release`: the buffer switched off, which
flushes it, and on again) while the guest still waits, so they enter at the gate's instant.

The buffer's own release timer is set to never fire in a run: on QEMU's virtual clock it would be
a deadline, and with sleep=off every deadline ends an idle skip, so a 100 µs timer made an idle
guest's clock crawl at about host speed (README, "Instruction pacing").
The gate counts instructions, not guest time, because QEMU 7.2's plugin API cannot read the virtual
clock, so the rate holds per instruction only; PacingReport says what it came to per guest second.
(A filter-buffer alone, released on the virtual clock, races the host instead: with sleep=off idle
time is skipped at once and the host cannot keep the next chunk ahead of its boundary.)
"""

import os
import select
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import traffic, vcpucount
from .deadline import Deadline

# Enough of each frame to read our payload's burst and sequence numbers.
SNAPLEN = traffic.ETH_HLEN + traffic.IP_HLEN + traffic.UDP_HLEN + traffic.PAYLOAD_HEADER.size
PCAP_GLOBAL = 24
PCAP_RECORD = struct.Struct("<IIII")  # seconds, µs (QEMU_CLOCK_VIRTUAL + a start offset), caplen, len
TAG_AT = traffic.ETH_HLEN + traffic.IP_HLEN + traffic.UDP_HLEN + 8  # burst, seq in PAYLOAD_HEADER
NO_TAG = (-1, -1)
ARRIVALS_FILE = "arrivals-{role}.csv"  # raw/: one row per guest instant frames came in (µs, frames, chunks)
STALL_S = 30.0  # host seconds without a gate: the guest has stopped executing
BUFFER_INTERVAL_US = 2**32 - 1  # the filter-buffer's own timer (71 guest minutes); should it fire, it finds the buffer empty
BUFFER_ID = "pace-{role}"  # the filter-buffer of a NIC, as the QEMU argv names it and release() switches it
WINDOW = 64  # frames in flight to QEMU's socket (its receive buffer holds about 200 of ours)
GATE_MSG = struct.Struct("<QQ")  # gate number, instructions so far of the pCPUs the gate counts
GO, CLOSE = 0, 1
STEP_SLACK = 4096  # a gate waits for the start of a block: it comes up to one block's instructions late


def paced_roles(m):
    """The NICs instruction pacing feeds (none when the host paces)."""
    if not m.enabled or m.pacing != "instructions":
        return ()
    return ("measured", "load") if m.load else ("measured",)


def gate_step(m):
    """Instructions between two gates: the flood's chunk interval, or without load the burst period."""
    return (m.load_interval_us * 1000) if m.load else m.period_ms * 1_000_000


def flood_chunk(k, rate_pps, interval_us):
    """Frames in chunk k, so that chunks 0..k hold floor((k+1) x interval x rate) frames: the rate exactly."""
    due = lambda n: n * interval_us * rate_pps // 1_000_000
    return due(k + 1) - due(k)


@dataclass
class Arrival:
    """Frames QEMU took in at one guest instant (they share the stamp)."""
    t_us: int
    frames: int = 0
    tags: set = field(default_factory=set)  # (burst, seq) for bursts; (FLOOD_BURST, chunk % 256) for the flood


class ArrivalLog:
    """A filter-dump pcap as QEMU appends it: one record per frame QEMU took in, stamped with the guest
    clock (µs). start() skips what earlier measurements of the same boot left; poll() reads the new
    records and -> how many frames have come in since start(). Frames with one stamp: an `Arrival`."""

    def __init__(self, path, tag=lambda payload: NO_TAG):
        self.path, self.tag = path, tag
        self.arrivals = []
        self.frames = 0
        self._fd, self._pending = None, b""

    def start(self):
        self._fd = os.open(self.path, os.O_RDONLY)
        size = os.fstat(self._fd).st_size
        os.lseek(self._fd, max(size, PCAP_GLOBAL), os.SEEK_SET)  # QEMU wrote the global header at start
        return self

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def poll(self):
        while chunk := os.read(self._fd, 1 << 20):
            self._parse(self._pending + chunk)
        return self.frames

    def _parse(self, data):
        at = 0
        while at + PCAP_RECORD.size <= len(data):
            sec, usec, caplen, _ = PCAP_RECORD.unpack_from(data, at)
            if at + PCAP_RECORD.size + caplen > len(data):
                break
            t_us = sec * 1_000_000 + usec
            if not self.arrivals or self.arrivals[-1].t_us != t_us:
                self.arrivals.append(Arrival(t_us))
            rel = self.arrivals[-1]
            rel.frames += 1
            rel.tags.add(self.tag(data[at + PCAP_RECORD.size:at + PCAP_RECORD.size + caplen]))
            self.frames += 1
            at += PCAP_RECORD.size + caplen
        self._pending = data[at:]


def chunk_label(tag):
    """The chunk a frame belongs to: its burst, or for the flood its chunk number modulo 256."""
    burst, seq = tag
    return seq if burst == traffic.FLOOD_BURST else burst


def write_arrivals(log, path):
    """One row per arrival: its guest time (µs, the log's clock), frames, and the chunks its frames belong to."""
    rows = ["t_us,frames,chunks"]
    for a in log.arrivals:
        rows.append(f"{a.t_us},{a.frames},{' '.join(str(c) for c in sorted({chunk_label(t) for t in a.tags}))}")
    Path(path).write_text("\n".join(rows) + "\n")


def payload_tag(frame):
    """(burst, seq) of one of our frames, NO_TAG for anything else."""
    if len(frame) < TAG_AT + 8 or frame[TAG_AT - 8:TAG_AT - 4] != traffic.PAYLOAD_MAGIC:
        return NO_TAG
    return struct.unpack_from("!II", frame, TAG_AT)


class Gate:
    """The host's end of the plugin's two FIFOs: wait() for the guest to stop at a gate, answer() to let it on."""

    def __init__(self, out_path, in_path):
        self.out = os.open(out_path, os.O_RDWR)  # RDWR: opening a FIFO then never blocks
        self.into = os.open(in_path, os.O_RDWR)

    def wait(self, timeout):
        """-> (gate number, instructions so far), or None after `timeout` host seconds."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < GATE_MSG.size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out], [], [], left)[0]:
                return None
            data += os.read(self.out, GATE_MSG.size - len(data))
        return GATE_MSG.unpack(data)

    def answer(self, close=False):
        os.write(self.into, struct.pack("<Q", CLOSE if close else GO))

    def drain(self):
        """Throw away what an earlier measurement left in either FIFO (both are open read-write here): a
        stale answer would let the guest pass its first gate unfed."""
        for fd in (self.out, self.into):
            while select.select([fd], [], [], 0)[0]:
                os.read(fd, 4096)

    def close(self):
        os.close(self.out)
        os.close(self.into)


@dataclass
class Plan:
    """Which gate gets what: the flood's chunk at every gate, a burst every `per_burst` gates from
    `first_burst` on (one period of load before the first burst)."""
    gates: int
    per_burst: int
    first_burst: int
    bursts: int

    @classmethod
    def of(cls, m):
        per_burst = m.period_ms * 1000 // m.load_interval_us if m.load else 1
        first = per_burst if m.load else 0
        return cls(first + m.bursts * per_burst, per_burst, first, m.bursts)

    def burst_at(self, gate):
        """The burst number this gate sends, or None."""
        k = gate - self.first_burst
        return k // self.per_burst if k >= 0 and k % self.per_burst == 0 and k // self.per_burst < self.bursts else None


@dataclass
class PacingReport:
    """What the gates and the arrival logs say: every chunk came in whole, at one guest instant, at its gate."""
    step: int  # instructions between gates (of the pCPUs other than the RT guest's)
    clock: str = ""  # what the gates count, in words (bundles before it counted every pCPU's instructions)
    gates: int = 0
    steps_off: int = 0  # gates more than a block's length (STEP_SLACK) away from one step after the last
    max_overshoot: int = 0  # the largest distance of a gate from one step after the last (instructions)
    chunks: dict = field(default_factory=dict)  # role -> frames sent, arrived, chunks, chunks not in one instant
    host_s: float = 0.0
    host_wait_s: float = 0.0  # of host_s: waiting for the guest to reach the gates (it runs meanwhile)
    host_feed_s: float = 0.0  # of host_s: handing QEMU the frames and releasing them while the guest waits
    paced_instructions: int = 0  # what the gates count: instructions of the pCPUs other than the RT guest's

    def as_dict(self):
        whole = all(c["spread"] == c["merged"] == 0 and c["sent"] == c["arrived"] for c in self.chunks.values())
        return {**self.__dict__, "on_schedule": whole and self.steps_off == 0,
                "instructions_per_host_s": self.paced_instructions / self.host_s if self.host_s > 0 else None}


def guest_rate(log):
    """What the schedule per instruction came to in guest time: the arrival stamps' span (guest seconds),
    frames per guest second over it, and the median guest time between two arrivals (µs)."""
    t = [a.t_us for a in log.arrivals]
    gaps = sorted(b - a for a, b in zip(t, t[1:]))
    span_s = (t[-1] - t[0]) / 1e6 if len(t) > 1 else 0.0
    return {"guest_span_s": span_s, "frames_per_guest_s": log.frames / span_s if span_s > 0 else None,
            "median_gap_guest_us": gaps[len(gaps) // 2] if gaps else None}


def chunk_spread(log):
    """-> (chunks whose frames came in at two successive guest instants, instants holding frames of more
    than one chunk). Flood chunk labels wrap every 256 gates: only neighbours are compared."""
    spread = merged = 0
    previous = set()
    for arrival in log.arrivals:
        labels = {chunk_label(tag) for tag in arrival.tags}
        spread += len(labels & previous)
        merged += len(labels) > 1
        previous = labels
    return spread, merged


class Feeder:
    """One NIC's socket: sends a gate's frames at most WINDOW ahead of what its ArrivalLog shows in."""

    def __init__(self, port, log):
        self.sock = traffic._open(("127.0.0.1", port))
        self.log, self.counters = log, traffic.TrafficCounters(target=f"127.0.0.1:{port}")
        self.sent = 0

    def feed(self, frames, stop, timeout=STALL_S):
        for frame in frames:
            self._wait(lambda: self.sent - self.log.poll() < WINDOW, stop, timeout, " and no more")
            traffic._send(self.sock, frame, self.counters)
            self.sent += 1
        self._wait(lambda: self.log.poll() >= self.sent, stop, timeout)  # all in before the guest goes on

    def _wait(self, ready, stop, timeout, more=""):
        for _ in Deadline(timeout).poll(0.0001):
            if ready():
                return
            if stop.is_set():
                break
        raise traffic.TrafficError(f"QEMU took in {self.log.frames} of {self.sent} frames sent to "
                                   f"{self.counters.target}{more} within {timeout} s")

    def close(self):
        self.sock.close()


def run(s, gate, ctl, logs, release, stop, on_burst=lambda: None, generation=None):
    """Open the plugin's gate, feed every gate its frames, `release(role)` them into the NIC (QMP), let the
    guest on, and close the gate at the end; -> (counters by role, PacingReport)."""
    m = s.measurement
    plan, step = Plan.of(m), gate_step(m)
    addressing = traffic.Addressing()
    flood = [addressing.frame(traffic.FLOOD_BURST, i, m.payload_bytes, i) for i in range(traffic.FLOOD_TEMPLATES)]
    feeders = {role: Feeder((s.nics.measured if role == "measured" else s.nics.load).udp_port, logs[role])
               for role in logs}
    rep = PacingReport(step, clock=f"instructions of the pCPUs other than the RT guest's (pCPU {s.rt_guest.pcpu})")
    gate.drain()
    vcpucount.open_gate(ctl, generation or time.time_ns(), step)
    start = time.monotonic()
    first = last = None
    try:
        for k in range(plan.gates):
            burst = plan.burst_at(k)
            frames = [addressing.frame(burst, seq, m.payload_bytes, seq) for seq in
                      range(burst * m.frames_per_burst, (burst + 1) * m.frames_per_burst)] if burst is not None else []
            waited = time.monotonic()
            msg = gate.wait(STALL_S)
            fed = time.monotonic()
            rep.host_wait_s += fed - waited
            if msg is None:
                raise traffic.TrafficError(f"the guest reached no gate within {STALL_S} s (gate {k} of {plan.gates}): "
                                           f"has it stopped executing?")
            _number, total = msg
            if last is not None:
                rep.steps_off += abs(total - last - step) > STEP_SLACK
                rep.max_overshoot = max(rep.max_overshoot, abs(total - last - step))
            first, last = first if first is not None else total, total
            chunks = {"load": [flood[k % traffic.FLOOD_TEMPLATES]] * flood_chunk(k, m.load_rate_pps, m.load_interval_us)
                      if "load" in feeders else [], "measured": frames}
            for role, chunk in chunks.items():
                if chunk:
                    feeders[role].feed(chunk, stop)
                    release(role)
            rep.host_feed_s += time.monotonic() - fed
            gate.answer(close=k == plan.gates - 1 or stop.is_set())
            rep.gates += 1
            if burst is not None:
                feeders["measured"].counters.bursts_completed += 1
                on_burst()
            if stop.is_set():
                break
    finally:
        if rep.gates < plan.gates:  # stopped or failed: close the gate, let a guest waiting at one go on
            vcpucount.open_gate(ctl, time.time_ns(), 0)
            if gate.wait(1) is not None:
                gate.answer(close=True)
        for f in feeders.values():
            f.close()
    rep.host_s = time.monotonic() - start
    rep.paced_instructions = (last - first) if first is not None else 0
    counters = {}
    for role, f in feeders.items():
        f.log.poll()
        c = f.counters
        c.start, c.end = start, start + rep.host_s
        counters[role] = c
        spread, merged = chunk_spread(f.log)
        rep.chunks[role] = {"sent": f.sent, "arrived": f.log.frames, "instants": len(f.log.arrivals),
                            "spread": spread, "merged": merged, **guest_rate(f.log)}
    return counters, rep
