"""Progress: bars on a terminal, plain start/end lines otherwise (CI logs, --quiet), silent in
library use; the bursts, image builds and comparisons report through it."""

import io
import socket

import pytest
from rich.console import Console

from orchestrator import cli, progress, traffic


def _console(terminal):
    return Console(file=io.StringIO(), force_terminal=terminal, width=100)


def test_a_terminal_gets_bars_and_a_log_or_quiet_gets_plain_lines():
    assert isinstance(progress.for_console(_console(True)), progress.Live)
    assert isinstance(progress.for_console(_console(True), quiet=True), progress.Plain)
    assert isinstance(progress.for_console(_console(False)), progress.Plain)


def test_plain_lines_say_the_start_and_the_end_with_the_count():
    console = _console(False)
    with progress.Plain(console).task("bursts", total=3, unit="bursts") as advance:
        for _ in range(3):
            advance()
    with progress.Plain(console).task("image xen-stock", total=5000):  # a build's lines: an ETA yardstick only
        pass
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "bursts ... (3 bursts)"
    assert lines[1].startswith("bursts: ") and lines[1].endswith(" s, 3/3 bursts")
    assert lines[2] == "image xen-stock ..." and lines[3].endswith(" s")


def test_live_bars_show_the_task_and_go_away_at_the_end():
    console = _console(True)
    live = progress.Live(console)
    with live.task("image xen-natsume", total=10) as advance:
        with live.task("bursts", total=4) as inner:  # nested: one display for both
            inner(4)
            assert live.depth == 2
        advance(5)
        console.print("a line printed meanwhile")
    assert live.bars is None and live.depth == 0
    text = console.file.getvalue()
    assert "image xen-natsume" in text and "a line printed meanwhile" in text


def test_without_a_reporter_tasks_are_silent(capsys):
    progress.use(progress.Silent())
    with progress.task("dump") as advance:
        advance()
    assert capsys.readouterr().out == ""


def test_send_bursts_reports_each_burst():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    done = []
    counters = traffic.send_bursts(rx.getsockname(), frames_per_burst=2, period_s=0.01, bursts=5,
                                   on_burst=lambda: done.append(1))
    rx.close()
    assert counters.bursts_completed == 5 and len(done) == 5


@pytest.mark.parametrize("command", sorted(cli.build_parser()._subparsers._group_actions[0].choices))
def test_every_commands_help_prints(command, capsys):
    """A '%' in a help text breaks argparse's --help with a traceback (it did, for soak)."""
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0 and "usage: testbed" in capsys.readouterr().out
