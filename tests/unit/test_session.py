"""The run's lifecycle: Protocols and their fakes, the Session's teardown, the one deadline
loop, the stage table, and run() / measure() end to end on fakes at the QMP/console/agent seam."""

import dataclasses
import inspect
import json
import time
import xml.etree.ElementTree as ET

import pytest

from orchestrator import images, measure, run as run_mod, scenario, session
from orchestrator.agent import AgentError, GuestAgent
from orchestrator.console import SerialConsole
from orchestrator.deadline import Deadline
from orchestrator.machine import Machine
from orchestrator.stages import Stage, StageRunner, plan
from tests.conftest import ROOT
from tests.unit.fakes import FakeAgent, FakeConsole, FakeDom0, FakeMachine
from tests.unit.test_boot_stages import LOAD_LOG, RT_LOG, XEN_LOG
from tests.unit.test_evaluate import FTRACE_HEAD, IRQ_TABLE, _line
from tests.unit.test_xentrace import natsume, window

PROTOCOLS = [(session.MachinePart, Machine, FakeMachine), (session.ConsolePart, SerialConsole, FakeConsole),
             (session.AgentPart, GuestAgent, FakeAgent)]


def _members(proto):
    return [n for n in vars(proto) if not n.startswith("_")]


@pytest.mark.parametrize("proto, real, fake", PROTOCOLS, ids=lambda x: getattr(x, "__name__", ""))
def test_real_parts_and_fakes_implement_the_same_protocol(proto, real, fake):
    for cls in (real, fake):
        for name in _members(proto):
            assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
            want = getattr(proto, name)
            if isinstance(want, property):
                assert isinstance(getattr(cls, name), property), f"{cls.__name__}.{name} is not a property"
                continue
            want_params = list(inspect.signature(want).parameters)
            got_params = list(inspect.signature(getattr(cls, name)).parameters)
            assert got_params[:len(want_params)] == want_params, f"{cls.__name__}.{name}{got_params}"


def test_fake_agent_raises_what_the_real_agent_raises():
    with pytest.raises(AgentError):
        FakeAgent([(r".", (1, ""))]).run("false", check=True)


class Recorder:
    def __init__(self, events, name):
        self.events, self.name = events, name

    def close(self):
        self.events.append(f"{self.name}.close")


def test_session_tears_down_in_qemus_order_and_keeps_how_qemu_ended():
    events = []
    machine = FakeMachine(events=events)
    with session.Session(machine, Recorder(events, "console"), Recorder(events, "agent")) as sess:
        pass
    assert events == ["console.close", "agent.close", "shutdown"]
    assert sess.machine_exit.how == "quit" and sess.machine_exit.clean


def test_a_failed_qmp_quit_is_recorded_as_a_kill_not_a_quit():
    with session.Session(FakeMachine(quit_works=False), FakeConsole(""), FakeAgent([])) as sess:
        pass
    assert sess.machine_exit.how == "killed" and not sess.machine_exit.clean
    assert "QMP quit failed" in sess.machine_exit.detail


def test_real_machine_reports_a_kill_when_qmp_is_gone(tmp_path):
    m = Machine(["sleep", "30"], tmp_path / "qmp.sock", tmp_path / "qemu.log")
    m.proc = __import__("subprocess").Popen(["sleep", "30"])
    ended = m.shutdown(timeout=1)
    assert ended.how == "killed" and "QMP quit failed" in ended.detail and not m.alive()
    assert m.shutdown() is ended  # idempotent


def test_real_console_joins_its_drain_thread(tmp_path):
    import socket
    import threading
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    console = SerialConsole(path, tmp_path / "log").connect(2)
    peer, _ = server.accept()
    console.drain()
    assert any(t.name == "console-drain" for t in threading.enumerate())
    console.close()
    assert not any(t.name == "console-drain" for t in threading.enumerate())
    peer.close()
    server.close()


# ---------------------------------------------------------------- the deadline loop


def test_poll_tries_at_least_once_and_ends_in_else_at_the_deadline():
    attempts = []
    t0 = time.monotonic()
    for n in Deadline(0.3).poll(0.1):
        attempts.append(n)
    else:
        timed_out = True
    assert timed_out and attempts[0] == 0 and 3 <= len(attempts) <= 5
    assert 0.29 <= time.monotonic() - t0 < 0.6
    assert list(Deadline(0).poll(1)) == [0]


