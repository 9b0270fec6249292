"""`testbed soak`: boot each variant N times with a short measurement; report how often a run
hangs or fails, per variant, with a 95 % interval.

Each run is a real `testbed run` in its own process (its own bundle under the soak bundle's
runs/), interleaved over the variants (A B C A B C ...) so that a slow spell of the host is
shared. Each worker runs on its own UDP ports (--set), so a soak never meets a normal run on the
scenario's own ports, and `--jobs 2` boots two runs at once.

A run is classified from its manifest and its failure diagnostics (diagnose.py):
- passed / measurement failed (exit 0 / 1);
- hang: an infrastructure failure after the RT guest was started whose guest then did not answer
  its console (logs/rt-guest-interrupts.txt "not collected"): the hang the soak looks for;
- failed: any other infrastructure failure;
- interrupted: the soak itself was stopped during that run.
"""

import json
import math
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from . import bundle
from .errors import EXIT_INFRA, EXIT_MEASUREMENT_FAILED, EXIT_OK
from .stages import StageResult, StageRunner

DEFAULT_SCENARIOS = ("soak-stock", "soak-natsume", "soak-natsume-no-preempt")
KINDS = ("passed", "measurement failed", "hang", "failed", "interrupted")
AFTER_RT_GUEST_START = ("rt_guest", "load_guest", "measure", "evaluate", "collect", "shutdown")
PORT_STEP = 200  # worker w (from 0) runs on the scenario's ports + PORT_STEP * (w + 1)
Z95 = 1.959964


@dataclass
class SoakRun:
    index: int
    scenario: str
    worker: int
    exit_code: int = None
    kind: str = None
    failed_stage: str = None
    error: str = None
    bundle: str = None
    seconds: float = 0.0


def wilson(k, n, z=Z95):
    """Wilson score interval of a rate k/n (sound for small n and for k = 0); -> (low, high)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def classify(code, bundle_dir):
    """-> (kind, failed stage, first line of the error) from a run's exit code and bundle."""
    manifest = _json(bundle_dir / "manifest.json") if bundle_dir else {}
    stage, error = manifest.get("failed_stage"), (manifest.get("error") or "").strip().splitlines()
    error = error[0][:300] if error else None
    if manifest.get("interrupted"):
        return "interrupted", stage, error
    if code == EXIT_OK:
        return "passed", None, None
    if code == EXIT_MEASUREMENT_FAILED:
        return "measurement failed", None, ", ".join(manifest.get("failed_checks") or [])
    if stage in AFTER_RT_GUEST_START and _rt_guest_silent(bundle_dir):
        return "hang", stage, error
    return "failed", stage, error


def _rt_guest_silent(bundle_dir):
    text = _read(bundle_dir / "logs" / "rt-guest-interrupts.txt")
    return text.startswith("[not collected") and "no dom0 agent" not in text


def plan(scenarios, runs):
    """Interleaved: every scenario's first run, then every second run, ..."""
    return [(i * len(scenarios) + j, name) for i in range(runs) for j, name in enumerate(scenarios)]


