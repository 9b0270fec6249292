"""The stage table's machinery: a Stage row, and the runner that plays a table in order.

A table (run.STAGES) is the single source of the order, the optional stages (`when`), what
each waits for, its timeout (a field of `timeouts:`), what runs after a failure, and so of
stages.json, stages.txt, JUnit and the manifest. A stage that raises becomes a StageError
naming the stage and carrying the last console lines; later stages are marked skipped.
"""

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from .errors import StageError


MAX_MESSAGE = 8000  # characters of a failed stage's error kept in stages.json and JUnit


def always(_s):
    return True


@dataclass(frozen=True)
class Stage:
    name: str
    waits_for: str  # what the stage waits for, in words (shown with its result and in JUnit)
    timeout: Optional[str]  # the `timeouts:` field that bounds it; None: its steps bound themselves
    func: Callable  # func(ctx, timeout_s) -> a short detail line; raise to fail, SkipStage to skip
    when: Callable = always  # when(scenario) -> bool: is the stage part of this scenario's plan
    after_failure: bool = False  # also runs (best effort) after an earlier stage failed

    def timeout_of(self, s):
        return None if self.timeout is None else getattr(s.timeouts, self.timeout)


class SkipStage(Exception):
    """Raised by a stage that has nothing to do; its message says why."""


def plan(table, s, first=None, last=None):
    """The rows of `table` this scenario runs, optionally from `first` to `last` (inclusive)."""
    names = [st.name for st in table]
    lo = names.index(first) if first else 0
    hi = names.index(last) + 1 if last else len(table)
    return [st for st in table[lo:hi] if st.when(s)]


@dataclass
class StageResult:
    name: str
    status: str  # passed | failed | skipped
    seconds: float
    detail: str = ""
    waits_for: str = ""
    timeout_s: Optional[int] = field(default=None)
    message: str = ""  # a failed stage's whole error (detail is its first line)


class StageRunner:
    def __init__(self, tail=lambda: [], report=None):
        self.tail = tail  # -> last console lines, for failure messages
        self.report = report or (lambda result: None)
        self.results = []
        self.started = time.monotonic()

    def run(self, stages, ctx, s, error=None):
        """Play the planned `stages` in order with `ctx`; -> the first StageError, or None.
        After a failure (`error`: one before these stages) only `after_failure` stages run;
        Ctrl-C (KeyboardInterrupt) propagates."""
        for st in stages:
            if error is not None and not st.after_failure:
                continue
            timeout = st.timeout_of(s)
            try:
                with self.stage(st.name, st.waits_for, timeout) as res:
                    res.detail = st.func(ctx, timeout) or ""
            except StageError as exc:
                error = error or exc
        self.skip_rest(stages)
        return error

    @contextmanager
    def stage(self, name, waits_for="", timeout=None):
        """`with runner.stage('xen_banner') as st: ...; st.detail = '...'`"""
        t0 = time.monotonic()
        result = StageResult(name, "passed", 0.0, waits_for=waits_for, timeout_s=timeout)
        try:
            yield result
        except SkipStage as exc:
            result.status, result.detail = "skipped", str(exc)
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is attributed to its stage
            result.status, result.detail = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.message = str(exc)[:MAX_MESSAGE]
            self._record(result, t0)
            raise StageError(name, str(exc) or type(exc).__name__, self.tail()) from exc
        except BaseException:  # Ctrl-C: record it, then let it go on
            result.status, result.detail = "failed", "interrupted"
            self._record(result, t0)
            raise
        self._record(result, t0)

    def _record(self, result, t0):
        result.seconds = time.monotonic() - t0
        self.results.append(result)
        self.report(result)

    def skip_rest(self, stages):
        """Mark every planned stage that did not run as skipped (Stage rows or names)."""
        done = {r.name for r in self.results}
        for st in stages:
            name = getattr(st, "name", st)
            if name not in done:
                self.results.append(StageResult(name, "skipped", 0.0, waits_for=getattr(st, "waits_for", "")))

    @property
    def passed(self):
        return bool(self.results) and all(r.status == "passed" for r in self.results)

    def failed_stage(self):
        return next((r.name for r in self.results if r.status == "failed"), None)

    def as_list(self):
        return [asdict(r) for r in self.results]

    def table(self):
        lines = [f"{'stage':<14} {'status':<8} {'seconds':>8}  detail", "-" * 60]
        for r in self.results:
            lines.append(f"{r.name:<14} {r.status:<8} {r.seconds:>8.1f}  {r.detail}")
        lines.append(f"{'total':<14} {'':<8} {sum(r.seconds for r in self.results):>8.1f}")
        return "\n".join(lines) + "\n"
