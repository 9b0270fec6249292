"""One boot's live parts (QEMU, the serial console, dom0's guest agent) as one session.

The parts are typed by the Protocols below; the real classes (machine.py, console.py,
agent.py) and the fakes in tests/unit/fakes.py implement them, so run() and measure()
run unchanged on either. The Session owns them through an ExitStack and tears them down
in QEMU's own order (python/qemu's QEMUMachine: close the console first, so QEMU never
blocks writing to it, then the other chardev clients, then quit QEMU), and keeps how QEMU
ended, so an abnormal shutdown is recorded as such.
"""

import contextlib
from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable


@dataclass
class MachineExit:
    """How QEMU ended: `how` is quit (over QMP, as asked), killed, exited (on its own) or never-started."""
    how: str
    detail: str

    @property
    def clean(self):
        return self.how in ("quit", "never-started")


@runtime_checkable
class MachinePart(Protocol):
    def launch(self, timeout: float): ...
    def status(self) -> str: ...
    def cont(self) -> None: ...
    def stop(self) -> None: ...
    def check_alive(self) -> None: ...
    def returncode(self) -> Optional[int]: ...
    def shutdown(self, timeout: float = 15) -> MachineExit: ...
    def device_registers(self, slot: int, registers: dict) -> dict: ...
    def flush_netfilter(self, filter_id: str) -> None: ...


@runtime_checkable
class ConsolePart(Protocol):
    def connect(self, timeout: float): ...
    def expect(self, patterns, timeout: float): ...
    def drain(self) -> None: ...
    def text(self) -> str: ...
    def tail(self, n: int = 50) -> list: ...
    def close(self) -> None: ...


@runtime_checkable
class AgentPart(Protocol):
    @property
    def connected(self) -> bool: ...
    def connect(self, timeout: float): ...
    def run(self, command: str, timeout: float = 60, check: bool = False): ...
    def close(self) -> None: ...


class Session:
    """`with Session(machine, console, agent) as session: ...`; afterwards `session.machine_exit`."""

    def __init__(self, machine: MachinePart, console: ConsolePart, agent: AgentPart):
        self.machine, self.console, self.agent = machine, console, agent
        self.machine_exit = None
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        # Callbacks run last-in first-out: QEMU quits last, the console closes first.
        self._stack.callback(self._quit_machine)
        self._stack.callback(self.agent.close)
        self._stack.callback(self.console.close)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self, timeout=15):
        """Tear down now (idempotent); -> MachineExit."""
        self._timeout = timeout
        self._stack.close()
        return self.machine_exit

    def _quit_machine(self):
        self.machine_exit = self.machine.shutdown(getattr(self, "_timeout", 15))
