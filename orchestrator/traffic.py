"""Stage: host-side traffic into the emulated NICs over loopback UDP.

Each NIC is a QEMU `-netdev socket,udp=127.0.0.1:<port+1>,localaddr=127.0.0.1:<port>`:
QEMU takes one raw Ethernet frame (no FCS) per UDP datagram sent to
127.0.0.1:<port> and sends the guest's frames to 127.0.0.1:<port+1>.

Two senders, run concurrently in threads:
- bursts for the measured NIC (the paper: 1024 packets every 100 ms),
- a flood for the load NIC (a rate in packets/s, or unthrottled).
Both pace by absolute deadlines from one start time (no drift), stop at a
bounded duration or when a stop event is set, and count exactly what the
kernel accepted: `TrafficCounters`. (Parsing frames back and a sink for them are test helpers:
tests/unit/frames.py.)
"""

import errno
import ipaddress
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from .errors import TestbedError

LOOPBACK = "127.0.0.1"
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_UDP = 17
ETH_HLEN, IP_HLEN, UDP_HLEN = 14, 20, 8
MIN_FRAME = 60  # Ethernet minimum without FCS: shorter frames are padded by us, not by the NIC model
MAX_PAYLOAD = 1500 - IP_HLEN - UDP_HLEN  # one frame within a 1500-byte MTU
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"

# Payload: magic, version, flags, burst number, sequence number; then zero padding.
PAYLOAD_MAGIC = b"NTSM"
PAYLOAD_VERSION = 1
PAYLOAD_HEADER = struct.Struct("!4sHHII")
FLOOD_BURST = 0xFFFFFFFF  # burst number carried by flood frames: "not a measurement burst"


class TrafficError(TestbedError, ValueError):
    """Bad traffic parameters or a frame that does not parse; the message says which."""


# ---------------------------------------------------------------- frames

def mac_bytes(mac):
    """'52:54:00:12:34:01' (or 6 bytes) -> 6 bytes."""
    if isinstance(mac, (bytes, bytearray)) and len(mac) == 6:
        return bytes(mac)
    parts = str(mac).replace("-", ":").split(":")
    try:
        if len(parts) != 6:
            raise ValueError
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise TrafficError(f"bad MAC address {mac!r}: expected six hex bytes like 52:54:00:12:34:01") from None


def mac_text(raw):
    return ":".join(f"{b:02x}" for b in raw)


def ip_bytes(ip):
    try:
        return ipaddress.IPv4Address(ip).packed
    except ValueError:
        raise TrafficError(f"bad IPv4 address {ip!r}") from None


def _port(value, what):
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise TrafficError(f"bad {what} {value!r}: expected an integer 0..65535")
    return value


def inet_checksum(data):
    """RFC 1071 ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_pseudo_header(src, dst, udp_len):
    return src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, udp_len)


def build_udp_frame(dst_mac, src_mac, src_ip, dst_ip, src_port, dst_port, payload, ident=0):
    """One Ethernet II + IPv4 + UDP frame with both checksums, padded to 60 bytes."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise TrafficError(f"UDP payload of {len(payload)} bytes exceeds {MAX_PAYLOAD} (1500-byte MTU)")
    src, dst = ip_bytes(src_ip), ip_bytes(dst_ip)
    udp_len = UDP_HLEN + len(payload)
    udp = struct.pack("!HHHH", _port(src_port, "source port"), _port(dst_port, "destination port"), udp_len, 0) + payload
    csum = inet_checksum(_udp_pseudo_header(src, dst, udp_len) + udp) or 0xFFFF  # 0 means "no checksum" in UDP
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP_HLEN + udp_len, ident & 0xFFFF, 0x4000,  # DF, no fragments
                     64, IPPROTO_UDP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    frame = mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_P_IP) + ip + udp
    return frame.ljust(MIN_FRAME, b"\0")


# ---------------------------------------------------------------- payload

