#!/usr/bin/env python3
"""Benchmark (not a test) of a comparison's wall time and where it goes, against issue 10's targets.

Runs a comparison (default: the default one, as `make testbed run` does) or reads the bundle of one
that ran (--bundle), and prints: the wall time (target: warm <= 8 min); per run, its boot (the boot
stages, or "reused") and measure seconds and the measure steps; the dump's rate (target >= 5 MB/s);
paired samples per minute of measurement wall time (target >= 20,000, or the ceiling that sets it);
and the spread of the per-run medians.

Usage: .venv/bin/python tests/bench_comparison.py [--comparison NAME] [--bundle DIR] [--file testbed.yaml]
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import analysis, compare, run, scenario  # noqa: E402

WARM_TARGET_S, DUMP_TARGET, PAIRED_TARGET = 8 * 60, 5e6, 20_000


def runs_of(bundle):
    return sorted((p for p in (bundle / "runs").iterdir() if p.is_dir()), key=lambda p: p.name[-16:])


def report(bundle, wall):
    manifest = json.loads((bundle / "manifest.json").read_text())
    wall = wall or manifest.get("duration_s")
    print(f"comparison {manifest['comparison']}: {wall:.0f} s = {wall / 60:.1f} min (target warm <= "
          f"{WARM_TARGET_S / 60:.0f} min: {'met' if wall <= WARM_TARGET_S else 'NOT met'}); bundle {bundle}")
    total_paired, total_measure, dumps, medians = 0, 0.0, [], {}
    for folder in runs_of(bundle):
        stages = json.loads((folder / "stages.json").read_text())
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
        secs = {s["name"]: s["seconds"] for s in stages}
        boot = sum(v for k, v in secs.items() if k in run.BOOT_STAGES)
        reused = json.loads((folder / "manifest.json").read_text()).get("boot", {}).get("reused_from")
        measure = secs.get("measure", 0.0)
        paired = summary.get("paired", 0)
        total_paired, total_measure = total_paired + paired, total_measure + measure
        dump = summary.get("dump") or {}
        if dump.get("seconds"):
            dumps.append(dump)
        steps = summary.get("measure_steps_s") or {}
        print(f"  {folder.name:<44} boot {'reused' if reused else f'{boot:5.1f} s':>8}  measure {measure:5.1f} s  "
              f"paired {paired:5}  steps " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
        rows = analysis.read_samples_csv(folder / "samples.csv") if (folder / "samples.csv").exists() else []
        if rows:
            medians.setdefault(summary.get("scenario", folder.name), []).append(
                analysis.percentile(sorted(x.latency_ticks for x, _ in rows), 0.5))
    if dumps:
        rate = sum(d["bytes"] for d in dumps) / sum(d["seconds"] for d in dumps)
        channels = sorted({d.get("channel", "the console") for d in dumps})
        print(f"dump: {sum(d['bytes'] for d in dumps)} bytes in {sum(d['seconds'] for d in dumps):.1f} s = "
              f"{rate / 1e3:.0f} kB/s end to end (target >= {DUMP_TARGET / 1e6:.0f} MB/s: "
              f"{'met' if rate >= DUMP_TARGET else 'NOT met'}); through {', '.join(channels)}")
        framed = [d for d in dumps if d.get("frames_span_s")]
        if framed:
            span = sum(d["frames_span_s"] for d in framed)
            print(f"  the frames alone: {sum(d['bytes'] for d in framed)} bytes in {span:.3f} s = "
                  f"{sum(d['bytes'] for d in framed) / span / 1e6:.1f} MB/s (first to last frame at the host)")
        timed = [d for d in dumps if "read_ticks" in d]
        if timed:
            print(f"  in the RT guest: reading ftrace's text {sum(d['read_ticks'] for d in timed):,} instructions, "
                  f"sending the frames {sum(d['send_ticks'] for d in timed):,} (framesend's TSC reads)")
    if total_measure:
        per_min = total_paired / total_measure * 60
        print(f"paired samples per minute of measurement wall time: {per_min:,.0f} (target >= {PAIRED_TARGET:,}: "
              f"{'met' if per_min >= PAIRED_TARGET else 'NOT met'})")
    for name, values in medians.items():
        spread = (max(values) - min(values)) / min(values) if len(values) > 1 else 0.0
        print(f"per-run medians of {name}: {', '.join(f'{v:,.0f}' for v in values)} (spread {100 * spread:.2f} %)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comparison")
    ap.add_argument("--bundle", type=Path, help="read this comparison bundle instead of running one")
    ap.add_argument("--file", type=Path, default=ROOT / "testbed.yaml")
    args = ap.parse_args()
    if args.bundle:
        return report(args.bundle, None)
    comp = scenario.load_target(args.file, args.comparison)  # None: the default one
    t0 = time.monotonic()
    outcome = compare.run_comparison(args.file, comp, ROOT / "results", lambda text: None)
    report(outcome.bundle, time.monotonic() - t0)


if __name__ == "__main__":
    main()
