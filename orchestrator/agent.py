"""Stage 5b: commands in dom0 through qemu-guest-agent on a virtio-serial port.

Spoken with qemu.qmp (QGA is QMP without greeting or negotiation). Each
command is `guest-exec` of `/bin/sh -c`, polled with `guest-exec-status`.
"""

import base64
import random
from dataclasses import dataclass

from qemu.qmp import ExecInterruptedError, StateError
from qemu.qmp.legacy import QEMUMonitorProtocol

from .deadline import Deadline


class AgentError(Exception):
    pass


@dataclass
class Result:
    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self):
        return self.rc == 0


class GuestAgent:
    def __init__(self, socket_path):
        self.socket_path = str(socket_path)
        self.qga = None
        self.answered = False  # dom0's agent answered once: collecting its logs is worth a try
        self.lost = None  # why the agent is gone, once a call found it so

    @property
    def connected(self):
        return self.qga is not None and self.answered

    def connect(self, timeout):
        """Connect and synchronise; the agent in dom0 may not be listening yet, so retry."""
        last = None
        for _ in Deadline(timeout).poll(1.0):
            try:
                self._open()
                token = random.randint(1, 2**31)
                self.qga.settimeout(3)
                if self.qga.cmd("guest-sync", id=token) == token:
                    self.qga.settimeout(30)
                    self.answered = True
                    return self
            except Exception as exc:  # noqa: BLE001 - any failure here means "not ready yet"
                last = exc
            self.close()
        raise AgentError(f"dom0's guest agent did not answer within {timeout} s (last error: {last})")

    def _open(self):
        self.close()
        self.qga = QEMUMonitorProtocol(self.socket_path)
        self.qga.connect(negotiate=False)

    def run(self, command, timeout=60, check=False):
        """Run a shell command in dom0; -> Result. Raises AgentError on timeout."""
        if self.qga is None:
            raise AgentError(self.lost or f"dom0's guest agent is not connected: {command}")
        pid = self._cmd(command, "guest-exec", path="/bin/sh", arg=["-c", command], **{"capture-output": True})["pid"]
        for _ in Deadline(timeout).poll(0.05, max_interval=1.0, backoff=2):
            status = self._cmd(command, "guest-exec-status", pid=pid)
            if status.get("exited"):
                break
        else:
            raise AgentError(f"dom0 command did not finish within {timeout:.3g} s: {command}")
        result = Result(command, status.get("exitcode", -1), _decode(status.get("out-data")),
                        _decode(status.get("err-data")))
        if check and not result.ok:
            raise AgentError(f"dom0 command failed (exit {result.rc}): {command}\n{result.stdout}{result.stderr}")
        return result

    def _cmd(self, command, name, **args):
        """One QGA call. No answer within the socket's timeout, or a closed socket, means the agent
        is gone (its process killed, dom0 hung): the connection is dropped, so every later call
        fails at once with the same reason instead of waiting out its own timeout."""
        try:
            return self.qga.cmd(name, **args)
        except (OSError, EOFError, StateError, ExecInterruptedError) as exc:  # a timeout is an OSError
            self.lost = f"dom0's guest agent stopped answering ({type(exc).__name__}: {str(exc) or 'no reply'}) at: {command}"
            self.close()
            raise AgentError(self.lost) from None

    def close(self):
        if self.qga is not None:
            try:
                self.qga.close()
            except Exception:  # noqa: BLE001
                pass
            self.qga = None


def _decode(data):
    return base64.b64decode(data).decode(errors="replace") if data else ""