def make_payload(burst, seq, size=PAYLOAD_HEADER.size):
    """Our payload: magic 'NTSM', version, flags, burst number, sequence number (all big-endian), zero padded."""
    if not PAYLOAD_HEADER.size <= size <= MAX_PAYLOAD:
        raise TrafficError(f"payload size {size} out of range {PAYLOAD_HEADER.size}..{MAX_PAYLOAD}")
    head = PAYLOAD_HEADER.pack(PAYLOAD_MAGIC, PAYLOAD_VERSION, 0, burst & 0xFFFFFFFF, seq & 0xFFFFFFFF)
    return head.ljust(size, b"\0")


# ---------------------------------------------------------------- plans and counters

@dataclass(frozen=True)
class Addressing:
    """Frame addresses. dst_mac should be the guest NIC's MAC; broadcast reaches any NIC."""
    dst_mac: str = BROADCAST_MAC
    src_mac: str = "02:00:00:00:00:01"  # locally administered
    src_ip: str = "10.99.0.1"
    dst_ip: str = "10.99.0.2"
    src_port: int = 40000
    dst_port: int = 9  # discard

    def frame(self, burst, seq, payload_size, ident=0):
        return build_udp_frame(self.dst_mac, self.src_mac, self.src_ip, self.dst_ip, self.src_port,
                               self.dst_port, make_payload(burst, seq, payload_size), ident)


@dataclass(frozen=True)
class Burst:
    """Measured-NIC traffic: `frames_per_burst` frames every `period_s`, `bursts` times.

    gap_s spaces the frames inside a burst (0: back to back)."""
    frames_per_burst: int = 1024
    period_s: float = 0.1
    bursts: int = 10
    gap_s: float = 0.0
    payload_size: int = 64
    addressing: Addressing = field(default_factory=Addressing)

    def validate(self):
        _positive_int(self.frames_per_burst, "frames_per_burst")
        _positive_int(self.bursts, "bursts")
        _positive(self.period_s, "period_s")
        if self.gap_s < 0 or self.gap_s * (self.frames_per_burst - 1) >= self.period_s:
            raise TrafficError(f"gap_s={self.gap_s}: a burst of {self.frames_per_burst} frames must fit in "
                               f"period_s={self.period_s}")
        make_payload(0, 0, self.payload_size)
        return self


@dataclass(frozen=True)
class Flood:
    """Load-NIC traffic: `rate_pps` frames per second (None: as fast as possible) for `duration_s`."""
    rate_pps: float | None = None
    duration_s: float = 10.0
    payload_size: int = 64
    addressing: Addressing = field(default_factory=Addressing)

    def validate(self):
        if self.rate_pps is not None:
            _positive(self.rate_pps, "rate_pps")
        _positive(self.duration_s, "duration_s")
        make_payload(0, 0, self.payload_size)
        return self


def _positive(value, what):
    if not isinstance(value, (int, float)) or not value > 0:
        raise TrafficError(f"{what} must be a positive number, got {value!r}")


def _positive_int(value, what):
    if not isinstance(value, int) or value <= 0:
        raise TrafficError(f"{what} must be a positive integer, got {value!r}")


@dataclass
class TrafficCounters:
    """What one sender did. frames/bytes count datagrams the kernel accepted, nothing else."""
    target: str = ""
    frames: int = 0
    bytes: int = 0
    send_errors: int = 0
    errors_by_kind: dict = field(default_factory=dict)  # errno name -> count
    bursts_completed: int = 0
    stopped_early: bool = False
    start: float | None = None  # time.monotonic()
    end: float | None = None

    @property
    def duration_s(self):
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0

    @property
    def achieved_pps(self):
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self):
        return {"target": self.target, "frames": self.frames, "bytes": self.bytes, "send_errors": self.send_errors,
                "errors_by_kind": dict(self.errors_by_kind), "bursts_completed": self.bursts_completed,
                "stopped_early": self.stopped_early, "start": self.start, "end": self.end,
                "duration_s": self.duration_s, "achieved_pps": self.achieved_pps}


# ---------------------------------------------------------------- sending

