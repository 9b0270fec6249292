"""Fakes at the QMP / console / guest-agent boundary (labgrid-style).

Each implements the Protocol of the part it stands for (orchestrator/session.py), raises the
errors the real part raises, and nothing more; test_session.py checks that they conform.
"""

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

from orchestrator.agent import AgentError, Result
from orchestrator.console import ConsoleTimeout
from orchestrator.errors import MachineError
from orchestrator.session import MachineExit


class FakeConsole:
    """A serial console whose whole output is known in advance."""

    def __init__(self, text):
        self.full = text
        self.pos = 0
        self.events = []

    def connect(self, timeout):
        return self

    def expect(self, patterns, timeout):
        best = None
        for i, p in enumerate(patterns):
            m = re.compile(p).search(self.full, self.pos)
            if m and (best is None or m.start() < best[1].start()):
                best = (i, m)
        if best is None:
            raise ConsoleTimeout(f"none of {patterns} within {timeout} s")
        self.pos = best[1].end()
        return best[0], best[1].group(0)

    def drain(self):
        self.events.append("drain")

    def text(self):
        return self.full[: self.pos]

    def tail(self, n=50):
        return self.full[: self.pos].splitlines()[-n:]

    def close(self):
        self.events.append("close")


class FakeMachine:
    def __init__(self, status="prelaunch", alive=True, quit_works=True, events=None):
        self._status = status
        self._alive = alive
        self.quit_works = quit_works
        self.proc = SimpleNamespace(pid=4242)
        self._returncode = None  # set it to make QEMU "have ended"
        self.events = [] if events is None else events
        self.exit = None

    def launch(self, timeout):
        self.events.append("launch")

    def status(self):
        return self._status

    def cont(self):
        self.events.append("cont")
        self._status = "running"

    def stop(self):
        self.events.append("stop")
        self._status = "paused"

    def returncode(self):
        return self._returncode

    def check_alive(self):
        if not self._alive:
            raise MachineError("QEMU exited unexpectedly (exit 1)", ["qemu"], "boom")

    def device_registers(self, slot, registers):
        self.events.append(f"registers {slot:#x}")
        return {name: 0x9d for name in registers}

    def flush_netfilter(self, filter_id):
        self.events.append(f"flush {filter_id}")

    def shutdown(self, timeout=15):
        if self.exit is None:
            self.events.append("shutdown")
            self.exit = (MachineExit("quit", "QEMU quit over QMP") if self.quit_works else
                         MachineExit("killed", "QMP quit failed (broken pipe); QEMU killed (SIGKILL)"))
        return self.exit


class FakeAgent:
    """Answers dom0 commands from a list of (regex, (rc, stdout) or callable -> (rc, stdout))."""

    def __init__(self, answers):
        self.answers = answers
        self.commands = []
        self.answered = False
        self.closed = False

    @property
    def connected(self):
        return self.answered and not self.closed

    def connect(self, timeout):
        self.answered = True
        return self

    def run(self, command, timeout=60, check=False):
        self.commands.append(command)
        for pattern, answer in self.answers:
            if re.search(pattern, command):
                rc, out = answer(command) if callable(answer) else answer
                res = Result(command, rc, out, "" if rc == 0 else "error text")
                if check and rc != 0:
                    raise AgentError(f"dom0 command failed (exit {rc}): {command}\n{out}")
                return res
        raise AssertionError(f"unexpected dom0 command: {command}")

    def close(self):
        self.closed = True


class FakeDom0(FakeAgent):
    """dom0 as the measurement sees it: the RT guest's console log (typing `rtagent X` appends the
    guest's reply), xentrace, and the host share (`share_mount` in dom0 is `share_dir` here).
    `replies`: rtagent command -> the lines the guest prints; `files`: share file name -> bytes
    that dom0 copies there (the trace, when xentrace stops)."""

    def __init__(self, share_dir, share_mount, guest_log, replies, files, answers=()):
        self.share_dir, self.share_mount = Path(share_dir), share_mount
        self.log, self.replies, self.files = guest_log, replies, files
        self.xentrace_running = False
        super().__init__([
            (r"^echo ok > ", self._share_check),
            (r"^stat -c %s ", lambda c: (0, str(len(self.log.encode())))),
            (r"^printf '%s\\n' .* > ", self._type),
            (r"^tail -c \+\d+ \S+ \| grep -qE ", self._grep),
            (r"^tail -c \+\d+ \S+ > ", self._copy_out),
            (r"^tail -c \+\d+ \S+$", lambda c: (0, self._from(c))),
            (r"^setsid xentrace ", self._start_xentrace),
            (r"^kill -0 ", lambda c: (0 if self.xentrace_running else 1, "")),
            (r"^kill -INT ", self._stop_xentrace),
            (r"^cp /tmp/xentrace.bin ", self._copy_trace),
        ] + list(answers))

    def _host(self, dom0_path):
        return self.share_dir / Path(dom0_path).relative_to(self.share_mount)

    def _share_check(self, command):
        self._host(command.split("> ", 1)[1]).write_text("ok\n")
        return 0, ""

    def _type(self, command):
        line = shlex.split(command)[2]
        reply = next((text for prefix, text in self.replies.items() if line.startswith(prefix)), None)
        if reply is None:
            raise AssertionError(f"the fake RT guest has no reply to {line!r}")
        reply = reply(line) if callable(reply) else reply
        self.log += f"{line}\n{reply}"
        return 0, ""

    def _from(self, command):
        start = int(re.search(r"\+(\d+)", command).group(1)) - 1
        return self.log.encode()[start:].decode()

    def _grep(self, command):
        pattern = shlex.split(command.split("| grep -qE ", 1)[1])[0]
        return (0 if re.search(pattern, self._from(command), re.M) else 1), ""

    def _copy_out(self, command):
        self._host(shlex.split(command.split(" > ", 1)[1])[0]).write_text(self._from(command))
        return 0, ""

    def _start_xentrace(self, command):
        self.xentrace_running = True
        return 0, "777\n"

    def _stop_xentrace(self, command):
        self.xentrace_running = False
        return 0, ""

    def _copy_trace(self, command):
        dest = self._host(shlex.split(command)[2]).parent  # `cp /tmp/xentrace.bin <share folder>/xentrace.bin && ...`
        for name, data in self.files.items():
            (dest / name).write_bytes(data)
        return 0, ""
