"""Guest pacing: the arrival log's parser, the gate plan, the flood's chunk sizes, and pacing.run
against a fake QEMU: a fake vCPU plugin on real FIFOs (a gate every step of a simulated instruction
count, waiting for the host's answer) and a fake filter-dump (a loopback UDP socket that logs each
frame it takes in, stamped with the simulated guest clock, which stands still while a gate waits)."""

import os
import socket
import struct
import threading

import pytest

from orchestrator import pacing, scenario, traffic
from tests.conftest import ROOT

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, pacing.SNAPLEN, 1)


def record(t_us, frame, snaplen=pacing.SNAPLEN):
    cap = frame[:snaplen]
    return struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(cap), len(frame)) + cap


def burst_frame(burst, seq):
    return traffic.Addressing().frame(burst, seq, 64, seq)


def flood_frame(i):
    return traffic.Addressing().frame(traffic.FLOOD_BURST, i, 64, i)


def test_arrival_log_groups_frames_by_stamp_and_reads_tags(tmp_path):
    path = tmp_path / "arrivals.pcap"
    path.write_bytes(PCAP_HEADER + record(5, burst_frame(0, 0)))  # before start(): an earlier measurement's
    log = pacing.ArrivalLog(path, pacing.payload_tag).start()
    with open(path, "ab") as f:
        f.write(record(100_000, burst_frame(1, 10)) + record(100_000, burst_frame(1, 11)))
        partial = record(200_000, burst_frame(2, 12))
        f.write(partial[:20])  # QEMU is mid-write: the record must wait, not be misread
    assert log.poll() == 2
    with open(path, "ab") as f:
        f.write(partial[20:])
    assert log.poll() == 3
    assert [(a.t_us, a.frames, a.tags) for a in log.arrivals] == [(100_000, 2, {(1, 10), (1, 11)}),
                                                                  (200_000, 1, {(2, 12)})]
    log.close()


def test_payload_tag_of_a_foreign_frame():
    assert pacing.payload_tag(b"\xff" * 80) == pacing.NO_TAG
    assert pacing.payload_tag(burst_frame(7, 9)) == (7, 9)


def _log_of(arrivals):
    log = pacing.ArrivalLog("unused")
    for t_us, tags in arrivals:
        log.arrivals.append(pacing.Arrival(t_us, len(tags), set(tags)))
        log.frames += len(tags)
    return log


def test_chunk_spread_compares_neighbours_only():
    whole = _log_of([(0, [(0, 0), (0, 1)]), (10, [(1, 2)]), (20, [(2, 3)])])
    assert pacing.chunk_spread(whole) == (0, 0)
    # burst 1 in two instants, and one instant holding bursts 1 and 2
    broken = _log_of([(0, [(0, 0)]), (10, [(1, 1)]), (20, [(1, 2), (2, 3)])])
    assert pacing.chunk_spread(broken) == (1, 1)
    # flood chunk labels wrap (k % 256): the same label far apart is two chunks, not one spread
    flood = traffic.FLOOD_BURST
    wrapped = _log_of([(0, [(flood, 0)]), (10, [(flood, 1)]), (20, [(flood, 0)])])
    assert pacing.chunk_spread(wrapped) == (0, 0)


@pytest.mark.parametrize("rate,interval,chunks", [(20000, 1000, [20] * 5), (1500, 1000, [1, 2, 1, 2]),
                                                  (1000, 1000, [1, 1, 1])])
def test_flood_chunks_hold_the_rate_exactly(rate, interval, chunks):
    assert [pacing.flood_chunk(k, rate, interval) for k in range(len(chunks))] == chunks
    assert sum(pacing.flood_chunk(k, rate, interval) for k in range(1000)) == rate * interval * 1000 // 1_000_000


def _scenario(**measurement):
    s = scenario.load(ROOT / "testbed.yaml", "smoke-stock")
    import dataclasses
    return dataclasses.replace(s, measurement=dataclasses.replace(s.measurement, **measurement))


def test_plan_puts_a_burst_every_period_after_one_period_of_load():
    plan = pacing.Plan.of(_scenario(bursts=3, period_ms=5, load_interval_us=1000).measurement)
    assert (plan.gates, plan.per_burst, plan.first_burst) == (20, 5, 5)
    assert [k for k in range(plan.gates) if plan.burst_at(k) is not None] == [5, 10, 15]
    assert [plan.burst_at(k) for k in (5, 10, 15)] == [0, 1, 2]
    assert pacing.gate_step(_scenario(load_interval_us=1000).measurement) == 1_000_000
    no_load = pacing.Plan.of(_scenario(bursts=3, load=False).measurement)
    assert (no_load.gates, no_load.first_burst) == (3, 0)
    assert pacing.gate_step(_scenario(load=False, period_ms=100).measurement) == 100_000_000