def run_one(cmd_prefix, item, worker, runs_dir, logs_dir, ports, procs):
    index, name = item
    r = SoakRun(index, name, worker)
    sets = [f"nics.measured.udp_port={ports[name][0] + PORT_STEP * (worker + 1)}",
            f"nics.load.udp_port={ports[name][1] + PORT_STEP * (worker + 1)}"]
    results = runs_dir / f"{index:03d}"  # the run's bundle is the one folder in it
    argv = cmd_prefix + ["run", name, "--results", str(results)] + [a for s in sets for a in ("--set", s)]
    t0 = time.monotonic()
    with open(logs_dir / f"run-{index:03d}-{name}.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.add(proc)
        r.exit_code = proc.wait()
        procs.discard(proc)
    r.seconds = round(time.monotonic() - t0, 1)
    found = next((d for d in sorted(results.glob("*")) if (d / "manifest.json").exists()), None)
    r.bundle = str(found.relative_to(runs_dir.parent)) if found else None
    r.kind, r.failed_stage, r.error = classify(r.exit_code, found)
    return r


def rates(runs, scenarios):
    """-> {scenario: {counts per kind, runs, hang and failure rates with 95 % Wilson intervals}}."""
    table = {}
    for name in scenarios:
        mine = [r for r in runs if r.scenario == name and r.kind != "interrupted"]
        counts = {k: sum(r.kind == k for r in mine) for k in KINDS if k != "interrupted"}
        n = len(mine)
        bad = n - counts["passed"]
        table[name] = {"runs": n, **counts,
                       "hang_rate": counts["hang"] / n if n else None, "hang_ci95": wilson(counts["hang"], n),
                       "failure_rate": bad / n if n else None, "failure_ci95": wilson(bad, n)}
    return table


def report_md(runs, table, meta):
    lines = [f"# Soak {meta['name']}", "", f"{meta['status']}. {len(runs)} runs of {meta['planned']} planned, "
             f"{meta['jobs']} at a time, {meta['seconds'] / 60:.0f} min. Reproduce: `{meta['command']}`.", "",
             "A hang: an infrastructure failure after the RT guest started, whose console then did not answer "
             "(its bundle's logs/ keep Xen's debug keys j e q r, the e1000e's registers and the guests' consoles). "
             "Intervals: 95 % Wilson score.", "",
             "| scenario | runs | passed | measurement failed | hang | other failure | hang rate (95 % CI) "
             "| failure rate (95 % CI) |", "|---|---|---|---|---|---|---|---|"]
    for name, t in table.items():
        lines.append(f"| {name} | {t['runs']} | {t['passed']} | {t['measurement failed']} | {t['hang']} | "
                     f"{t['failed']} | {_rate(t['hang_rate'], t['hang_ci95'])} | "
                     f"{_rate(t['failure_rate'], t['failure_ci95'])} |")
    bad = [r for r in runs if r.kind != "passed"]
    if bad:
        lines += ["", "## Runs that did not pass", "", "| run | scenario | kind | stage | error | bundle |",
                  "|---|---|---|---|---|---|"]
        for r in bad:
            lines.append(f"| {r.index} | {r.scenario} | {r.kind} | {r.failed_stage or '–'} | "
                         f"{(r.error or '').replace('|', '/')[:160]} | {r.bundle or '–'} |")
    return "\n".join(lines) + "\n"


def _rate(rate, ci):
    return "–" if rate is None else f"{rate * 100:.0f} % ({ci[0] * 100:.0f}–{ci[1] * 100:.0f} %)"


def soak(scenario_file, scenarios, ports, runs, jobs, results_dir, say, command, cmd_prefix=None):
    """Run the soak; always finishes its bundle (also when interrupted). `cmd_prefix` is the
    testbed command line before `run` (tests pass a fake). -> (exit code, bundle path, rates)."""
    bundle.check_results_folder(results_dir)
    b = bundle.Bundle(results_dir, "soak")
    runs_dir, logs_dir = b.dir / "runs", b.logs
    runs_dir.mkdir()
    bundle.copy_into(scenario_file, b.config, "testbed.yaml")
    cmd_prefix = cmd_prefix or [sys.executable, "-m", "orchestrator", "--file", str(scenario_file)]
    todo, done, procs, lock = plan(scenarios, runs), [], set(), threading.Lock()
    runner, interrupted = StageRunner(), False
    meta = {"name": b.run_id, "planned": len(todo), "jobs": jobs, "command": command, "scenarios": list(scenarios)}

    def worker(w):
        while True:
            with lock:
                if not todo or interrupted:
                    return
                item = todo.pop(0)
            r = run_one(cmd_prefix, item, w, runs_dir, logs_dir, ports, procs)
            with lock:
                done.append(r)
                say(f"soak run {r.index + 1}/{meta['planned']} {r.scenario}: {r.kind} ({r.seconds:.0f} s)"
                    + (f", stage {r.failed_stage}" if r.failed_stage else "") + (f": {r.error}" if r.error else ""))
                _write(b, sorted(done, key=lambda x: x.index), scenarios, dict(meta, status="running",
                                                                            seconds=time.time() - b.started))

    threads = [threading.Thread(target=worker, args=(w,), name=f"soak-{w}") for w in range(jobs)]
    for t in threads:
        t.start()
    try:
        _wait_for(threads)
    except KeyboardInterrupt:
        interrupted = True
        say("soak interrupted: stopping the runs in progress (each finishes its bundle)")
        for p in list(procs):
            p.send_signal(signal.SIGTERM)
        _wait_for(threads)
    done.sort(key=lambda x: x.index)
    table = rates(done, scenarios)
    status = "Interrupted" if interrupted else "Finished"
    _write(b, done, scenarios, dict(meta, status=status, seconds=time.time() - b.started))
    code = EXIT_INFRA if interrupted or not done else (
        EXIT_OK if all(r.kind == "passed" for r in done) else EXIT_MEASUREMENT_FAILED)
    for r in done:  # the stage table of a soak: one row per run
        runner.results.append(StageResult(f"run-{r.index:03d}", "passed" if r.kind == "passed" else "failed",
                                          r.seconds, f"{r.scenario}: {r.kind}"
                                          + (f" at {r.failed_stage}" if r.failed_stage else ""),
                                          waits_for=f"a testbed run of {r.scenario}, classified"))
    manifest = {"kind": "soak", "status": status.lower(), "exit_code": code, "interrupted": interrupted,
                "scenario_file": str(scenario_file), "soak": dict(meta, rates=table),
                "host": bundle.host_facts(), "git": bundle.git_state()}
    final, _ = b.finish(manifest, runner, _reproducer(command, b.run_id), pack=False)
    return code, final, table


def _wait_for(threads):
    # Not Thread.join(): a KeyboardInterrupt inside join() can leave a live thread reported as
    # ended (CPython gh-90882), and the soak would finish its bundle under a run still writing.
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)


def _write(b, done, scenarios, meta):
    table = rates(done, scenarios)
    b.write_json("soak.json", {**meta, "rates": table, "runs": [asdict(r) for r in done]})
    (b.dir / "report.md").write_text(report_md(done, table, meta))


def _reproducer(command, run_id):
    return f"#!/bin/sh\n# Reproduce soak {run_id} (from a clone of natsume-testbed at the commit in manifest.json).\n" \
           f"set -eu\n{command}\n"


def _json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read(path):
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
