"""Named stages with timings. A stage that raises becomes a StageError naming
the stage and carrying the last console lines; later stages are marked skipped."""

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .errors import StageError


@dataclass
class StageResult:
    name: str
    status: str  # passed | failed | skipped
    seconds: float
    detail: str = ""


class StageRunner:
    def __init__(self, tail=lambda: [], report=None):
        self.tail = tail  # -> last console lines, for failure messages
        self.report = report or (lambda result: None)
        self.results = []
        self.started = time.monotonic()

    @contextmanager
    def stage(self, name):
        """`with runner.stage('xen_banner') as st: ...; st.detail = '...'`"""
        t0 = time.monotonic()
        result = StageResult(name, "passed", 0.0)
        try:
            yield result
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is attributed to its stage
            result.status, result.detail = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.seconds = time.monotonic() - t0
            self.results.append(result)
            self.report(result)
            raise StageError(name, str(exc) or type(exc).__name__, self.tail()) from exc
        except BaseException:  # Ctrl-C: record it, then let it go on
            result.status, result.detail = "failed", "interrupted"
            result.seconds = time.monotonic() - t0
            self.results.append(result)
            self.report(result)
            raise
        result.seconds = time.monotonic() - t0
        self.results.append(result)
        self.report(result)

    def skip_rest(self, names):
        done = {r.name for r in self.results}
        for name in names:
            if name not in done:
                self.results.append(StageResult(name, "skipped", 0.0))

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
