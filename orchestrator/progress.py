"""Progress a person can follow: rich bars with elapsed time and ETA on a terminal (image builds,
the bursts, the dump, the runs of a comparison); plain start and end lines for CI logs (`--quiet`,
or when stdout is not a terminal).

The stages ask the current reporter for a task (`with progress.task("bursts", total=300) as
advance: ... advance()`); the CLI installs the reporter for its console once (`progress.use`).
Without one (library use, tests), tasks are silent."""

import contextlib
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn


class Silent:
    """No output: what library callers and tests get."""

    @contextlib.contextmanager
    def task(self, description, total=None, unit=None):
        yield lambda n=1: None


class Plain(Silent):
    """One line when a task starts and one when it ends, with its duration: readable in CI logs."""

    def __init__(self, console):
        self.console = console

    @contextlib.contextmanager
    def task(self, description, total=None, unit=None):
        """`unit` names what `total` counts; without one (e.g. a build's log lines, only an ETA's
        yardstick) the lines show no count."""
        t0 = time.monotonic()
        done = [0]
        counted = total is not None and unit is not None
        self.console.print(f"{description} ..." + (f" ({total} {unit})" if counted else ""), markup=False,
                           highlight=False)

        def advance(n=1):
            done[0] += n
        try:
            yield advance
        finally:
            count = f", {done[0]}/{total} {unit}" if counted else ""
            self.console.print(f"{description}: {time.monotonic() - t0:.1f} s{count}", markup=False, highlight=False)


class Live(Silent):
    """Rich bars on a terminal; lines printed on the same console meanwhile go above them."""

    def __init__(self, console):
        self.console = console
        self.bars = None
        self.depth = 0

    @contextlib.contextmanager
    def task(self, description, total=None, unit=None):
        if self.bars is None:
            self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console, transient=True)
            self.bars.start()
        self.depth += 1
        task = self.bars.add_task(description, total=total)
        try:
            yield lambda n=1: self.bars.advance(task, n)
        finally:
            self.bars.remove_task(task)
            self.depth -= 1
            if self.depth == 0:
                self.bars.stop()
                self.bars = None


_current = Silent()


def use(reporter):
    global _current
    _current = reporter


def for_console(console, quiet=False):
    """Live on a terminal, Plain otherwise or with --quiet."""
    return Live(console) if console.is_terminal and not quiet else Plain(console)


def task(description, total=None, unit=None):
    return _current.task(description, total, unit)
