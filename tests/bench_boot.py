#!/usr/bin/env python3
"""Benchmark (not a test): time a cold and a warm `make testbed run` and each stage.

  cold: an empty image cache (TESTBED_CACHE points at a fresh folder): every image is built
  warm: the project's image cache, already filled

  host: the warm run again with host timing (--host-scenario, default boot-stock-host): what
        instruction-count timing (-icount shift=0, single-threaded TCG) costs in boot time

Usage: .venv/bin/python tests/bench_boot.py [--skip-cold] [--skip-host] [--scenario NAME]
Prints the wall time of each run and the stage table of its bundle.
Emulated (TCG) boot times depend on the host; compare runs made on one machine.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def newest_bundle(after):
    bundles = [p for p in (ROOT / "results").iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.stat().st_mtime >= after]
    return max(bundles, key=lambda p: p.stat().st_mtime) if bundles else None


def timed_run(label, scenario, env):
    started = time.time()
    t0 = time.monotonic()
    cmd = ["make", "testbed", "run"] + ([f"SCENARIO={scenario}"] if scenario else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    seconds = time.monotonic() - t0
    bundle = newest_bundle(started - 1)
    stages = json.loads((bundle / "stages.json").read_text()) if bundle else []
    return {"label": label, "seconds": seconds, "exit": proc.returncode, "bundle": str(bundle), "stages": stages}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-cold", action="store_true", help="only the warm run")
    ap.add_argument("--scenario", default="boot-stock", help="default: boot-stock (boot only, instruction timing)")
    ap.add_argument("--skip-host", action="store_true", help="no host-timing run")
    ap.add_argument("--host-scenario", default="boot-stock-host")
    args = ap.parse_args()
    runs = []
    if not args.skip_cold:
        with tempfile.TemporaryDirectory(prefix="testbed-cold-cache-") as cold:
            runs.append(timed_run("cold", args.scenario, dict(os.environ, TESTBED_CACHE=cold)))
    runs.append(timed_run("warm", args.scenario, dict(os.environ)))
    if not args.skip_host:
        runs.append(timed_run("host", args.host_scenario, dict(os.environ)))
    print("\n== benchmark: make testbed run ==")
    for r in runs:
        print(f"{r['label']:<5} {r['seconds']:7.1f} s  exit {r['exit']}  {r['bundle']}")
    names = [s["name"] for s in runs[-1]["stages"]]
    print(f"\n{'stage':<12}" + "".join(f"{r['label']:>10}" for r in runs))
    for name in names:
        row = [next((s["seconds"] for s in r["stages"] if s["name"] == name), float("nan")) for r in runs]
        print(f"{name:<12}" + "".join(f"{v:10.1f}" for v in row))
    first = ("qemu_up", "xen_banner", "iommu", "dom0_ready", "toolstack")
    boots = {r["label"]: sum(s["seconds"] for s in r["stages"] if s["name"] in first) for r in runs}
    for label, seconds in boots.items():
        print(f"\nQEMU start to toolstack ready ({label}): {seconds:.1f} s")
    if "host" in boots and boots["host"]:
        print(f"instruction timing / host timing, boot to toolstack: {boots['warm'] / boots['host']:.2f}x")
    return max(r["exit"] for r in runs)


if __name__ == "__main__":
    sys.exit(main())