def test_poll_backs_off_up_to_its_cap():
    d = Deadline(0.5)
    stamps = [time.monotonic() for _ in d.poll(0.01, max_interval=0.2, backoff=4)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert gaps[0] < gaps[1] and max(gaps) < 0.3


def test_a_slice_never_passes_the_deadline():
    d = Deadline(0.2)
    assert 0 < d.slice(60) <= 0.2
    time.sleep(0.25)
    assert d.slice(60) == 0.001 and d.left == 0


def test_a_poll_attempt_at_the_deadline_still_gets_time_to_run():
    """The last attempt of a poll comes at the deadline: with slice() its command would time out
    in 1 ms and its AgentError would hide the poll's own "gave no ... within N s" message."""
    d = Deadline(0.1)
    assert d.attempt(60) == 5.0 and d.attempt(60, floor=2) == 2
    time.sleep(0.15)
    assert d.attempt(60) == 5.0 and d.expired()


def test_a_console_command_that_never_answers_says_so_not_a_1_ms_agent_timeout(monkeypatch):
    from orchestrator.measure import GuestConsole, MeasureError

    class SlowAgent:
        def run(self, command, timeout=60, check=False):
            if timeout < 1:  # as the real agent: a command given 1 ms cannot finish
                raise AgentError(f"dom0 command did not finish within {timeout} s: {command}")
            return type("R", (), {"ok": False, "stdout": "0" if command.startswith("stat") else "[panic]",
                                  "stderr": "", "rc": 1})()
    rt = GuestConsole(SlowAgent(), "rt")
    monkeypatch.setattr(rt, "send", lambda line: None)
    with pytest.raises(MeasureError, match=r"rt: `rtagent stop` gave no /\^RTAGENT-STOPPED/ within 1 s"):
        rt.command("rtagent stop", r"^RTAGENT-STOPPED", 1)


# ---------------------------------------------------------------- the stage table


@pytest.fixture
def s():
    base = scenario.load(ROOT / "testbed.yaml", "iso-stock")
    m = dataclasses.replace(base.measurement, bursts=2, frames_per_burst=3, period_ms=10, load=False, settle_s=0,
                            min_samples=3, pacing="host")  # the fakes run no vCPU plugin (test_pacing fakes its gate)
    return dataclasses.replace(base, measurement=m)


def test_every_stage_timeout_is_a_field_of_timeouts():
    fields = {f.name for f in dataclasses.fields(scenario.Timeouts)}
    assert {st.timeout for st in run_mod.STAGES if st.timeout} <= fields
    assert len({st.name for st in run_mod.STAGES}) == len(run_mod.STAGES)
    assert all(st.waits_for for st in run_mod.STAGES)


def test_the_plan_follows_the_scenario(s):
    names = run_mod.stage_names(s)
    assert names[:4] == ("ports", "images", "render", "qemu_up") and names[-2:] == ("collect", "shutdown")
    assert "natsume_option" not in names and "measure" in names
    nat = scenario.load(ROOT / "testbed.yaml", "iso-natsume")
    assert run_mod.stage_names(nat).index("natsume_option") == run_mod.stage_names(nat).index("toolstack") + 1
    boot_only = scenario.load(ROOT / "testbed.yaml", "boot-stock")
    assert "measure" not in run_mod.stage_names(boot_only)
    assert [st.name for st in plan(run_mod.STAGES, s, *run_mod.PROBE_STAGES)] == [
        "qemu_up", "xen_banner", "iommu", "dom0_ready"]


def test_after_a_failure_only_after_failure_stages_run(s):
    ran = []

    def ok(name):
        return lambda ctx, t: ran.append(name) or name

    def boom(ctx, t):
        raise RuntimeError("no banner")
    table = (Stage("a", "a", None, ok("a")), Stage("b", "b", "xen_banner", boom), Stage("c", "c", None, ok("c")),
             Stage("d", "d", None, ok("d"), after_failure=True))
    runner = StageRunner()
    error = runner.run(plan(table, s), None, s)
    assert ran == ["a", "d"] and error.stage == "b"
    assert [(r.name, r.status) for r in runner.results] == [("a", "passed"), ("b", "failed"), ("d", "passed"),
                                                            ("c", "skipped")]
    assert runner.results[1].timeout_s == s.timeouts.xen_banner and runner.failed_stage() == "b"


# ---------------------------------------------------------------- run() and measure() on fakes

VMM_TSCS = [1_000_000, 2_000_000, 3_000_000, 4_000_000]


def gzip_dump(body, lines):
    """What `rtagent dump --gzip` prints: the lines gzipped, base64 in 76-column lines, \r\n from the tty."""
    import base64
    import gzip
    enc = base64.b64encode(gzip.compress(body.encode())).decode()
    wrapped = "\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))
    return f"RTAGENT-DUMP-BEGIN gzip+base64 bytes={len(body.encode())}\r\n{wrapped}\r\nRTAGENT-DUMP-END lines={lines}\n"


def test_the_frame_receiver_reassembles_and_names_what_is_missing():
    from orchestrator import traffic
    sock = _free_udp_ports(1)[0]
    port = sock.getsockname()[1]
    sock.close()
    data = bytes(range(256)) * 20  # 5,120 bytes: 4 frames
    with traffic.FrameReceiver(port) as rx:
        n = send_frames(port, data)
        assert rx.collect(n, len(data), wait_s=5) == data
    with traffic.FrameReceiver(port) as rx:
        send_frames(port, data[:1400])  # only the first of 4 frames
        with pytest.raises(traffic.FrameError, match="did not arrive"):
            rx.collect(4, len(data), wait_s=0.3)


def test_a_gzip_dump_unpacks_to_the_plain_dump(tmp_path):
    body = FTRACE_HEAD + "".join(_line(t) for t in VMM_TSCS)
    wire = tmp_path / "dump.gz.b64"
    wire.write_text("rtagent dump --gzip\n" + gzip_dump(body, 4))
    assert measure.unpack_dump(wire) == f"RTAGENT-DUMP-BEGIN\n{body}RTAGENT-DUMP-END lines=4\n"


@pytest.mark.parametrize("mangle, message", [
    (lambda t: t.replace("RTAGENT-DUMP-END lines=4\n", ""), "markers are missing"),
    (lambda t: t.replace("bytes=", "bytes=1"), "decoded to"),
    (lambda t: t[:60] + "!!" + t[62:], "does not decode"),
])
def test_a_damaged_gzip_dump_is_a_clear_error(tmp_path, mangle, message):
    wire = tmp_path / "dump.gz.b64"
    wire.write_text(mangle(gzip_dump(FTRACE_HEAD + _line(5000), 4)))
    with pytest.raises(measure.MeasureError, match=message):
        measure.unpack_dump(wire)


def send_frames(port, data):
    """What framesend does, as QEMU's netdev hands it to the host: one UDP datagram per frame."""
    import socket
    import struct
    from orchestrator import traffic
    pieces = [data[i:i + 1400] for i in range(0, len(data), 1400)] or [b""]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for seq, piece in reversed(list(enumerate(pieces))):  # any order
            head = b"\xff" * 6 + b"\x02" + b"\x00" * 5 + struct.pack(">H", traffic.DUMP_ETHERTYPE)
            sock.sendto(head + traffic.DUMP_HEADER.pack(traffic.DUMP_MAGIC, seq, len(pieces), len(data), len(piece))
                        + piece, ("127.0.0.1", port))
    return len(pieces)


def _dom0(share_dir, extra=(), frames_port=None):
    """frames_port: where the fake RT guest's `rtagent dump --frames` sends its frames (None: framesend fails)."""
    log = RT_LOG
    body = FTRACE_HEAD + "".join(_line(t + 4_000) for t in VMM_TSCS)
    dump = gzip_dump(body, len(VMM_TSCS))

    def frames(line):
        if frames_port is None:
            return "RTAGENT-DUMP-BEGIN frames bytes=10\nFRAMESEND-ERROR no such interface\n"
        n = send_frames(frames_port, body.encode())
        return (f"RTAGENT-DUMP-BEGIN frames\nFRAMESEND frames={n} bytes={len(body)} retries=0 read_ticks=5000 "
                "send_ticks=700\nRTAGENT-DUMP-END lines=-\n")
    replies = {
        "rtagent calibrate": "RTAGENT-CALIBRATE n=400000 base=52 loop=400080\n",
        "rtagent sysinfo": " 40: 9 xen-pirq eth0-rx-0\nRTAGENT-COUNTERS rx_packets=10 irqs=4\r\nRTAGENT-SYSINFO-END\n",
        "rtagent counters": "RTAGENT-COUNTERS rx_packets=10 irqs=4\n",
        "rtagent start": "RTAGENT-STARTED irqs=40:eth0-rx-0\n",
        "rtagent stop": "RTAGENT-STOPPED\n",
        "rtagent dump --frames": frames,
        "rtagent dump": dump,
    }
    trace = window(1, *[natsume(0x51, 29, 1, t) for t in VMM_TSCS])
    shut = {"down": False}
    answers = list(extra) + [
        (r"^xl info$", (0, "cpu_mhz                : 999.999\n")),
        (r"^xl domid ", (0, "1\n")),
        (r"^xl debug-keys s", (0, "(XEN) dom1: mode=2,ofs=0x0,khz=999999\n")),
        (r"^xl debug-keys i", (0, IRQ_TABLE)),
        (r"^cat /var/log/xen/console/guest-rt.log$", lambda c: (0, log)),
        (r"^cat '?/var/log/xen/console/guest-rt.log", (0, RT_LOG)),
        (r"guest-load.log", (0, LOAD_LOG)),
        (r"^for i in /sys/class/net", (0, "eth0 rx_packets=5 rx_dropped=0 tx_packets=1\n")),
        (r"^xl list$", lambda c: (0, "Name ID\n" + ("" if shut["down"] else "Domain-0 0 1024 1 r----- 5\n"
                                                                                "rt 1 256 1 -b---- 1\n"))),
        (r"^xl list ", (0, "")),
        (r"^xl (vcpu-pin|pci-assignable-add|create)", (0, "")),
        (r"^xl shutdown", lambda c: (shut.update(down=True), (0, ""))[1]),
        (r".", (0, "")),  # collect's and sysinfo's commands: any output will do
    ]
    dom0 = FakeDom0(share_dir, "/mnt/share", log, replies, {"xentrace.bin": trace, "xentrace.log": b""}, answers)
    return dom0


def _free_udp_ports(n):
    import socket
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    return socks


def _on_ports(s, measured, load):
    nics = dataclasses.replace(s.nics, measured=dataclasses.replace(s.nics.measured, udp_port=measured),
                               load=dataclasses.replace(s.nics.load, udp_port=load))
    return dataclasses.replace(s, nics=nics)


def test_measure_runs_the_procedure_on_a_fake_dom0(s, tmp_path):
    dom0 = _dom0(tmp_path)
    dom0.share_mount = measure.render.SHARE_MOUNT
    sink, other = _free_udp_ports(2)  # the measured NIC's socket netdev, played by a bound socket
    with sink, other:
        s = _on_ports(s, sink.getsockname()[1], other.getsockname()[1])
        rec = measure.measure(dom0, s, tmp_path, lambda text: None)
    assert rec.tsc_khz == 999_999 and rec.rt_domid == 1 and rec.guest_irq_mode == "msix"
    assert rec.calibration["ok"] and rec.guest_irqs == {"40": "eth0-rx-0"}
    assert rec.traffic["measured"]["frames"] == 6 and "load" not in rec.traffic
    assert rec.trace_path.read_bytes() and "RTAGENT-DUMP-END" in rec.guest_dump_path.read_text()
    assert not dom0.xentrace_running
    typed = [c for c in dom0.commands if c.startswith("printf")]
    # the counters come with sysinfo's output: no console command of their own; the frames failed here
    # (framesend: no such interface), so the console carried the dump
    assert [c.split("'")[3].split()[1:] for c in typed] == [
        ["calibrate", "200000"], ["sysinfo"], ["start", "--upcall"], ["stop"], ["sysinfo"], ["dump", "--frames"],
        ["dump", "--gzip"]]
    assert rec.dump["channel"] == "the console (gzip+base64)"
    assert rec.counters_before["rt_guest"] == {"rx_packets": "10", "irqs": "4"}
    assert json.loads((tmp_path / "traffic.json").read_text())["sent"]["measured"]["frames"] == 6


def _fake_images(tmp_path):
    dirs = {}
    for name, files in (("kernel", ["vmlinuz"]), ("xen-stock", ["xen"]), ("guest-initramfs", ["guest-initrd.cpio.gz"]),
                        ("dom0-rootfs", ["dom0-rootfs.cpio"])):
        d = tmp_path / "cache" / name
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_bytes(b"fake " + f.encode())
        (d / "versions.txt").write_text(f"{name} 1 -\n")
        dirs[name] = d
    imgs = images.Images(dirs)
    return lambda variant, progress=None: imgs


def _run(s, tmp_path, console=XEN_LOG, machine=None, dom0_extra=(), pool=None):
    made = {}
    socks = _free_udp_ports(2)
    s = _on_ports(s, *(sock.getsockname()[1] for sock in socks))  # free ports: the render stage checks them
    for sock in socks:
        sock.close()

    def parts(argv, paths, logs):
        made["dom0"] = _dom0(paths.share_dir, dom0_extra, frames_port=s.nics.measured.udp_port + 1)
        made["dom0"].share_mount = measure.render.SHARE_MOUNT
        made["machine"] = machine or FakeMachine()
        made["console"] = FakeConsole(console)
        return made["machine"], made["console"], made["dom0"]
    outcome = run_mod.run(ROOT / "testbed.yaml", s, tmp_path / "results", lambda text: None, make_parts=parts,
                          ensure_images=_fake_images(tmp_path), pool=pool)
    return outcome, made


def test_a_pool_keeps_a_machine_for_the_next_run_of_its_scenario(s, tmp_path):
    """A comparison's repeats measure one boot: the second run skips the boot stages, the machine is
    paused between runs, and the pool shuts it down at its end; each run's raw records are its own."""
    from orchestrator.stages import StageRunner
    made, boots = {}, []
    socks = _free_udp_ports(2)
    s = _on_ports(s, *(sock.getsockname()[1] for sock in socks))
    for sock in socks:
        sock.close()

    def parts(argv, paths, logs):
        boots.append(paths.share_dir)
        made["dom0"] = _dom0(paths.share_dir)
        made["dom0"].share_mount = measure.render.SHARE_MOUNT
        made["machine"], made["console"] = FakeMachine(), FakeConsole(XEN_LOG)
        return made["machine"], made["console"], made["dom0"]
    pool_runner, imgs = StageRunner(), _fake_images(tmp_path)
    with run_mod.BootPool(lambda text: None, pool_runner) as pool:
        outcomes = [run_mod.run(ROOT / "testbed.yaml", s, tmp_path / "results", lambda text: None, make_parts=parts,
                                ensure_images=imgs, pool=pool) for _ in range(2)]
        assert made["machine"].events == ["launch", "cont", "stop", "cont", "stop"]  # paused between runs
    first, second = outcomes
    assert len(boots) == 1 and all(o.code == 0 for o in outcomes), [o.error for o in outcomes]
    assert [r.name for r in first.runner.results] == [n for n in run_mod.stage_names(s) if n != "shutdown"]
    assert [r.name for r in second.runner.results] == ["measure", "evaluate", "collect"]
    manifest = json.loads((second.bundle / "manifest.json").read_text())
    assert manifest["boot"]["reused_from"] == first.bundle.name and "machine_exit" not in manifest
    for o in outcomes:
        assert (o.bundle / "raw" / "xentrace.bin").exists() and (o.bundle / "samples.csv").exists()
    assert made["machine"].events[-1] == "shutdown" and made["dom0"].closed
    assert [(r.name, r.status) for r in pool_runner.results] == [(f"shutdown:{s.name}", "passed")]


def test_a_comparison_boots_side_by_side_then_measures_each_boot_in_turn(s, tmp_path, monkeypatch):
    """Repeat 1 of both scenarios boots at once; each machine waits paused for its turn; repeat 2 of
    each measures the kept boot; at the end the pool shuts both down."""
    import functools
    from orchestrator import compare, scenario as scenario_mod
    machines = {}
    base = _on_ports(s, *(sock.getsockname()[1] for sock in _free_udp_ports(2)))

    def parts(argv, paths, logs):
        name = argv[argv.index("-name") + 1]
        dom0 = _dom0(paths.share_dir)
        dom0.share_mount = measure.render.SHARE_MOUNT
        machines[name] = FakeMachine()
        return machines[name], FakeConsole(XEN_LOG), dom0
    monkeypatch.setattr(compare, "run", functools.partial(run_mod.run, make_parts=parts,
                                                          ensure_images=_fake_images(tmp_path)))
    other = dataclasses.replace(base, name="other")
    comp = scenario_mod.Comparison("cmp", "two", (base, other), repeats=2)
    outcome = compare.run_comparison(ROOT / "testbed.yaml", comp, tmp_path / "results", lambda text: None,
                                     ensure_images=lambda variant, progress=None: None)
    assert outcome.code == 0, [(o.bundle.name, o.error) for _, o in outcome.runs]
    assert [s_.name for s_, _ in outcome.runs] == [base.name, "other", base.name, "other"]
    assert sorted(machines) == [f"testbed-{base.name}", "testbed-other"]
    for events in (m.events for m in machines.values()):  # booted, paused for its turn, kept, taken, kept, shut
        assert events == ["launch", "cont", "stop", "cont", "stop", "cont", "stop", "cont", "shutdown"], events
    later = [o for _, o in outcome.runs[2:]]
    assert all([r.name for r in o.runner.results] == ["measure", "evaluate", "collect"] for o in later)
    rows = [r.name for r in outcome.runner.results]
    assert sorted(rows[-2:]) == sorted(["shutdown:other", f"shutdown:{base.name}"])


def test_a_failed_run_is_not_kept_by_the_pool(s, tmp_path):
    outcome, made = None, {}
    with run_mod.BootPool(lambda text: None) as pool:
        outcome, made = _run(s, tmp_path, dom0_extra=[(r"xl create .*xl-rt.cfg", (1, "no such device"))], pool=pool)
        assert not pool.kept
    assert outcome.code == 2 and made["machine"].events[-1] == "shutdown"


def test_run_goes_through_every_stage_to_a_finished_bundle(s, tmp_path):
    outcome, made = _run(s, tmp_path)
    assert outcome.error is None, outcome.error
    assert [r.name for r in outcome.runner.results] == list(run_mod.stage_names(s))
    assert outcome.runner.passed and outcome.code == 0, [c for c in outcome.checks if not c["ok"]]
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["status"] == "passed" and manifest["machine_exit"]["how"] == "quit"
    assert manifest["summary"]["paired"] == len(VMM_TSCS)
    dump = json.loads((outcome.bundle / "summary.json").read_text())["dump"]
    assert dump["channel"] == "frames on the measured NIC" and dump["frames"] == 1, dump
    assert dump["read_ticks"] == 5000 and dump["send_ticks"] == 700
    # the host counts the lines (the guest sends ftrace's text as it is, headers included)
    assert (outcome.bundle / "raw" / "rt-guest-dump.log").read_text().endswith(f"RTAGENT-DUMP-END lines={len(VMM_TSCS)}\n")
    stages = json.loads((outcome.bundle / "stages.json").read_text())
    assert stages[5]["name"] == "iommu" and stages[5]["timeout_s"] == s.timeouts.iommu and stages[5]["waits_for"]
    assert (outcome.bundle / "samples.csv").exists() and outcome.archive.exists()
    assert made["console"].events == ["drain", "close"] and made["dom0"].closed
    assert made["machine"].events == ["launch", "cont", "shutdown"]


def test_a_failed_boot_stage_still_collects_and_tears_down(s, tmp_path):
    outcome, made = _run(s, tmp_path, dom0_extra=[(r"xl create .*xl-rt.cfg", (1, "no such device"))])
    assert outcome.code == 2 and outcome.runner.failed_stage() == "rt_guest"
    status = {r.name: r.status for r in outcome.runner.results}
    assert status["collect"] == "passed" and status["load_guest"] == "skipped" and status["shutdown"] == "skipped"
    logs = outcome.bundle / "logs"
    assert (logs / "xl-dmesg.txt").exists()
    # the failure's diagnostics: every debug key, the NIC's registers from QEMU, the guest's IRQs (or why not)
    keys = (logs / "xen-debug-keys.txt").read_text()
    assert all(f"==== xl debug-keys {k}" in keys for k in "jeqr")
    regs = json.loads((logs / "e1000e-registers.json").read_text())["registers"]
    assert list(regs)[-1] == "ICR" and regs["IMS"] == "0x0000009d"
    assert (logs / "rt-guest-interrupts.txt").read_text()
    assert "after the failure: xen-debug-keys.txt" in next(r for r in outcome.runner.results if r.name == "collect").detail
    assert made["machine"].events[-2:] == [f"registers {s.nics.measured.pci_slot:#x}", "shutdown"]
    assert made["console"].events[-1] == "close"
    junit = ET.parse(outcome.bundle / "junit.xml").getroot()
    failure = junit.find("testcase[@name='stage.rt_guest']/failure")
    assert "no such device" in failure.text and "the stage waits for" in failure.text


def test_a_failure_before_dom0_answers_skips_collect_with_the_reason(s, tmp_path):
    outcome, _ = _run(s, tmp_path, console=XEN_LOG.replace("I/O virtualisation enabled", ""))
    assert outcome.runner.failed_stage() == "iommu"
    collect = next(r for r in outcome.runner.results if r.name == "collect")
    assert collect.status == "skipped" and "never answered" in collect.detail


def test_a_kill_at_shutdown_fails_the_run(s, tmp_path):
    outcome, _ = _run(s, tmp_path, machine=FakeMachine(quit_works=False))
    assert outcome.code == 2 and outcome.runner.failed_stage() == "shutdown"
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["machine_exit"]["how"] == "killed"


def test_ctrl_c_in_a_stage_ends_the_run_with_a_bundle(s, tmp_path):
    def interrupt(command):
        raise KeyboardInterrupt
    outcome, made = _run(s, tmp_path, dom0_extra=[(r"^xl create .*xl-load", interrupt)])
    assert outcome.interrupted and outcome.code == 2
    assert outcome.runner.failed_stage() == "load_guest"
    assert next(r for r in outcome.runner.results if r.name == "collect").status == "skipped"
    assert made["machine"].events[-1] == "shutdown"
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["interrupted"] and "teardown" not in manifest
    assert manifest["error"].endswith("interrupted (SIGINT)")


class _SeesTheBundleAtShutdown(FakeMachine):
    """Records what a SIGKILL arriving while QEMU stops would leave in results/."""

    def __init__(self, results):
        super().__init__()
        self.results, self.seen = results, None

    def shutdown(self, timeout=15):
        if self.seen is None:
            self.seen = {"timeout": timeout, "folders": sorted(p.name for p in self.results.iterdir()),
                         "manifests": [json.loads(m.read_text()) for m in self.results.glob("*/manifest.json")],
                         "junit": [j.read_text() for j in self.results.glob("*/junit.xml")],
                         "dmesg": [d.read_text() for d in self.results.glob("*/logs/xl-dmesg.txt")]}
        return super().shutdown(timeout)


def test_after_a_signal_the_bundle_is_finished_before_qemu_is_stopped(s, tmp_path):
    def sigterm(command):
        raise KeyboardInterrupt("SIGTERM")
    machine = _SeesTheBundleAtShutdown(tmp_path / "results")
    outcome, _ = _run(s, tmp_path, machine=machine, dom0_extra=[(r"^xl create .*xl-load", sigterm)])
    seen = machine.seen
    assert [f for f in seen["folders"] if f.startswith(".")] == []  # no .partial folder, even now
    [manifest] = seen["manifests"]
    assert manifest["failed_stage"] == "load_guest" and manifest["error"].endswith("interrupted (SIGTERM)")
    assert manifest["teardown"].startswith("interrupted") and "machine_exit" not in manifest
    assert "stage.load_guest" in seen["junit"][0] and seen["dmesg"]  # dom0's log collected after the signal
    assert seen["timeout"] == run_mod.AFTER_SIGNAL_QUIT_S  # QEMU gets seconds, not the usual 15 s
    final = json.loads((outcome.bundle / "manifest.json").read_text())  # then finished again, with QEMU's end
    assert final["machine_exit"]["how"] == "quit" and "teardown" not in final and outcome.archive.exists()


# ---------------------------------------------------------------- QEMU's start and the KVM probe

SLOW_QMP = r'''
import json, socket, sys, time
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)            # the file exists from here on ...
time.sleep(0.5)           # ... but connections are refused until listen(), as in QEMU's start
srv.listen(1)
conn, _ = srv.accept()
greeting = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}, "capabilities": []}}
conn.sendall(json.dumps(greeting).encode() + b"\r\n")
buf, dec = "", json.JSONDecoder()
while True:
    data = conn.recv(4096)
    if not data:
        break
    buf += data.decode()
    while buf.strip():
        cmd, end = dec.raw_decode(buf.lstrip())
        buf = buf.lstrip()[end:]
        reply = {"return": {}}
        if "id" in cmd:
            reply["id"] = cmd["id"]
        conn.sendall(json.dumps(reply).encode() + b"\r\n")
        if cmd.get("execute") == "quit":
            sys.exit(0)
'''


def test_launch_waits_out_the_gap_between_bind_and_listen(tmp_path):
    import sys
    script = tmp_path / "slow_qmp.py"
    script.write_text(SLOW_QMP)
    m = Machine([sys.executable, str(script), str(tmp_path / "q.sock")], tmp_path / "q.sock", tmp_path / "log")
    m.launch(10)
    assert m.qmp is not None
    assert m.shutdown(5).how == "quit"


def _host_timing(s):
    return dataclasses.replace(s, machine=dataclasses.replace(s.machine, accel="auto", timing="host"))


def test_a_failed_kvm_probe_records_the_stage_and_qemus_output(s, tmp_path, monkeypatch):
    from orchestrator import machine as machine_mod
    from orchestrator.errors import MachineError
    monkeypatch.setattr(images, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(machine_mod, "kvm_usable", lambda: True)

    class KvmMachine(FakeMachine):
        def launch(self, timeout):
            raise MachineError("QEMU exited at start (exit 1)", ["qemu-system-x86_64", "-accel", "kvm"],
                               "qemu-system-x86_64: kvm: nested virtualisation refused\n")
    calls = []

    def parts(argv, paths, logs):
        calls.append(argv[argv.index("-accel") + 1].split(",")[0])
        dom0 = _dom0(paths.share_dir)
        dom0.share_mount = measure.render.SHARE_MOUNT
        return (KvmMachine() if calls[-1] == "kvm" else FakeMachine()), FakeConsole(XEN_LOG), dom0
    socks = _free_udp_ports(2)
    sc = _on_ports(_host_timing(s), *(x.getsockname()[1] for x in socks))
    for x in socks:
        x.close()
    outcome = run_mod.run(ROOT / "testbed.yaml", sc, tmp_path / "results", lambda text: None, make_parts=parts,
                          ensure_images=_fake_images(tmp_path))
    assert calls == ["kvm", "tcg"] and outcome.code == 0, outcome.error
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["accelerator"]["used"] == "tcg"
    assert "stage 'qemu_up' failed: QEMU exited at start" in manifest["accelerator"]["why"]
    probe = json.loads((outcome.bundle / "logs" / "kvm-probe" / "probe.json").read_text())
    assert probe["stage"] == "qemu_up" and "nested virtualisation refused" in probe["error"]
    stored = json.loads((tmp_path / "cache" / "kvm-verdicts.json").read_text())
    (verdict,) = stored.values()
    assert not verdict["works"] and verdict["stage"] == "qemu_up"


def test_a_kvm_verdict_expires_with_the_images(tmp_path):
    from orchestrator.machine import KvmVerdicts
    path = tmp_path / "v.json"
    KvmVerdicts(path, ["xen-stock-aaaa"]).put(False, "stage 'qemu_up' failed")
    assert KvmVerdicts(path, ["xen-stock-aaaa"]).get()["works"] is False
    assert KvmVerdicts(path, ["xen-stock-bbbb"]).get() is None
    KvmVerdicts(path, ["xen-stock-aaaa"]).forget()
    assert KvmVerdicts(path, ["xen-stock-aaaa"]).get() is None


def test_accel_kvm_is_refused_for_instruction_timing(capsys):
    from orchestrator import cli
    assert cli.main(["run", "iso-stock", "--accel", "kvm"]) == 2
    assert "needs single-threaded TCG" in capsys.readouterr().err


def test_a_second_signal_does_not_interrupt_the_teardown(capsys):
    import os
    import signal
    from orchestrator import cli
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cli._handle_signals()
        finished = False
        with pytest.raises(KeyboardInterrupt):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # CI's second signal while we tear down
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)
                finished = True
        assert finished
        assert "SIGTERM again: already stopping" in capsys.readouterr().err
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_stage_that_failed_because_qemu_died_names_qemus_exit(s, tmp_path):
    """QEMU killed mid-run: the stage sees a closed socket; the error names QEMU's end instead."""
    machine = FakeMachine()
    machine._returncode = -9  # killed by SIGKILL while the RT guest was being created
    outcome, _ = _run(s, tmp_path, machine=machine, dom0_extra=[(r"xl create .*xl-rt.cfg", (1, "Disconnected"))])
    assert outcome.code == 2 and outcome.runner.failed_stage() == "rt_guest"
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert "QEMU exited during the stage (killed by SIGKILL); the stage saw:" in manifest["error"]
    row = next(r for r in json.loads((outcome.bundle / "stages.json").read_text()) if r["name"] == "rt_guest")
    assert row["detail"].startswith("QEMU exited during the stage (killed by SIGKILL)")
    assert manifest["raw_records"] == {"complete": False, "files": [], "why": "the run ended before its measure stage"}


def test_an_agent_that_stops_answering_fails_every_later_call_at_once():
    """qemu-ga killed in dom0: its socket stays open and no reply comes. The first call waits out the
    socket's timeout; after that every call fails at once with the same reason (collecting a
    dozen logs must not wait a dozen timeouts)."""
    class SilentQga:
        calls = 0

        def cmd(self, name, **args):
            SilentQga.calls += 1
            if name == "guest-exec":
                return {"pid": 7}
            raise TimeoutError()

        def close(self):
            pass

    agent = GuestAgent("/nonexistent")
    agent.qga, agent.answered = SilentQga(), True
    with pytest.raises(AgentError, match=r"stopped answering \(TimeoutError: no reply\) at: xl list"):
        agent.run("xl list")
    assert not agent.connected and SilentQga.calls == 2
    t0 = time.monotonic()
    with pytest.raises(AgentError, match=r"stopped answering .* at: xl list"):
        agent.run("xl dmesg")
    assert time.monotonic() - t0 < 0.1 and SilentQga.calls == 2
