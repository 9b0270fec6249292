"""Test helpers for traffic.py: parse our frames back, and a sink that counts what QEMU sends
to the host (the orchestrator itself only sends)."""

import ipaddress
import select
import socket
import struct
import threading
from dataclasses import dataclass, field

from orchestrator.traffic import (ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IP_HLEN, IPPROTO_UDP, LOOPBACK,
                                  PAYLOAD_HEADER, PAYLOAD_MAGIC, PAYLOAD_VERSION, UDP_HLEN, TrafficError,
                                  _check_addr, _udp_pseudo_header, inet_checksum, mac_text)


@dataclass(frozen=True)
class UdpFrame:
    dst_mac: str
    src_mac: str
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    payload: bytes


def parse_udp_frame(frame):
    """Inverse of build_udp_frame; raises TrafficError naming the first thing that is wrong."""
    frame = bytes(frame)
    if len(frame) < ETH_HLEN + IP_HLEN + UDP_HLEN:
        raise TrafficError(f"frame of {len(frame)} bytes is too short for Ethernet+IPv4+UDP")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_IP:
        raise TrafficError(f"ethertype 0x{ethertype:04x} at offset 12 is not IPv4")
    ip = frame[ETH_HLEN:ETH_HLEN + IP_HLEN]
    ver_ihl, _, total_len, _, _, _, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", ip)
    if ver_ihl != 0x45:
        raise TrafficError(f"IPv4 version/IHL byte 0x{ver_ihl:02x} at offset 14: expected 0x45 (no options)")
    if inet_checksum(ip) != 0:
        raise TrafficError("IPv4 header checksum does not verify")
    if proto != IPPROTO_UDP:
        raise TrafficError(f"IPv4 protocol {proto} is not UDP")
    if ETH_HLEN + total_len > len(frame):
        raise TrafficError(f"IPv4 total length {total_len} exceeds the frame ({len(frame)} bytes)")
    udp = frame[ETH_HLEN + IP_HLEN:ETH_HLEN + total_len]
    sport, dport, udp_len, csum = struct.unpack_from("!HHHH", udp)
    if udp_len != len(udp):
        raise TrafficError(f"UDP length {udp_len} disagrees with the IPv4 length ({len(udp)} bytes of UDP)")
    if csum and inet_checksum(_udp_pseudo_header(src, dst, udp_len) + udp) != 0:
        raise TrafficError("UDP checksum does not verify")
    return UdpFrame(mac_text(frame[0:6]), mac_text(frame[6:12]), str(ipaddress.IPv4Address(src)),
                    str(ipaddress.IPv4Address(dst)), sport, dport, udp[UDP_HLEN:])


def parse_payload(payload):
    """-> (burst, seq); TrafficError if it is not ours."""
    if len(payload) < PAYLOAD_HEADER.size:
        raise TrafficError(f"payload of {len(payload)} bytes is shorter than our {PAYLOAD_HEADER.size}-byte header")
    magic, version, _, burst, seq = PAYLOAD_HEADER.unpack_from(payload)
    if magic != PAYLOAD_MAGIC or version != PAYLOAD_VERSION:
        raise TrafficError(f"payload starts {payload[:6]!r}: not a natsume-testbed v{PAYLOAD_VERSION} payload")
    return burst, seq


@dataclass
class SinkCounters:
    frames: int = 0
    bytes: int = 0
    by_ethertype: dict = field(default_factory=dict)  # 'arp' / 'ipv4' / 'ipv6' / '0x....' -> count

    def as_dict(self):
        return {"frames": self.frames, "bytes": self.bytes, "by_ethertype": dict(self.by_ethertype)}


ETHERTYPE_NAMES = {ETH_P_IP: "ipv4", ETH_P_ARP: "arp", ETH_P_IPV6: "ipv6"}


class Sink:
    """Counts frames a guest sends: QEMU sends them to 127.0.0.1:<port+1>. A context manager."""

    def __init__(self, port):
        self.addr = _check_addr((LOOPBACK, port))
        self.counters = SinkCounters()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind(self.addr)
        except OSError as exc:
            self._sock.close()
            raise TrafficError(f"cannot listen on {LOOPBACK}:{port} for guest frames: {exc.strerror}") from None
        self._thread = threading.Thread(target=self._loop, name=f"sink-{port}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _loop(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)  # wakes up to notice close()
            if ready:
                self._count(self._sock.recv(65536))

    def _count(self, frame):
        kind = "runt"
        if len(frame) >= ETH_HLEN:
            (ethertype,) = struct.unpack_from("!H", frame, 12)
            kind = ETHERTYPE_NAMES.get(ethertype, f"0x{ethertype:04x}")
        with self._lock:
            self.counters.frames += 1
            self.counters.bytes += len(frame)
            self.counters.by_ethertype[kind] = self.counters.by_ethertype.get(kind, 0) + 1

    def snapshot(self):
        with self._lock:
            return SinkCounters(self.counters.frames, self.counters.bytes, dict(self.counters.by_ethertype))

    def close(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()
        return self.snapshot()
