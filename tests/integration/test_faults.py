"""The fault table: a short real measurement (soak-stock: 20 bursts under load) with one fault
injected at a chosen stage; the run must end with the right exit code and a bundle that names the
stage and the cause, and leave nothing behind. Adding a fault is a row of FAULTS.

Each case runs `python -m tests.integration.fault_harness` (the real CLI; see there for the two
faults made inside the guests) as a subprocess on its own UDP ports and results folder, waits for
a stage's line, injects, and checks the evidence. `make faults` runs the table (about 25 min);
it is kept out of `make test` for CI's time (see the README)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SCENARIO = "soak-stock"
# Every case's results under results/faults-<UTC>/<case>/, kept as the table's evidence (pytest's
# own tmp folders are pruned by later sessions, also while a long table still runs).
FAULT_RESULTS = ROOT / "results" / f"faults-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
BASE_PORT = 40400  # row i: measured NIC on BASE_PORT + 20 i, load NIC 10 above
STAGE_LINE = re.compile(r"^[✓✗-] (\S+)\s+[\d.]+ s")
WAIT_FOR_STAGE_S = 900
RUN_LIMIT_S = 1200
CI_KILL_AFTER_S = 10  # a CI cancel sends SIGKILL about 10 s after its first signal


# ---------------------------------------------------------------- one run under a fault


@dataclass
class Case:
    """One orchestrator subprocess and what it printed."""
    results: Path
    ports: tuple
    guest_fault: str = "-"
    sets: tuple = ()
    lines: list = field(default_factory=list)
    passed: dict = field(default_factory=dict)  # stage -> threading.Event, set on its line
    proc: subprocess.Popen = None
    qemu_pid: int = None
    qemu_argv: list = field(default_factory=list)
    resumed: object = None  # a pause's `cont`: True, or why it failed
    bundle_whole_after_s: float = None  # SIGTERM: when the finished bundle was there

    def start(self):
        measured, load = self.ports
        sets = [f"nics.measured.udp_port={measured}", f"nics.load.udp_port={load}", *self.sets]
        argv = [sys.executable, "-m", "tests.integration.fault_harness", self.guest_fault, "--", "run", SCENARIO,
                "--results", str(self.results), *[a for x in sets for a in ("--set", x)]]
        env = dict(os.environ, COLUMNS="200", TERM="dumb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = STAGE_LINE.match(line.strip())
            if m:
                self._event(m.group(1)).set()
            if self.qemu_pid is None:
                self._find_qemu()

    def _event(self, stage):
        return self.passed.setdefault(stage, threading.Event())

    def _find_qemu(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            # the run's VM, not the `qemu-system-x86_64 --version` the run also starts
            if int(ppid) == self.proc.pid and state != "Z" and any(b"monitor.sock" in a for a in argv):
                self.qemu_pid, self.qemu_argv = int(pid), [a.decode() for a in argv if a]
                return

    def wait_stage(self, stage, timeout=WAIT_FOR_STAGE_S):
        assert self._event(stage).wait(timeout), f"no line for stage {stage} in {timeout} s:\n" + self.output()
        if self.qemu_pid is None:
            self._find_qemu()

    def wait(self, timeout=RUN_LIMIT_S):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"the run did not end within {timeout} s:\n" + self.output()) from None

    def output(self):
        return "\n".join(self.lines[-60:])

    def signal(self, sig):
        self.proc.send_signal(sig)

    @property
    def monitor(self):
        """The operator's QMP monitor of this run's QEMU (the testbed holds the other one)."""
        path = next(a.split("path=")[1].split(",")[0] for a in self.qemu_argv if "monitor.sock" in a)
        from qemu.qmp.legacy import QEMUMonitorProtocol
        qmp = QEMUMonitorProtocol(path)
        qmp.connect()
        return qmp

    def bundles(self):
        return sorted(p for p in self.results.iterdir() if p.is_dir() and not p.name.startswith("."))

    def partials(self):
        return sorted(p.name for p in self.results.iterdir() if ".partial" in p.name)


# ---------------------------------------------------------------- the faults


def _kill_qemu(case):
    assert case.qemu_pid is not None, "no QEMU of this run found"
    os.kill(case.qemu_pid, signal.SIGKILL)


def _signal(*sigs, gap_s=1.0):
    def inject(case):
        for i, sig in enumerate(sigs):
            if i:
                time.sleep(gap_s)
            case.signal(sig)
    return inject


def _sigterm_then_ci_kill(case):
    """SIGTERM as a CI cancel sends it; the bundle must be whole before the SIGKILL would come."""
    t0 = time.monotonic()
    case.signal(signal.SIGTERM)
    while time.monotonic() - t0 < 60:
        done = [b for b in case.bundles() if (b / "manifest.json").exists()]
        if done:
            case.bundle_whole_after_s = time.monotonic() - t0
            break
        time.sleep(0.1)


def _pause(seconds):
    """`stop` over the operator's monitor, `cont` after `seconds`. Past a stage's timeout the run has
    quit QEMU by then (a paused VM still quits over QMP): the `cont` then finds no QEMU, as it should."""
    def inject(case):
        qmp = case.monitor
        try:
            qmp.cmd("stop")
            time.sleep(seconds)
            try:
                qmp.cmd("cont")
                case.resumed = True
            except Exception as exc:  # noqa: BLE001 - QEMU quit meanwhile
                case.resumed = f"cont failed: {exc!r}"
        finally:
            _close(qmp)
    return inject


def _close(qmp):
    try:
        qmp.close()
    except Exception:  # noqa: BLE001 - QEMU may have quit under the monitor
        pass


def _link_drop(seconds):
    def inject(case):
        qmp = case.monitor
        try:
            qmp.cmd("set_link", name="measured", up=False)
            time.sleep(seconds)
            qmp.cmd("set_link", name="measured", up=True)
        finally:
            _close(qmp)
    return inject


def _nothing(case):
    pass


@dataclass(frozen=True)
class Fault:
    name: str
    after: str  # inject this long after the line of this stage (the next stage is the one hit)
    delay_s: float
    inject: Callable
    exit_code: int
    failed_stage: Optional[str]  # what the manifest names (None: nothing failed)
    cause: str  # regex the manifest's error (or, passing, the output) must match
    interrupted: bool = False
    guest_fault: str = "-"
    sets: tuple = ()


DOM0_READY_TIMEOUT = 120
FAULTS = (
    Fault("qemu-sigkill", "load_guest", 8, _kill_qemu, 2, "measure", r"QEMU exited during the stage \(killed by SIGKILL\)"),
    Fault("sigint-boot", "iommu", 5, _signal(signal.SIGINT), 2, "dom0_ready", r"interrupted \(SIGINT\)",
          interrupted=True),
    Fault("sigint-measure", "load_guest", 8, _signal(signal.SIGINT), 2, "measure", r"interrupted \(SIGINT\)",
          interrupted=True, sets=("measurement.bursts=200",)),
    Fault("sigint-twice", "load_guest", 8, _signal(signal.SIGINT, signal.SIGINT), 2, "measure",
          r"interrupted \(SIGINT\)", interrupted=True, sets=("measurement.bursts=200",)),
    Fault("sigterm-measure", "load_guest", 8, _sigterm_then_ci_kill, 2, "measure", r"interrupted \(SIGTERM\)",
          interrupted=True, sets=("measurement.bursts=200",)),
    Fault("qmp-stop-past-timeout", "iommu", 2, _pause(DOM0_READY_TIMEOUT + 20), 2, "dom0_ready",
          rf"within {DOM0_READY_TIMEOUT} s", sets=(f"timeouts.dom0_ready={DOM0_READY_TIMEOUT}",)),
    Fault("qmp-stop-then-cont", "iommu", 2, _pause(60), 0, None, r"exit code: 0"),
    Fault("link-drop-mid-burst", "load_guest", 12, _link_drop(3), 0, None, r"exit code: 0",
          sets=("measurement.bursts=200",)),
    Fault("rt-guest-panic", "load_guest", 0, _nothing, 2, "measure",
          r"`rtagent stop` gave no /\^RTAGENT-STOPPED/ within \d+ s", guest_fault="rt-guest-panic"),
    Fault("dom0-agent-killed", "load_guest", 0, _nothing, 2, "measure", r"agent|guest-exec|closed|Connection",
          guest_fault="dom0-agent-killed"),
)


def _ports(i):
    return BASE_PORT + 20 * i, BASE_PORT + 20 * i + 10


def _work_dir(argv):
    sock = next((a for a in argv if "qmp.sock" in a), "")
    m = re.search(r"path=(/tmp/testbed-[^/,]+)/", sock)
    return Path(m.group(1)) if m else None


def _udp_port_free(port):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def assert_nothing_left(case):
    """No QEMU, no work folder (sockets), no bound port, no .partial folder after the run."""
    if case.qemu_pid is not None:
        stat = Path(f"/proc/{case.qemu_pid}/stat")
        assert not stat.exists() or ") Z " in stat.read_text(), f"QEMU {case.qemu_pid} still runs"
        work = _work_dir(case.qemu_argv)
        assert work is not None and not work.exists(), f"work folder {work} left behind"
    for port in case.ports:
        assert _udp_port_free(port) and _udp_port_free(port + 1), f"UDP port {port} still bound"
    assert case.partials() == [], case.partials()


def _check_bundle(case, fault, code):
    assert code == fault.exit_code, f"exit {code}, expected {fault.exit_code}:\n{case.output()}"
    bundles = case.bundles()
    assert len(bundles) == 1, bundles
    b = bundles[0]
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["failed_stage"] == fault.failed_stage, (manifest["failed_stage"], manifest.get("error"))
    assert manifest["interrupted"] == fault.interrupted
    assert re.search(fault.cause, manifest.get("error") or case.output()), (manifest.get("error"), case.output())
    junit = (b / "junit.xml").read_text()
    if fault.failed_stage:
        assert re.search(rf'name="stage\.{fault.failed_stage}"[^>]*>\s*<failure', junit), junit[:2000]
    assert (b / "logs" / "console.log").stat().st_size > 0, "the console up to the fault was not kept"
    assert (b / "stages.txt").exists() and (b / "report.html").exists()
    if fault.failed_stage == "measure":  # what the measurement had recorded is kept, and marked so
        raw = manifest["raw_records"]
        assert raw["complete"] is False and raw["files"], raw
        assert all((b / "raw" / f).exists() for f in raw["files"]), raw
    return b, manifest


@pytest.fixture
def results(request):
    """This case's results folder, kept after the session."""
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")
    folder = FAULT_RESULTS / name
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault, results):
    case = Case(results, _ports(FAULTS.index(fault)), fault.guest_fault, fault.sets).start()
    case.wait_stage(fault.after)
    time.sleep(fault.delay_s)
    fault.inject(case)
    code = case.wait()
    print(case.output())
    b, manifest = _check_bundle(case, fault, code)
    assert_nothing_left(case)
    if fault.name == "sigterm-measure":
        whole = case.bundle_whole_after_s
        print(f"SIGTERM: bundle whole {whole} s after the signal; run ended {manifest['duration_s']} s in")
        assert whole is not None and whole < CI_KILL_AFTER_S, whole
    if fault.name == "sigint-twice":
        assert "already stopping" in "\n".join(case.lines)
    if fault.name.startswith("qmp-stop"):
        print(f"{fault.name}: resumed = {case.resumed}")
        assert (case.resumed is True) == (fault.exit_code == 0), case.resumed
    if fault.name == "qemu-sigkill":
        assert manifest["machine_exit"]["how"] == "exited", manifest["machine_exit"]