def _check_addr(sock_addr):
    host, port = sock_addr
    if host != LOOPBACK:
        raise TrafficError(f"traffic goes to QEMU on loopback only; refusing {host}:{port}")
    _port(port, "UDP port")
    return host, port


def _open(sock_addr):
    # Connected: send() is cheaper than sendto(), and ECONNREFUSED tells us QEMU is not listening.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(_check_addr(sock_addr))
    return sock


def _send(sock, frame, counters):
    try:
        sock.send(frame)
    except OSError as exc:
        counters.send_errors += 1
        kind = errno.errorcode.get(exc.errno, str(exc.errno))
        counters.errors_by_kind[kind] = counters.errors_by_kind.get(kind, 0) + 1
        return
    counters.frames += 1
    counters.bytes += len(frame)


def _sleep_until(deadline, stop):
    """Sleep to an absolute monotonic deadline; True if the stop event was set meanwhile."""
    delay = deadline - time.monotonic()
    if delay > 0:
        return stop.wait(delay)
    return stop.is_set()


def send_bursts(sock_addr, frames_per_burst=1024, period_s=0.1, bursts=10, *, gap_s=0.0, payload_size=64,
                addressing=None, stop=None, on_burst=None):
    """Send `bursts` bursts; burst k starts at t0 + k*period_s, frame i of it at + i*gap_s;
    `on_burst()` after each (progress).

    Frames carry (burst number, sequence number over the whole run). Returns TrafficCounters."""
    plan = Burst(frames_per_burst, period_s, bursts, gap_s, payload_size, addressing or Addressing()).validate()
    return _run_bursts(plan, sock_addr, stop or threading.Event(), on_burst or (lambda: None))


def _run_bursts(plan, sock_addr, stop, on_burst=lambda: None):
    counters = TrafficCounters(target=f"{sock_addr[0]}:{sock_addr[1]}")
    with _open(sock_addr) as sock:
        counters.start = t0 = time.monotonic()
        for burst in range(plan.bursts):
            first = burst * plan.frames_per_burst
            # Built before the deadline, so a burst leaves back to back rather than at frame-building speed.
            frames = [plan.addressing.frame(burst, seq, plan.payload_size, seq)
                      for seq in range(first, first + plan.frames_per_burst)]
            if not _send_burst(sock, frames, t0 + burst * plan.period_s, plan.gap_s, stop, counters):
                counters.stopped_early = True
                break
            counters.bursts_completed += 1
            on_burst()
        counters.end = time.monotonic()
    return counters


def _send_burst(sock, frames, start, gap_s, stop, counters):
    """Frame i leaves at start + i*gap_s; False if stopped before the last one."""
    for i, frame in enumerate(frames):
        if (i == 0 or gap_s) and _sleep_until(start + i * gap_s, stop):
            return False
        _send(sock, frame, counters)
    return True


def flood(sock_addr, rate_pps=None, duration_s=10.0, *, payload_size=64, addressing=None, stop=None):
    """Send for `duration_s` at `rate_pps` (None: unthrottled). Returns TrafficCounters."""
    plan = Flood(rate_pps, duration_s, payload_size, addressing or Addressing()).validate()
    return _run_flood(plan, sock_addr, stop or threading.Event())


FLOOD_TEMPLATES = 256  # distinct prebuilt frames: building one per send would cap the rate


def _run_flood(plan, sock_addr, stop):
    frames = [plan.addressing.frame(FLOOD_BURST, i, plan.payload_size, i) for i in range(FLOOD_TEMPLATES)]
    counters = TrafficCounters(target=f"{sock_addr[0]}:{sock_addr[1]}")
    with _open(sock_addr) as sock:
        counters.start = t0 = time.monotonic()
        end = t0 + plan.duration_s
        sent = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if stop.is_set():
                counters.stopped_early = True
                break
            # Absolute schedule: frame n is due at t0 + n/rate; send everything due now, then sleep to the next.
            due = FLOOD_TEMPLATES if plan.rate_pps is None else int((now - t0) * plan.rate_pps) + 1 - sent
            for _ in range(max(due, 0)):
                _send(sock, frames[sent % FLOOD_TEMPLATES], counters)
                sent += 1
            if plan.rate_pps is not None:
                _sleep_until(min(t0 + sent / plan.rate_pps, end), stop)
        counters.end = time.monotonic()
    return counters


