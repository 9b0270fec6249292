#!/usr/bin/env python3
"""Benchmark (not a test) of the measurement: run time, paired samples per minute of
run time, and the probes' own cost: the same scenario with stamping off and on, compared
by the frames the RT guest absorbed (same traffic sent both times).

Usage: .venv/bin/python tests/bench_measure.py [--scenario iso-stock] [--file testbed.yaml]
Emulated (TCG) numbers: compare runs of one invocation on one machine only.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import run, scenario  # noqa: E402


def one(file, s, label):
    t0 = time.monotonic()
    outcome = run.run(file, s, ROOT / "results", lambda text: None)
    seconds = time.monotonic() - t0
    summary_path = outcome.bundle / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    print(f"{label:<13} exit {outcome.code}  {seconds:6.1f} s  {outcome.bundle}")
    return {"label": label, "seconds": seconds, "code": outcome.code, "summary": summary}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(ROOT / "testbed.yaml"))
    ap.add_argument("--scenario", default="iso-stock")
    ap.add_argument("--bursts", type=int, help="override the scenario's burst count (shorter runs)")
    args = ap.parse_args()
    on = scenario.load(args.file, args.scenario)
    if args.bursts:
        on = dataclasses.replace(on, measurement=dataclasses.replace(on.measurement, bursts=args.bursts))
    off = dataclasses.replace(on, measurement=dataclasses.replace(on.measurement, stamping=False))
    runs = [one(args.file, off, "stamping off"), one(args.file, on, "stamping on")]
    stamped = runs[1]
    paired = stamped["summary"].get("paired", 0)
    print(f"\n== benchmark: measurement ({args.scenario}, emulated time) ==")
    print(f"run time (stamping on):      {stamped['seconds']:.1f} s")
    print(f"paired samples:              {paired}")
    print(f"paired samples per minute:   {paired / (stamped['seconds'] / 60):.0f}")
    for key in ("rt_guest_rx", "load_guest_rx"):
        a_off = runs[0]["summary"].get("absorbed", {}).get(key)
        a_on = stamped["summary"].get("absorbed", {}).get(key)
        if a_off and a_on is not None:
            print(f"{key:<28} off {a_off}, on {a_on}: probe cost {100 * (a_off - a_on) / a_off:+.1f} %")
    return max(r["code"] for r in runs)


if __name__ == "__main__":
    sys.exit(main())
