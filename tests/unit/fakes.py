"""Fakes at the QMP / console / guest-agent boundary (labgrid-style)."""

import re
from types import SimpleNamespace

from orchestrator.agent import Result
from orchestrator.console import ConsoleTimeout
from orchestrator.errors import MachineError


class FakeConsole:
    """A console whose whole output is known in advance."""

    def __init__(self, text):
        self.full = text
        self.pos = 0

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

    def text(self):
        return self.full[: self.pos]

    def tail(self, n=50):
        return self.full[: self.pos].splitlines()[-n:]

    def close(self):
        pass


class FakeMachine:
    def __init__(self, status="prelaunch", alive=True):
        self._status = status
        self._alive = alive
        self.proc = SimpleNamespace(pid=4242)
        self.events = []

    def launch(self, timeout):
        self.events.append("launch")

    def status(self):
        return self._status

    def cont(self):
        self.events.append("cont")
        self._status = "running"

    def check_alive(self):
        if not self._alive:
            raise MachineError("QEMU exited unexpectedly (exit 1)", ["qemu"], "boom")

    def shutdown(self, timeout=15):
        self.events.append("shutdown")


class FakeAgent:
    """Answers dom0 commands from a list of (regex, Result fields or callable)."""

    def __init__(self, answers):
        self.answers = answers
        self.commands = []
        self.qga = object()

    def connect(self, timeout):
        return self

    def run(self, command, timeout=60, check=False):
        self.commands.append(command)
        for pattern, answer in self.answers:
            if re.search(pattern, command):
                rc, out = answer(command) if callable(answer) else answer
                res = Result(command, rc, out, "" if rc == 0 else "error text")
                if check and rc != 0:
                    raise RuntimeError(f"dom0 command failed: {command}")
                return res
        raise AssertionError(f"unexpected dom0 command: {command}")

    def close(self):
        pass