class Sender(threading.Thread):
    """Run a Burst or Flood plan in a thread; join() returns its counters (or raises its error)."""

    def __init__(self, plan, sock_addr, stop=None, name=None):
        super().__init__(name=name or f"traffic-{type(plan).__name__.lower()}-{sock_addr[1]}", daemon=True)
        self.plan = plan.validate()
        self.sock_addr = _check_addr(sock_addr)
        self.stop_event = stop or threading.Event()
        self.counters = None
        self.error = None

    def run(self):
        try:
            runner = _run_bursts if isinstance(self.plan, Burst) else _run_flood
            self.counters = runner(self.plan, self.sock_addr, self.stop_event)
        except BaseException as exc:  # handed to join(): a thread must not die silently
            self.error = exc

    def stop(self):
        self.stop_event.set()

    def join(self, timeout=None):
        super().join(timeout)
        if self.is_alive():
            raise TrafficError(f"{self.name} still running after {timeout}s")
        if self.error is not None:
            raise TrafficError(f"{self.name} failed: {self.error}") from self.error
        return self.counters


# ---------------------------------------------------------------- frames from the guest (the dump)

DUMP_ETHERTYPE = 0x88B5  # guest_agents/framesend.c
DUMP_MAGIC = b"TBDUMP"
DUMP_HEADER = struct.Struct("<6sIIIH")  # magic, seq, frames, bytes, length; after the 14-byte Ethernet header


class FrameError(Exception):
    pass


class FrameReceiver:
    """The host's end of a NIC's socket netdev, where QEMU sends every frame the guest transmits:
    collects framesend's frames (a file cut into numbered pieces) while the guest sends them."""

    def __init__(self, port, rcvbuf=64 << 20):
        self.port, self.rcvbuf = port, rcvbuf
        self.pieces, self.declared = {}, None
        self.first = self.last = None  # host monotonic time of the first and the last frame
        self.stop = threading.Event()
        self.sock = self.thread = None

    def __enter__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)  # SO_RCVBUFFORCE (root): past rmem_max
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        try:
            self.sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            self.sock.close()
            raise FrameError(f"cannot listen on 127.0.0.1:{self.port} for the guest's frames: {exc.strerror}") from None
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._receive, name="frame-receiver", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def _receive(self):
        while not self.stop.is_set():
            try:
                frame = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(frame) < 14 + DUMP_HEADER.size or int.from_bytes(frame[12:14], "big") != DUMP_ETHERTYPE:
                continue
            magic, seq, frames, size, length = DUMP_HEADER.unpack_from(frame, 14)
            if magic == DUMP_MAGIC:
                self.last = time.monotonic()
                self.first = self.first or self.last
                self.declared = (frames, size)
                self.pieces[seq] = frame[14 + DUMP_HEADER.size:14 + DUMP_HEADER.size + length]

    def collect(self, frames, size, wait_s=10):
        """-> the file, once all `frames` pieces are in (the guest said how many and how big)."""
        deadline = time.monotonic() + wait_s
        while len(self.pieces) < frames and time.monotonic() < deadline:
            time.sleep(0.01)
        missing = [i for i in range(frames) if i not in self.pieces]
        if missing:
            raise FrameError(f"{len(missing)} of {frames} frames did not arrive within {wait_s} s (first missing: "
                             f"{missing[0]})")
        data = b"".join(self.pieces[i] for i in range(frames))
        if len(data) != size or self.declared != (frames, size):
            raise FrameError(f"the frames hold {len(data)} bytes, the guest sent {size}")
        return data

    def span_s(self):
        """Seconds from the first frame to the last (the channel's own time, without the command around it)."""
        return (self.last - self.first) if self.first is not None else None
