"""Stage 4: the QEMU machine, after qemu's own `QEMUMachine`.

QEMU starts paused (-S) with QMP, the serial console and the guest agent on
unix sockets; we connect, then `cont`. session.Session owns the machine: on
any exit (error, timeout, Ctrl-C) QEMU is asked to quit over QMP and killed
by PID if it does not, and `shutdown` says which happened. QEMU also gets
SIGKILL if this process dies, so no QEMU is ever left behind.
"""

import contextlib
import ctypes
import fcntl
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from .deadline import Deadline
from .errors import MachineError
from .session import MachineExit

PR_SET_PDEATHSIG = 1
KVM_FAILURE_MARKERS = ("KVM internal error", "emulation failure", "KVM: entry failed")


def _die_with_parent():
    # Runs in the child before exec: if the orchestrator dies, the kernel kills QEMU.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()  # Ctrl-C in the terminal reaches us, not QEMU: we shut it down ourselves


class Machine:
    def __init__(self, argv, qmp_socket, output_log):
        self.argv = list(argv)
        self.qmp_socket = str(qmp_socket)
        self.output_log = Path(output_log)
        self.proc = None
        self.qmp = None
        self.exit = None  # MachineExit, once shut down

    # ---- lifecycle
    def launch(self, timeout=20):
        """Start QEMU paused and connect QMP; raise MachineError with argv and output on failure."""
        self.output_log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.output_log, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        except OSError as exc:
            raise MachineError(f"cannot start QEMU: {exc.strerror}", self.argv) from None
        finally:
            out.close()
        d = Deadline(timeout)
        for _ in d.poll(0.05):
            if os.path.exists(self.qmp_socket):
                break
            if self.proc.poll() is not None:
                raise MachineError(f"QEMU exited at start (exit {self.proc.returncode})", self.argv, self.output())
        else:
            self.kill()
            raise MachineError(f"QEMU's QMP socket did not appear within {timeout} s", self.argv, self.output())
        # QEMU creates the socket file (bind) a moment before it listens: a refused connection
        # right after the file appears is that gap, not a failure, until the deadline says so.
        last = None
        for _ in d.poll(0.05, max_interval=0.5, backoff=2):
            self.qmp = QEMUMonitorProtocol(self.qmp_socket)
            try:
                self.qmp.connect(negotiate=True)
                break
            except Exception as exc:  # noqa: BLE001 - refused / reset while QEMU starts up
                last = exc
                self._close_qmp()
                if self.proc.poll() is not None:
                    raise MachineError(f"QEMU exited at start (exit {self.proc.returncode}) while QMP connected",
                                       self.argv, self.output()) from None
        else:
            self.kill()
            raise MachineError(f"cannot connect to QMP within {timeout} s: {last}", self.argv, self.output())
        self.qmp.settimeout(10)
        return self

    def output(self):
        try:
            return self.output_log.read_text(errors="replace")
        except OSError:
            return ""

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def cont(self):
        self.qmp.cmd("cont")

    def stop(self):
        """Pause the vCPUs (QMP `stop`): no guest instruction runs and no virtual time passes."""
        self.qmp.cmd("stop")

    def device_registers(self, slot, registers):
        """32-bit registers of BAR 0 of the device in PCI slot `slot` (bus 0), read by QEMU itself
        (HMP `xp`), so they can be read when every guest is hung. `registers` {name: offset} is read
        in order: a read-to-clear register (e1000e ICR) goes last. -> {name: value}."""
        base = next((r["address"] for bus in self.qmp.cmd("query-pci") for dev in bus["devices"]
                     if dev["slot"] == slot for r in dev["regions"] if r.get("bar") == 0), None)
        if base is None:
            raise MachineError(f"no device with a BAR 0 in PCI slot {slot:#x}", self.argv, "")
        values = {}
        for name, offset in registers.items():
            text = self.qmp.cmd("human-monitor-command", **{"command-line": f"xp /1wx {base + offset:#x}"})
            values[name] = int(text.split(":")[1].split()[0], 16)  # "00000000febc00d0: 0x0000009d"
        return values

    def flush_netfilter(self, filter_id):
        """Let a filter-buffer's frames through now: switching it off flushes it (QEMU's
        filter_buffer_status_changed), switching it on again buffers what comes next."""
        for status in ("off", "on"):
            self.qmp.cmd("qom-set", path=f"/objects/{filter_id}", property="status", value=status)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def returncode(self):
        """QEMU's exit status once it ended (negative: the signal that killed it); None before."""
        return None if self.proc is None else self.proc.poll()

    def check_alive(self):
        """Raise if QEMU died or the vCPUs stopped on an internal (e.g. KVM) error."""
        if not self.alive():
            code = None if self.proc is None else self.proc.returncode
            raise MachineError(f"QEMU exited unexpectedly (exit {code})", self.argv, self.output())
        text = self.output()
        if any(m in text for m in KVM_FAILURE_MARKERS):
            raise MachineError("the accelerator stopped the guest (internal error)", self.argv, text)

    def shutdown(self, timeout=15):
        """Ask QEMU to quit over QMP; kill it by PID if that fails or it does not exit in time.
        -> MachineExit saying which of these happened (idempotent: later calls repeat the first answer)."""
        if self.proc is None:
            return MachineExit("never-started", "QEMU was not started")
        if self.exit is not None:
            return self.exit
        if not self.alive():
            self.exit = MachineExit("exited", f"QEMU had exited on its own (exit {self.proc.returncode})")
        else:
            asked = "QEMU quit over QMP"
            try:
                if self.qmp is None:
                    raise MachineError("no QMP connection")
                self.qmp.cmd("quit")
            except Exception as exc:  # noqa: BLE001 - QMP gone: QEMU must still end
                asked = None
                self.kill()
                self.exit = MachineExit("killed", f"QMP quit failed ({exc}); QEMU killed (SIGKILL)")
            if asked:
                try:
                    self.proc.wait(timeout=timeout)
                    self.exit = MachineExit("quit", asked)
                except subprocess.TimeoutExpired:
                    self.kill()
                    self.exit = MachineExit("killed", f"QEMU did not exit within {timeout} s of QMP quit; killed")
        self._close_qmp()
        return self.exit

    def _close_qmp(self):
        if self.qmp is not None:
            try:
                self.qmp.close()
            except Exception:  # noqa: BLE001
                pass
            self.qmp = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


