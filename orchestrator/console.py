"""Stage 5a: the serial console (Xen + dom0) over QEMU's unix socket, with pexpect.

Only the boot stages read it; commands go to dom0 through the guest agent
(`agent.py`), because typing into Xen's emulated serial drops characters.
QEMU's chardev `logfile=` keeps the complete console log independently.
"""

import socket
import threading
from collections import deque
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from .deadline import Deadline


class ConsoleTimeout(Exception):
    pass


class SerialConsole:
    def __init__(self, socket_path, log_path):
        self.socket_path = str(socket_path)
        self.log_path = Path(log_path)
        self.sock = None
        self.child = None
        self._drain = None  # the drain thread, joined by close()
        self._stop = threading.Event()

    def connect(self, timeout=10):
        last = None
        for _ in Deadline(timeout).poll(0.1):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                self.sock = sock
                break
            except OSError as exc:
                sock.close()
                last = exc
        else:
            raise ConsoleTimeout(f"cannot connect to the serial console {self.socket_path} within {timeout} s: {last}")
        self.child = pexpect.fdpexpect.fdspawn(self.sock.fileno(), encoding="utf-8", codec_errors="replace",
                                               maxread=65536, searchwindowsize=1 << 16)
        return self

    def expect(self, patterns, timeout):
        """Wait for one of `patterns` (regexes); -> (index, matched text)."""
        try:
            index = self.child.expect(list(patterns), timeout=timeout)
        except pexpect.TIMEOUT:
            raise ConsoleTimeout(f"none of {list(patterns)} within {timeout} s") from None
        except pexpect.EOF:
            raise ConsoleTimeout(f"console closed while waiting for {list(patterns)}") from None
        return index, self.child.match.group(0)

    def drain(self):
        """Keep reading in the background once no stage waits on the console: an unread
        socket would fill up and stall the emulated UART (the logfile keeps every byte)."""
        child, stop = self.child, self._stop

        def loop():
            while not stop.is_set():
                try:
                    child.read_nonblocking(65536, timeout=0.2)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    return
        self._drain = threading.Thread(target=loop, name="console-drain", daemon=True)
        self._drain.start()

    def sendline(self, text):
        self.child.sendline(text)

    def text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, n=50):
        if not self.log_path.exists():
            return []
        # Serial lines end in "\r\r\n" here (dom0 -> hvc -> Xen -> UART): split on "\n" only.
        with open(self.log_path, "rb") as f:
            return [line.rstrip(b"\r\n").decode(errors="replace") for line in deque(f, maxlen=n)]

    def close(self):
        """Stop and join the drain thread, then close the socket (idempotent)."""
        self._stop.set()
        if self._drain is not None:
            self._drain.join(timeout=5)
            self._drain = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
