"""Stage 7: the result bundle `results/<scenario>-<UTC>/` and its .tar.gz.

The bundle is written under a hidden `.partial` name and renamed when
complete, so a folder without the dot is always whole; a failed run is still
finished (logs, stages, manifest with the failed stage) and renamed. Every finished bundle has
its report.html; a report that cannot be built is logged in logs/, never a reason to lose a bundle.
"""

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

from . import report_html
from .errors import ResultsFolderError
from .machine import qemu_version

ROOT = Path(__file__).resolve().parent.parent


def utc_stamp():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


# The part of summary.json a manifest repeats (a run's and a reanalysis's alike).
SUMMARY_IN_MANIFEST = ("timing", "calibration", "paired", "unpaired_pct", "latency_ticks", "latency_ns", "paths",
                       "absorbed")

# A floor for a run's bundle and its tarball, with room to spare: a 300-burst run's bundle is about
# 2 MB and a 4-run comparison's tarball 3.4 MB (2026-12-03), but the trace grows with bursts and load.
# A folder with less refuses before QEMU starts.
RESULTS_MIN_FREE_MB = 200


def check_results_folder(results_dir, need_mb=RESULTS_MIN_FREE_MB):
    """Refuse a results folder that cannot take a bundle, before anything is written or booted."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(results_dir)
    except OSError as exc:
        raise ResultsFolderError(f"results folder {results_dir}: {exc.strerror or exc}") from None
    if not os.access(results_dir, os.W_OK | os.X_OK):
        raise ResultsFolderError(f"results folder {results_dir}: not writable by this user")
    free_mb = st.f_bavail * st.f_frsize / 2**20
    if free_mb < need_mb:
        raise ResultsFolderError(f"results folder {results_dir}: {free_mb:.1f} MB free, a run needs {need_mb} MB "
                                 f"for its bundle and tarball (choose another with --results, or free space)")


class Bundle:
    def __init__(self, results_dir, scenario_name):
        self.results_dir = Path(results_dir)
        stamp, n = utc_stamp(), 1
        self.run_id = f"{scenario_name}-{stamp}"
        while (self.results_dir / self.run_id).exists() or (self.results_dir / f".{self.run_id}.partial").exists():
            n += 1  # two runs in one second
            self.run_id = f"{scenario_name}-{stamp}-{n}"
        self.final = self.results_dir / self.run_id
        self.dir = self.results_dir / f".{self.run_id}.partial"
        self.config = self.dir / "config"
        self.logs = self.dir / "logs"
        self.raw = self.dir / "raw"  # dom0 writes here directly (virtio-9p share)
        for d in (self.config, self.logs, self.raw):
            d.mkdir(parents=True, exist_ok=True)
        self.started = time.time()

    def write_json(self, name, data):
        """Atomic (a temporary file renamed over the old one): a run killed mid-write keeps the old file."""
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.dir / name)

    def _moved_into_place(self):
        if self.dir != self.final:
            os.replace(self.dir, self.final)
            self.dir, self.config, self.logs, self.raw = (self.final, self.final / "config", self.final / "logs",
                                                          self.final / "raw")

    def _write_report_html(self, manifest):
        """report.html (a run's report.md too) from the files finish() just wrote. A failure is logged
        in logs/report-html-error.txt instead of raised, and no stale page is left."""
        error_log = self.logs / "report-html-error.txt"
        try:
            if "scenario" in manifest:  # a run or its reanalysis: report.md is written from its files
                report_html.write(self.dir, strict=True)
            else:  # a comparison or a soak wrote its own report.md, which write() would take for a run's
                (self.dir / "report.html").write_text(report_html.build_html(self.dir))
            error_log.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - a report never costs a run its bundle
            (self.dir / "report.html").unlink(missing_ok=True)
            self.logs.mkdir(exist_ok=True)  # a comparison's bundle drops its empty logs/
            error_log.write_text(traceback.format_exc())

    def finish(self, manifest, stages, reproducer, pack=True):
        """Write manifest, stage table, reproducer and report.html; rename into place; pack the tarball
        (-> (folder, tarball or None)). It may be called again (a run interrupted by a signal
        finishes its bundle first, then again after the teardown): it then rewrites the files."""
        manifest = dict(manifest, run_id=self.run_id, finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        duration_s=round(time.time() - self.started, 1))
        self.write_json("manifest.json", manifest)
        self.write_json("stages.json", stages.as_list())
        (self.dir / "stages.txt").write_text(stages.table())
        (self.dir / "reproducer.sh").write_text(reproducer)
        (self.dir / "reproducer.sh").chmod(0o755)
        self._write_report_html(manifest)
        self._moved_into_place()
        if not pack:
            return self.final, None
        tar_path = self.results_dir / f"{self.run_id}.tar.gz"
        tmp = tar_path.with_suffix(".gz.partial")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.final, arcname=self.run_id)
        os.replace(tmp, tar_path)
        return self.final, tar_path


def host_facts():
    facts = {"hostname": platform.node(), "kernel": platform.release(), "machine": platform.machine(),
             "python": sys.version.split()[0], "cpus": os.cpu_count(), "qemu": qemu_version()}
    try:
        facts["os"] = dict(ln.split("=", 1) for ln in Path("/etc/os-release").read_text().splitlines()
                           if "=" in ln)["PRETTY_NAME"].strip('"')
    except (OSError, KeyError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()[1]
        facts["memory_kb"] = int(mem)
    except (OSError, IndexError, ValueError):
        pass
    facts["kvm_device"] = os.path.exists("/dev/kvm")
    return facts


def git_state():
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def reproducer(scenario_name, run_id, commit, sets=(), point=None):
    """A script that reruns this scenario from the same commit with the bundled scenario file
    (and the run's --set overrides; for one point of a comparison's sweep, --point)."""
    command = f"make testbed run SCENARIO={shlex.quote(scenario_name)} TESTBED_FILE=\"$BUNDLE/config/testbed.yaml\""
    if sets or point:
        command = (f"make testbed && .venv/bin/python -m orchestrator --file \"$BUNDLE/config/testbed.yaml\" run "
                   + " ".join([shlex.quote(scenario_name)] + [f"--set {shlex.quote(p)}" for p in sets]
                              + ([f"--point {shlex.quote(point)}"] if point else [])))
    return f"""#!/bin/sh
# Reproduce run {run_id}.
# Run from a clone of natsume-testbed; it checks out the commit this run used
# and reruns the same scenario from the scenario file saved in this bundle.
set -eu
BUNDLE=$(cd "$(dirname "$0")" && pwd)
REPO=${{REPO:-.}}
cd "$REPO"
git checkout {shlex.quote(commit or 'HEAD')}
{command}
# QEMU alone, with this run's rendered command line (images must be built):
#   sh "$BUNDLE/config/qemu-cmdline.sh"
"""


def copy_into(src, dst_dir, name=None):
    src = Path(src)
    if src.exists():
        shutil.copy2(src, Path(dst_dir) / (name or src.name))