LOCK_DIR = Path(os.environ.get("TESTBED_LOCK_DIR", "/tmp"))


@contextlib.contextmanager
def claim_udp_ports(ports, holder):
    """Hold a lock file per UDP port (port and port+1 of each socket netdev) while the block runs.
    A second testbed run on the same ports refuses at once and names the holder; QEMU's
    SO_REUSEADDR would otherwise let it start and steal this run's frames. The lock ends with
    the process, so a killed run never leaves a stale claim."""
    with contextlib.ExitStack() as held:
        for port in sorted({p + d for p in ports for d in (0, 1)}):
            f = held.enter_context(open(LOCK_DIR / f"testbed-udp-{port}.lock", "a+"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                other = f.read().strip() or "another testbed run"
                raise MachineError(f"UDP port {port} is claimed by {other}. Two runs on one port would receive "
                                   "each other's frames: wait for that run, or give this scenario other "
                                   "nics.*.udp_port values.") from None
            f.seek(0)
            f.truncate()
            f.write(f"{holder} (pid {os.getpid()})\n")
            f.flush()
        check_udp_ports_free(ports)  # a process that is not a testbed run may hold one
        yield


def check_udp_ports_free(ports):
    """QEMU binds its socket netdevs with SO_REUSEADDR, so a second QEMU on the same port
    starts fine and silently steals the other's frames. Binding without it finds such a port."""
    import socket
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    if taken:
        raise MachineError(f"UDP port(s) {', '.join(map(str, taken))} on 127.0.0.1 are in use (another testbed "
                           "run?): its NICs would receive this run's frames. Wait for it, or give this scenario "
                           "other nics.*.udp_port values.")


# ---------------------------------------------------------------- accelerator choice


def qemu_version(binary="qemu-system-x86_64"):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[0].strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def kvm_usable():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def host_fingerprint(extra=()):
    """QEMU, the host kernel and CPU, and `extra` (the images' cache keys): a verdict holds for these only."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return " | ".join([qemu_version(), platform.release(), model, *extra])


class KvmVerdicts:
    """Whether KVM really boots Xen on this host, remembered per QEMU, host kernel, CPU and images:
    a new QEMU, kernel or image build probes again."""

    def __init__(self, path, images_key=()):
        self.path = Path(path)
        self.key = host_fingerprint(tuple(images_key))

    def _all(self):
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self):
        return self._all().get(self.key)

    def put(self, works, why, evidence=None):
        data = self._all()
        data[self.key] = {"works": works, "why": why, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          **(evidence or {})}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=2))

    def forget(self):
        data = self._all()
        if data.pop(self.key, None) is not None:
            self.path.write_text(json.dumps(data, indent=2))


def choose_accel(requested, verdicts, timing="host"):
    """-> (accel, notice). accel is 'tcg', 'kvm' or 'probe' (auto with no verdict yet)."""
    if timing == "instructions":  # the scenario check refuses kvm with it; auto means TCG
        return "tcg", "TCG: instruction-count timing (-icount shift=0) needs single-threaded TCG"
    if requested == "tcg":
        return "tcg", "TCG (as the scenario asks)"
    if requested == "kvm":
        if not kvm_usable():
            raise MachineError("the scenario asks for accel: kvm but /dev/kvm is not usable here")
        return "kvm", "KVM (as the scenario asks)"
    if not kvm_usable():
        return "tcg", "TCG: /dev/kvm is not usable on this host"
    verdict = verdicts.get()
    if verdict is None:
        return "probe", "probing whether KVM boots Xen on this host"
    if verdict["works"]:
        return "kvm", "KVM: it booted Xen on this host before"
    return "tcg", f"TCG: KVM does not boot Xen on this host ({verdict['why']}; probed {verdict['when']})"