def test_a_full_results_folder_refuses_before_booting(results):
    full = results / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        with open(full / "filler", "wb") as f:
            try:
                f.write(b"\0" * (2 << 20))
            except OSError:
                pass
        case = Case(full, _ports(len(FAULTS))).start()
        t0 = time.monotonic()
        code = case.wait(60)
        seconds = time.monotonic() - t0
        out = "\n".join(case.lines)
        assert code == 2, out
        assert re.search(r"results folder .*full: \d+\.\d MB free, a run needs \d+ MB", out), out
        assert "Traceback" not in out and case.qemu_pid is None and seconds < 20, (seconds, out)
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no half-written bundle
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_a_second_run_on_the_same_ports_refuses_at_once_and_the_first_passes(results):
    first = Case(results / "first", _ports(len(FAULTS) + 1)).start()
    try:
        first.wait_stage("qemu_up")
        second = Case(results / "second", first.ports).start()
        t0 = time.monotonic()
        code = second.wait(60)
        refused_in = time.monotonic() - t0
        out = "\n".join(second.lines)
        assert code == 2 and refused_in < 30, (code, refused_in, out)
        manifest = json.loads((second.bundles()[0] / "manifest.json").read_text())
        assert manifest["failed_stage"] == "ports", manifest
        assert re.search(r"UDP port \d+ is claimed by run soak-stock-\S+ .*\(pid \d+\)", manifest["error"]), manifest
        assert second.qemu_pid is None  # it never started a QEMU that could take the first run's frames
        print(f"second run refused in {refused_in:.1f} s: {manifest['error'].splitlines()[0]}")
    finally:
        code = first.wait()  # the first run is never left running, whatever failed above
    assert code == 0, first.output()
    assert_nothing_left(first)


def test_the_next_run_on_this_host_passes(results):
    """After every fault above: a clean run on the first row's ports passes and leaves nothing."""
    case = Case(results, _ports(0)).start()
    code = case.wait()
    assert code == 0, case.output()
    assert_nothing_left(case)