class FakeQemu:
    """The plugin's side of the gate FIFOs and one filter-dump per NIC. The guest 'executes' `step`
    instructions (guest time, 1 ns each) between gates, and only while no gate waits."""

    def __init__(self, tmp_path, ports_logs, step, ctl):
        self.out, self.into = tmp_path / "gate-out", tmp_path / "gate-in"
        os.mkfifo(self.out)
        os.mkfifo(self.into)
        self.ctl, self.step = ctl, step
        self.t_ns, self.stop = 0, threading.Event()
        self.socks = []
        for port_holder, path in ports_logs:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.001)
            port_holder.append(sock.getsockname()[1])
            path.write_bytes(PCAP_HEADER)
            self.socks.append((sock, path))
        self.gates_seen = 0
        self.threads = [threading.Thread(target=self._plugin, daemon=True)] + [
            threading.Thread(target=self._dump, args=sd, daemon=True) for sd in self.socks]

    def _plugin(self):
        w, r = os.open(self.out, os.O_RDWR), os.open(self.into, os.O_RDWR)
        while not self.stop.is_set() and not (self.ctl.exists() and "gate" in self.ctl.read_text()):
            self.stop.wait(0.01)
        k = 0
        while not self.stop.is_set():
            self.t_ns += self.step  # the guest runs one step
            os.write(w, struct.pack("<QQ", k, self.t_ns))
            answer = struct.unpack("<Q", os.read(r, 8))[0]
            self.gates_seen = k = k + 1
            if answer == pacing.CLOSE:
                break

    def _dump(self, sock, path):
        while not self.stop.is_set():
            try:
                frame = sock.recv(2048)
            except socket.timeout:
                continue
            with open(path, "ab") as f:
                f.write(record(self.t_ns // 1000, frame))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for sock, _ in self.socks:
            sock.close()


def test_run_hands_every_gate_its_chunk_whole(tmp_path):
    s = _scenario(bursts=4, period_ms=2, frames_per_burst=100, load_rate_pps=20000, load_interval_us=1000)
    measured_port, load_port = [], []
    ctl = tmp_path / "ctl"
    paths = {"measured": tmp_path / "m.pcap", "load": tmp_path / "l.pcap"}
    with FakeQemu(tmp_path, [(measured_port, paths["measured"]), (load_port, paths["load"])], 1_000_000, ctl) as q:
        import dataclasses
        s = dataclasses.replace(s, nics=dataclasses.replace(
            s.nics, measured=dataclasses.replace(s.nics.measured, udp_port=measured_port[0]),
            load=dataclasses.replace(s.nics.load, udp_port=load_port[0])))
        logs = {role: pacing.ArrivalLog(path, pacing.payload_tag).start() for role, path in paths.items()}
        gate = pacing.Gate(q.out, q.into)
        released = []  # (gates the guest has passed, role, frames of that NIC in so far) at each release
        release = lambda role: released.append((q.gates_seen, role, logs[role].poll()))
        counters, rep = pacing.run(s, gate, ctl, logs, release, threading.Event())
        gate.close()
    plan = pacing.Plan.of(s.measurement)
    assert q.gates_seen == plan.gates == 10
    assert counters["measured"].frames == 400 and counters["measured"].bursts_completed == 4
    assert counters["load"].frames == 20 * plan.gates
    d = rep.as_dict()
    assert d["on_schedule"], d
    assert d["chunks"]["measured"] == {"sent": 400, "arrived": 400, "instants": 4, "spread": 0, "merged": 0,
                                       "guest_span_s": 0.006, "frames_per_guest_s": 400 / 0.006,
                                       "median_gap_guest_us": 2000}
    assert d["chunks"]["load"]["median_gap_guest_us"] == 1000 and d["chunks"]["load"]["guest_span_s"] == 0.009
    # each burst came in at its own gate's guest instant: gates 2, 4, 6, 8 -> 3, 5, 7, 9 ms
    assert [a.t_us for a in logs["measured"].arrivals] == [3000, 5000, 7000, 9000]
    # every gate's chunk released once all of it was in, while the guest still waited at that gate
    assert [r for r in released if r[1] == "load"] == [(k, "load", 20 * (k + 1)) for k in range(10)]
    assert [r for r in released if r[1] == "measured"] == [(k, "measured", 100 * (k // 2)) for k in (2, 4, 6, 8)]
    assert "gate" in ctl.read_text()


def test_measure_releases_each_nics_buffer_by_its_id_and_writes_the_arrivals(tmp_path):
    """measure's wiring: the QMP release goes to the filter-buffer the QEMU argv names, and each
    NIC's arrivals land in raw/ (the fake machine records the releases)."""
    import dataclasses

    from orchestrator import measure
    from tests.unit.fakes import FakeMachine
    s = _scenario(bursts=2, period_ms=2, frames_per_burst=10, load_rate_pps=20000, load_interval_us=1000)
    measured_port, load_port = [], []
    ctl = tmp_path / "ctl"
    paths = {"measured": tmp_path / "m.pcap", "load": tmp_path / "l.pcap"}
    machine = FakeMachine()
    with FakeQemu(tmp_path, [(measured_port, paths["measured"]), (load_port, paths["load"])], 1_000_000, ctl) as q:
        s = dataclasses.replace(s, nics=dataclasses.replace(
            s.nics, measured=dataclasses.replace(s.nics.measured, udp_port=measured_port[0]),
            load=dataclasses.replace(s.nics.load, udp_port=load_port[0])))
        sent = measure.send_paced_traffic(s, lambda line: None, (paths, (q.out, q.into)), ctl, tmp_path, machine)
    flushes = [e for e in machine.events if e.startswith("flush")]
    assert flushes.count("flush pace-load") == pacing.Plan.of(s.measurement).gates == 6
    assert flushes.count("flush pace-measured") == 2
    assert sent["measured"]["frames"] == 20 and sent["pacing"]["on_schedule"]
    assert (tmp_path / "arrivals-measured.csv").read_text().splitlines()[1:] == ["3000,10,0", "5000,10,1"]
    with pytest.raises(measure.MeasureError, match="over QMP"):
        measure.send_paced_traffic(s, print, (paths, (q.out, q.into)), ctl, tmp_path, None)
