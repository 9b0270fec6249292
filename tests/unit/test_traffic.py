"""Traffic generator: frames checked by an independent parser and checksum, real loopback sends
(all on 127.0.0.1), pacing checked by counts with loose bounds, never by tight timings."""

import socket
import struct
import threading
import time

import pytest

from orchestrator import traffic as tr
from tests.unit import frames as fr


def ones_complement_fold(data):
    """Independent RFC 1071 sum: a header including its correct checksum folds to 0xffff."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def split(frame):
    """Independent parse: Ethernet, IPv4 header, UDP segment (by the IPv4 total length)."""
    eth, ip = frame[:14], frame[14:34]
    total_len = int.from_bytes(ip[2:4], "big")
    return eth, ip, frame[34:14 + total_len]


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def drain(sock, quiet=0.3):
    frames = []
    sock.settimeout(quiet)
    try:
        while True:
            frames.append(sock.recv(65536))
    except socket.timeout:
        return frames


def unused_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- frames

def test_ipv4_header_matches_a_known_good_example():
    # The classic worked example (Wikipedia "IPv4 header checksum"): 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7
    frame = tr.build_udp_frame("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01", "192.168.0.1", "192.168.0.199",
                               1234, 5678, b"x" * (0x73 - 28), ident=0)
    _, ip, _ = split(frame)
    assert ip.hex() == "450000730000400040 11b861c0a80001c0a800c7".replace(" ", "")


def test_frame_layout_and_checksums_verify_independently():
    payload = tr.make_payload(burst=3, seq=77, size=64)
    frame = tr.build_udp_frame("52:54:00:12:34:01", "02:00:00:00:00:01", "10.99.0.1", "10.99.0.2",
                               40000, 9, payload)
    eth, ip, udp = split(frame)
    assert eth == bytes.fromhex("525400123401" "020000000001" "0800")
    assert ones_complement_fold(ip) == 0xFFFF  # header with its checksum sums to all ones
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert udp[6:8] != b"\0\0"
    assert ones_complement_fold(pseudo + udp) == 0xFFFF
    assert struct.unpack("!HHH", udp[:6]) == (40000, 9, 8 + 64)
    assert udp[8:] == payload and len(frame) == 14 + 20 + 8 + 64


def test_frames_parse_back():
    frame = tr.build_udp_frame("52:54:00:12:34:02", "02:00:00:00:00:01", "10.0.0.1", "10.0.0.2", 1, 2,
                               tr.make_payload(9, 123456, 100))
    parsed = fr.parse_udp_frame(frame)
    assert (parsed.dst_mac, parsed.src_mac, parsed.src_ip, parsed.dst_ip, parsed.src_port, parsed.dst_port) == \
        ("52:54:00:12:34:02", "02:00:00:00:00:01", "10.0.0.1", "10.0.0.2", 1, 2)
    assert fr.parse_payload(parsed.payload) == (9, 123456)


def test_short_frames_are_padded_to_ethernet_minimum_and_still_parse():
    frame = tr.build_udp_frame(tr.BROADCAST_MAC, "02:00:00:00:00:01", "10.0.0.1", "10.0.0.2", 1, 2, b"ab")
    assert len(frame) == 60
    assert fr.parse_udp_frame(frame).payload == b"ab"


def test_corrupted_frames_are_named():
    frame = bytearray(tr.build_udp_frame(tr.BROADCAST_MAC, "02:00:00:00:00:01", "10.0.0.1", "10.0.0.2", 1, 2,
                                         tr.make_payload(0, 0)))
    bad = bytearray(frame)
    bad[22] ^= 1  # TTL
    with pytest.raises(tr.TrafficError, match="IPv4 header checksum"):
        fr.parse_udp_frame(bad)
    bad = bytearray(frame)
    bad[42] ^= 1  # first payload byte (the last bytes are Ethernet padding, outside UDP)
    with pytest.raises(tr.TrafficError, match="UDP checksum"):
        fr.parse_udp_frame(bad)
    with pytest.raises(tr.TrafficError, match="not a natsume-testbed"):
        fr.parse_payload(b"XXXX" + bytes(20))


@pytest.mark.parametrize("call, message", [
    (lambda: tr.mac_bytes("52:54:00:12:34"), "bad MAC address '52:54:00:12:34'"),
    (lambda: tr.ip_bytes("10.0.0.300"), "bad IPv4 address"),
    (lambda: tr.make_payload(0, 0, 2000), "payload size 2000 out of range"),
    (lambda: tr.build_udp_frame(tr.BROADCAST_MAC, tr.BROADCAST_MAC, "1.1.1.1", "1.1.1.2", 70000, 1, b""),
     "bad source port 70000"),
    (lambda: tr.send_bursts(("127.0.0.1", 9), bursts=0), "bursts must be a positive integer"),
    (lambda: tr.send_bursts(("127.0.0.1", 9), frames_per_burst=100, period_s=0.01, gap_s=0.001),
     "must fit in period_s"),
    (lambda: tr.flood(("127.0.0.1", 9), rate_pps=-5, duration_s=1), "rate_pps must be a positive number"),
    (lambda: tr.flood(("10.0.0.1", 9), duration_s=0.1), "loopback only; refusing 10.0.0.1:9"),
])
def test_bad_parameters_are_value_errors_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- sending over loopback

def test_two_bursts_of_fifty_all_arrive(receiver):
    port = receiver.getsockname()[1]
    counters = tr.send_bursts(("127.0.0.1", port), frames_per_burst=50, period_s=0.05, bursts=2)
    frames = drain(receiver)
    assert counters.frames == 100 and counters.send_errors == 0 and counters.bursts_completed == 2
    assert counters.bytes == sum(len(f) for f in frames) == 100 * len(frames[0])
    ids = [fr.parse_payload(fr.parse_udp_frame(f).payload) for f in frames]
    assert sorted(ids) == [(b, s) for b in range(2) for s in range(b * 50, b * 50 + 50)]
    assert counters.duration_s >= 0.05  # the second burst waited for its deadline


def test_flood_rate_is_paced_by_count(receiver):
    port = receiver.getsockname()[1]
    counters = tr.flood(("127.0.0.1", port), rate_pps=2000, duration_s=0.5)
    # Absolute schedule: never more than rate * duration (+1 for frame 0); loosely not much fewer.
    assert 600 <= counters.frames <= 1001
    assert len(drain(receiver)) == counters.frames
    assert 0.5 <= counters.duration_s < 1.5


def test_unthrottled_flood_is_bounded_by_duration(receiver):
    port = receiver.getsockname()[1]
    counters = tr.flood(("127.0.0.1", port), rate_pps=None, duration_s=0.2)
    assert counters.frames > 500  # loopback takes tens of thousands per second
    assert counters.duration_s < 1.0
    assert counters.achieved_pps > 0 and counters.as_dict()["frames"] == counters.frames


def test_stop_event_ends_a_flood_early(receiver):
    stop = threading.Event()
    sender = tr.Sender(tr.Flood(rate_pps=1000, duration_s=30), ("127.0.0.1", receiver.getsockname()[1]), stop)
    sender.start()
    time.sleep(0.1)
    sender.stop()
    counters = sender.join(timeout=5)
    assert counters.stopped_early and counters.duration_s < 5


def test_bursts_and_flood_run_concurrently():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as measured, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as load:
        for s in (measured, load):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind(("127.0.0.1", 0))
        burst = tr.Sender(tr.Burst(frames_per_burst=20, period_s=0.05, bursts=3), measured.getsockname())
        fl = tr.Sender(tr.Flood(rate_pps=1000, duration_s=0.3), load.getsockname())
        burst.start(), fl.start()
        b, f = burst.join(timeout=5), fl.join(timeout=5)
        assert b.frames == 60 and b.bursts_completed == 3
        assert len(drain(measured)) == 60
        assert 100 <= f.frames <= 301 and len(drain(load)) == f.frames
        assert b.start < f.end and f.start < b.end  # they overlapped


def test_send_errors_are_counted_not_raised():
    # Nobody listens: loopback answers with ICMP port unreachable, a connected socket reports it.
    counters = tr.flood(("127.0.0.1", unused_port()), rate_pps=500, duration_s=0.1)
    assert counters.send_errors > 0 and counters.errors_by_kind.get("ECONNREFUSED") == counters.send_errors
    assert counters.frames >= 1  # the first one left before the refusal came back


def test_sink_counts_guest_frames_by_ethertype():
    port = unused_port()
    arp = tr.mac_bytes(tr.BROADCAST_MAC) + tr.mac_bytes("52:54:00:12:34:01") + b"\x08\x06" + bytes(46)
    udp = tr.build_udp_frame(tr.BROADCAST_MAC, "52:54:00:12:34:01", "10.0.0.2", "10.0.0.1", 68, 67, b"hi")
    with fr.Sink(port) as sink, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as qemu:
        for frame in (arp, arp, udp):
            qemu.sendto(frame, ("127.0.0.1", port))
        deadline = time.monotonic() + 2
        while sink.snapshot().frames < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    counts = sink.counters
    assert counts.frames == 3 and counts.bytes == 2 * 60 + len(udp)
    assert counts.by_ethertype == {"arp": 2, "ipv4": 1}


def test_sink_port_in_use_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(tr.TrafficError, match=rf"cannot listen on 127.0.0.1:{s.getsockname()[1]}"):
            fr.Sink(s.getsockname()[1])
