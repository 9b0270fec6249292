#!/usr/bin/env python3
"""Benchmark (not a test): wall time until a comparison's verdict is tight enough.

Runs a comparison (default: the default one, `stock-vs-natsume`) with repeats 1, 2, ... up to
--max-repeats, each time measuring one more interleaved round (A B), and stops at the first
round where every bootstrap 95 % CI of the median difference has a half-width of at most
--target (default 5 %) of the baseline median. Prints, per round, the elapsed wall time, the
verdict sentence and the half-width.

Usage: .venv/bin/python tests/bench_verdict.py [--comparison NAME] [--bursts N] [--target 0.05]
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import analysis, run, scenario, verdict  # noqa: E402


def latencies(outcome):
    path = outcome.bundle / "samples.csv"
    return [x.latency_ticks for x, _ in analysis.read_samples_csv(path)] if path.exists() else []


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(ROOT / "testbed.yaml"))
    ap.add_argument("--comparison", default=None, help="default: the file's default comparison")
    ap.add_argument("--bursts", type=int, help="override the scenarios' burst count")
    ap.add_argument("--target", type=float, default=0.05, help="CI half-width / baseline median")
    ap.add_argument("--max-repeats", type=int, default=4)
    args = ap.parse_args()
    comp = scenario.load_target(args.file, args.comparison)
    if not isinstance(comp, scenario.Comparison):
        sys.exit(f"{comp.name} is a scenario, not a comparison")
    scenarios = comp.scenarios
    if args.bursts:
        scenarios = tuple(dataclasses.replace(s, measurement=dataclasses.replace(s.measurement, bursts=args.bursts))
                          for s in scenarios)
    runs = {s.name: [] for s in scenarios}
    t0 = time.monotonic()
    base = scenarios[0].name
    for repeat in range(1, args.max_repeats + 1):
        for s in scenarios:
            outcome = run.run(args.file, s, ROOT / "results", lambda text: None)
            print(f"round {repeat}: {s.name} exit {outcome.code} at {time.monotonic() - t0:7.1f} s", flush=True)
            if outcome.code == 0:
                runs[s.name].append(latencies(outcome))
        if not runs[base] or any(not runs[s.name] for s in scenarios[1:]):
            continue
        widths = []
        for s in scenarios[1:]:
            result = verdict.bootstrap_compare(runs[base], runs[s.name], stats=("median",))
            lo, hi = result["stats"]["median"]["difference_ci"]
            half = (hi - lo) / 2 / result["stats"]["median"]["baseline"]
            widths.append(half)
            v = verdict.verdict(result, "median", baseline_name=base, other_name=s.name, unit="instructions")
            print(f"  {v.sentence}; CI half-width {100 * half:.2f} % of the baseline median")
        if max(widths) <= args.target:
            print(f"\n== benchmark: time to a verdict with CI half-width <= {100 * args.target:.0f} % of the median: "
                  f"{time.monotonic() - t0:.0f} s ({repeat} round(s) of {len(scenarios)} runs) ==")
            return 0
    print(f"\n== benchmark: no verdict within {100 * args.target:.0f} % after {args.max_repeats} rounds "
          f"({time.monotonic() - t0:.0f} s) ==")
    return 1


if __name__ == "__main__":
    sys.exit(main())
