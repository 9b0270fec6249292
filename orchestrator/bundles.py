"""Bundle tools: `testbed show`, `testbed reanalyze` and `testbed compare` on result bundles made
anywhere (this host, two CI jobs, two commits), given as a folder or as the .tar.gz as downloaded.

An archive is checked member by member before anything is extracted (no absolute path, no `..`,
no link pointing outside the bundle, no device or other special file, one top folder, bounded
size and member count), then extracted into a temporary folder that is removed afterwards.
A bundle that is damaged, foreign or of an older layout is a BundleError (exit 2) naming the file
and what is missing; no traceback.

`reanalyze` recomputes samples.csv, summary.json, the plots and the checks from the raw records
(raw/, logs/) with the code of this checkout, into a new bundle: the original is never touched.
Its manifest keeps the producer's git state (`git`) and adds `reanalysis` (this checkout's commit
and dirty flag, the inputs used, the original status and the changes).

`compare` builds the side-by-side report of compare.write_report from run bundles (a comparison
bundle contributes its runs/) into a new comparison bundle that holds copies of every run.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import time
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

from . import analysis, bundle, report, report_html, vcpucount
from .errors import EXIT_BAD_INPUT, EXIT_INFRA, EXIT_MEASUREMENT_FAILED, EXIT_OK, TestbedError

MAX_ARCHIVE_BYTES = 4 << 30  # uncompressed bytes an archive may unpack to
MAX_ARCHIVE_MEMBERS = 100_000
MAX_JSON_BYTES = 64 << 20
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # scenario.NAME_RE
FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,200}$")  # a bundle folder: <scenario>-<UTC>[-n]
COMMIT_RE = re.compile(r"^[0-9a-f]{7,64}$")
# samples.csv before instruction timing and the breakdown (commit 2a44bab)
OLD_SAMPLES_HEADER = ("sequence", "cpu", "irq", "vmm_tsc", "guest_tsc", "latency_cycles", "latency_ns")
# what evaluate() writes, and what a reanalysis therefore replaces; never copied from the original
DERIVED = {"samples.csv", "summary.json", "latency-histogram.png", "latency-cdf.png", "breakdown.png", "junit.xml",
           "report.md", "report.html", "report.png", "manifest.json", "stages.json", "stages.txt", "reproducer.sh",
           "reanalysis.json"}


class BundleError(TestbedError):
    """A bundle (folder or archive) that cannot be used: damaged, foreign, older layout, unsafe."""

    exit_code = EXIT_BAD_INPUT


# ------------------------------------------------------------------ opening a bundle

@dataclass
class View:
    """A bundle on disk (an archive's is extracted): its folder, manifest and, for a comparison, its runs."""
    folder: Path
    source: Path  # what was named on the command line (the archive for an extracted one)
    archive: bool
    manifest: dict
    kind: str  # "run" or "comparison"
    display: str  # how its files are named in messages: a folder path, or archive:top
    runs: list = field(default_factory=list)  # a comparison's run Views

    @property
    def name(self):
        return self.folder.name

    def where(self, rel):
        return f"{self.display}/{rel}"

    def json(self, rel, required=False):
        path = self.folder / rel
        if not path.is_file():
            if required:
                raise BundleError(f"{self.where(rel)}: missing")
            return None
        if path.stat().st_size > MAX_JSON_BYTES:
            raise BundleError(f"{self.where(rel)}: {path.stat().st_size} bytes, more than a bundle's JSON may be")
        try:
            return json.loads(path.read_text(errors="strict"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{self.where(rel)}: not valid JSON ({str(exc)[:160]}): the file is damaged") from None

    @property
    def scenario(self):
        return self.manifest.get("scenario") if self.kind == "run" else None

    @property
    def scenario_name(self):
        return self.manifest["scenario"]["name"] if self.kind == "run" else self.manifest.get("comparison")

    @property
    def git(self):
        git = self.manifest.get("git")
        return git if isinstance(git, dict) else {}

    @property
    def reanalysis_code(self):
        r = self.manifest.get("reanalysis")
        return (r.get("code") or {}) if isinstance(r, dict) else {}


@contextlib.contextmanager
def opened(path):
    """`with opened(path) as view:` a bundle folder or archive; an archive's temporary copy is
    removed when the block ends."""
    path = Path(path)
    if path.is_dir():
        yield load(path, path)
        return
    if not path.exists():
        raise BundleError(f"{path}: no such bundle (give a bundle folder or its .tar.gz)")
    if not path.is_file():
        raise BundleError(f"{path}: neither a folder nor a regular file")
    tmp = Path(tempfile.mkdtemp(prefix="testbed-bundle-"))
    try:
        folder = extract(path, tmp)
        yield load(folder, path, archive=True, display=f"{path}:{folder.name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _member_problem(m, top):
    """Why an archive member may not be extracted, or None."""
    name = m.name
    if not name or "\x00" in name:
        return "an empty name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts or "\\" in name:
        return "a path that leaves the bundle (`..`)"
    if m.isreg() or m.isdir():
        return None
    if m.issym() or m.islnk():
        target = m.linkname
        if target.startswith("/") or not target:
            return f"a link to an absolute path ({target!r})"
        base = PurePosixPath(name).parent if m.issym() else PurePosixPath()
        resolved = os.path.normpath(str(base / target))
        if resolved.startswith("..") or PurePosixPath(resolved).parts[:1] != (top,):
            return f"a link pointing outside the bundle ({target!r})"
        return None
    return "a device, fifo or other special file"


def extract(archive, dest):
    """Check every member of `archive`, then extract it into dest -> the bundle folder (its one top folder)."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, top, total = [], None, 0
            for m in tar:  # reads every header, so a cut archive fails here, before anything is written
                members.append(m)
                if len(members) > MAX_ARCHIVE_MEMBERS:
                    raise BundleError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS} members: not a bundle archive")
                first = PurePosixPath(m.name).parts[0] if PurePosixPath(m.name).parts else ""
                if top is None:
                    top = first
                problem = _member_problem(m, top)
                if problem:
                    raise BundleError(f"{archive}: member {m.name[:200]!r} is {problem}: refused, nothing extracted")
                if first != top:
                    raise BundleError(f"{archive}: more than one top folder ({top!r}, {first!r}): a bundle archive "
                                      "holds one folder")
                total += m.size if m.isreg() else 0
                if total > MAX_ARCHIVE_BYTES:
                    raise BundleError(f"{archive}: unpacks to more than {MAX_ARCHIVE_BYTES} bytes: refused")
            if top is None:
                raise BundleError(f"{archive}: an empty archive: no bundle in it")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own checks on top of ours
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except BundleError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        why = str(exc) or type(exc).__name__
        raise BundleError(f"{archive}: damaged or not a bundle archive ({why[:200]}); download it again") from None
    folder = Path(dest) / top
    if not folder.is_dir():
        raise BundleError(f"{archive}: its top member {top!r} is not a folder: not a bundle archive")
    return folder


def load(folder, source, archive=False, display=None):
    """A bundle folder -> View; BundleError when it is not a bundle of a layout these tools read."""
    folder = Path(folder)
    view = View(folder, Path(source), archive, {}, "run", display or str(folder))
    if not FOLDER_RE.match(folder.name):
        raise BundleError(f"{view.display}: folder name {folder.name[:80]!r} is not a bundle's (<scenario>-<UTC time>): "
                          "refused")
    manifest = view.json("manifest.json")
    if manifest is None:
        raise BundleError(f"{view.where('manifest.json')}: missing: not a testbed result bundle (every bundle has "
                          "manifest.json at its top), or an unfinished one")
    if not isinstance(manifest, dict):
        raise BundleError(f"{view.where('manifest.json')}: not a JSON object: the file is damaged")
    view.manifest = manifest
    if "comparison" in manifest:
        view.kind = "comparison"
        if not isinstance(manifest["comparison"], str) or not NAME_RE.match(manifest["comparison"]):
            raise BundleError(f"{view.where('manifest.json')}: comparison name {str(manifest['comparison'])[:60]!r} "
                              "is not a testbed name")
        runs = folder / "runs"
        if not runs.is_dir():
            raise BundleError(f"{view.where('runs')}: missing: a comparison bundle keeps each run's bundle in runs/ "
                              "(an older layout or a damaged bundle)")
        dirs = {d.name: d for d in runs.iterdir() if d.is_dir() and not d.name.startswith(".")}
        listed = [PurePosixPath(str(r.get("bundle", ""))).name for r in manifest.get("runs") or [] if isinstance(r, dict)]
        order = list(dict.fromkeys(n for n in listed if n in dirs)) + sorted(n for n in dirs if n not in listed)
        # in the comparison's own order (its schedule: the baseline's run first), then any others
        view.runs = [load(dirs[n], source, archive, f"{view.display}/runs/{n}") for n in order]
        return view
    scen = manifest.get("scenario")
    if not isinstance(scen, dict) or "name" not in scen:
        raise BundleError(f"{view.where('manifest.json')}: has neither a scenario nor a comparison: not a testbed "
                          "result bundle, or a layout these tools do not read")
    if not isinstance(scen["name"], str) or not NAME_RE.match(scen["name"]):
        raise BundleError(f"{view.where('manifest.json')}: scenario name {str(scen['name'])[:60]!r} is not a testbed "
                          "name")
    for what, commit in (("git commit", view.git.get("commit")), ("reanalysis commit", view.reanalysis_code.get("commit"))):
        if commit is not None and (not isinstance(commit, str) or not COMMIT_RE.match(commit)):
            raise BundleError(f"{view.where('manifest.json')}: {what} {str(commit)[:60]!r} is not a commit id")
    return view


def check_samples(view):
    """A run's samples.csv is in the current layout (or absent: a run without samples); BundleError if not."""
    path = view.folder / "samples.csv"
    if not path.exists():
        return False
    with open(path, errors="replace") as f:
        header = tuple(f.readline().strip().split(","))
    if header == OLD_SAMPLES_HEADER:
        raise BundleError(f"{view.where('samples.csv')}: the layout before instruction timing (latency_cycles, no "
                          f"path or segment columns): rebuild it with `testbed reanalyze {view.source}`")
    if header not in analysis.accepted_csv_headers():
        raise BundleError(f"{view.where('samples.csv')}:1: header {','.join(header)[:200]!r} is not "
                          f"{','.join(analysis.csv_columns())}: an older or foreign layout")
    if view.json("summary.json") is None:
        raise BundleError(f"{view.where('summary.json')}: missing beside samples.csv: the bundle is incomplete")
    return True


def _pack(final):
    tar_path = final.parent / f"{final.name}.tar.gz"
    tmp = tar_path.with_suffix(".gz.partial")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(final, arcname=final.name)
    os.replace(tmp, tar_path)
    return tar_path


def _finish(b, manifest, stages, reproducer_text, pack):
    """Bundle.finish, then report.html (it needs the manifest and the reproducer), then the archive."""
    for empty in (b.config, b.logs, b.raw):  # Bundle makes them; a comparison fills none of them
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    final, _ = b.finish(manifest, stages, reproducer_text, pack=False)
    report_html.write(final)
    return final, _pack(final) if pack else None


class _Stages:
    """The two things Bundle.finish asks of a stage list."""

    def __init__(self, results):
        self.results = results  # StageResult-like: name, status, seconds, detail

    def as_list(self):
        return [{"name": r.name, "status": r.status, "seconds": r.seconds, "detail": r.detail} for r in self.results]

    def table(self):
        lines = [f"{'stage':<14} {'status':<8} {'seconds':>8}  detail", "-" * 60]
        lines += [f"{r.name:<14} {r.status:<8} {r.seconds:>8.1f}  {r.detail}" for r in self.results]
        return "\n".join(lines) + "\n"


def _stage(name, status, seconds, detail=""):
    return SimpleNamespace(name=name, status=status, seconds=float(seconds), detail=detail)


def _utc():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------ show

def _d(value):
    return value if isinstance(value, dict) else {}


def _num(unit, value):
    return unit.show(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def show(view, out):
    """The one-screen summary of a bundle, printed on the rich console `out` (bundle text is never
    read as markup)."""
    where = f"{view.source} (archive, read from a temporary copy)" if view.archive else str(view.folder)
    out.rule(f"{view.kind} bundle {view.name}", characters="─")
    say = lambda label, text: out.print(f"{label:<10}{text}", markup=False)  # noqa: E731
    say("where", where)
    if view.kind == "run":
        _show_run(view, out, say)
    else:
        _show_comparison(view, out, say)
    _show_files(view, say)
    return EXIT_OK


def _show_header(view, out, say, name, description):
    m = view.manifest
    css, sentence = report_html.status_of(m)
    say("name", f"{name}  {str(description or '')[:200]}")
    color = {"passed": "green", "measurement": "yellow", "failed": "red"}.get(css, "white")
    out.print(f"{'status':<10}", end="")
    out.print(sentence, style=color, markup=False)
    git = view.git
    say("timing", f"started {m.get('started_utc', '–')}, finished {m.get('finished_utc', '–')}, "
                  f"{m.get('duration_s', '–')} s")
    say("produced", f"git {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}")
    r = _d(m.get("reanalysis"))
    if r:
        code = _d(r.get("code"))
        say("reanalysis", f"of {r.get('from')} at {r.get('utc')} by git {code.get('commit')}"
                          f"{' (dirty)' if code.get('dirty') else ''}")


def _show_run(view, out, say):
    from .breakdown import SEGMENT_NAMES
    m, scen = view.manifest, view.scenario
    _show_header(view, out, say, scen["name"], scen.get("description"))
    say("variant", f"{_d(scen.get('hypervisor')).get('variant')}; timing {_d(scen.get('machine')).get('timing', 'host')};"
                   f" accelerator {_d(m.get('accelerator')).get('used', '–')}")
    if m.get("failed_stage"):
        error = str(m.get("error") or "").splitlines()
        say("failed at", f"stage {m['failed_stage']}: {error[0][:300] if error else ''}")
    stages = view.json("stages.json")
    if isinstance(stages, list):
        counts = {}
        for r in stages:
            counts[_d(r).get("status")] = counts.get(_d(r).get("status"), 0) + 1
        say("stages", ", ".join(f"{v} {k}" for k, v in counts.items()))
    summary = view.json("summary.json")
    if isinstance(summary, dict) and isinstance(summary.get("latency_ns"), dict):
        unit = report.unit_of(summary) if summary.get("timing", "host") in report.UNITS else report.UNITS["host"]
        lat = _d(summary.get(unit.key))
        cells = [str(lat.get(k, "–")) if k == "n" else _num(unit, lat.get(k)) for k in report_html.STAT_KEYS]
        widths = [max(len(k), len(c)) for k, c in zip(report_html.STAT_KEYS, cells)]
        say("latency", f"({unit.label})")  # plain columns: a rich table would cut the numbers on 80 columns
        say("", "  ".join(k.rjust(w) for k, w in zip(report_html.STAT_KEYS, widths)))
        say("", "  ".join(c.rjust(w) for c, w in zip(cells, widths)))
        unpaired = summary.get("unpaired_pct")
        say("pairing", f"paired {summary.get('paired', '–')}; unpaired "
                       f"{f'{unpaired:.2f} %' if isinstance(unpaired, (int, float)) else '–'}; coalesced VMM entries "
                       f"{summary.get('coalesced_vmm', '–')}; irq mode in the guest {summary.get('irq_mode_guest')}")
        paths = _d(summary.get("paths"))
        if paths:
            say("paths", ", ".join(f"{k} {v}" for k, v in paths.items())
                + f"; path records {summary.get('path_records', '–')}")
        brk = _d(_d(summary.get("breakdown")).get("all"))
        if brk:
            say("breakdown", ", ".join(f"{seg} {report_html._t(_d(brk.get(seg)).get('median'))}"
                                       for seg in SEGMENT_NAMES) + " (median ticks, all interrupts)")
    elif isinstance(summary, dict):
        say("latency", "none: stamping was off (a probe-cost run)")
    else:
        say("latency", "no summary.json: this run measured nothing or stopped before the evaluation")
    for c in report_html.junit_checks(view.folder / "junit.xml"):
        say("check", f"{c['name']:<22} {'ok' if c['ok'] else 'FAILED'}  {c['detail'][:160]}")


def _show_comparison(view, out, say):
    m = view.manifest
    _show_header(view, out, say, m.get("comparison"), m.get("description"))
    comp = _d(view.json("comparison.json"))
    say("baseline", f"{comp.get('baseline')}; unit {comp.get('unit')}")
    for name, v in _d(comp.get("verdicts")).items():
        say("verdict", str(_d(v).get("sentence", name)))
    for path, verdicts in _d(comp.get("path_verdicts")).items():
        for name, v in _d(verdicts).items():
            say("verdict", f"({path} path only) {_d(v).get('sentence', name)}")
    for r in view.runs:
        s = _d(r.json("summary.json"))
        unit = report.UNITS.get(s.get("timing", "host")) if "latency_ns" in s else None
        median = _num(unit, _d(s.get(unit.key)).get("median")) if unit else "–"
        say("run", f"runs/{r.name}: {r.scenario_name} ({_d(r.scenario.get('hypervisor')).get('variant')}), exit "
                   f"{r.manifest.get('exit_code')}, paired {s.get('paired', '–')}, median {median}"
                   + (f" {unit.label}" if unit else ""))


def _show_files(view, say):
    f = view.folder
    present = []
    for name in ("report.html", "report.md", "report.png", "summary.json", "samples.csv", "comparison.json",
                 "latency-histogram.png", "latency-cdf.png", "latency-box.png", "breakdown.png", "junit.xml",
                 "reanalysis.json", "reproducer.sh"):
        p = f / name
        if p.is_file():
            extra = ""
            if name == "samples.csv":
                with open(p, errors="replace") as fh:
                    extra = f" ({sum(1 for _ in fh) - 1} rows)"
            present.append(f"{name}{extra}")
    say("files", ", ".join(present) or "(none of the usual files)")
    for sub in ("raw", "logs", "config", "runs"):
        d = f / sub
        if d.is_dir():
            files = [p for p in d.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            say("", f"{sub}/: {len(files)} files, {size / 1e6:.1f} MB")


def screenshot(view, out, size=(1280, 2200)):
    """Render the bundle's report.html in headless Chromium (writing report.html first if the bundle
    has none); keep the screenshot as report.png in the bundle folder, or beside an archive as
    <name>.report.png (with <name>.report.html). BrowserError when blank or with console messages."""
    html = view.folder / "report.html"
    if not html.exists():
        report_html.write(view.folder, strict=True)
        out.print(f"wrote {html.name} (the bundle had none)")
    png = view.folder / "report.png"
    check = report_html.check_in_browser(html, png, size=size)
    if view.archive:
        stem = view.source.name.removesuffix(".tar.gz").removesuffix(".tgz")
        keep_png, keep_html = view.source.with_name(f"{stem}.report.png"), view.source.with_name(f"{stem}.report.html")
        shutil.copy2(png, keep_png)
        shutil.copy2(html, keep_html)
        png = keep_png
    if not check.ok:
        raise report_html.BrowserError(f"{html}: the page failed its browser check:\n  " + "\n  ".join(check.problems()))
    out.print(f"screenshot {png} ({check.width}x{check.height}, grey-level variance {check.variance:.0f}); "
              "no console messages")
    return png


# ------------------------------------------------------------------ reanalyze

# Fields a bundle's scenario may lack because they came later, with what their absence meant.
HISTORIC_DEFAULTS = {("machine", "timing"): "host", ("measurement", "stamping"): True,
                     ("measurement", "guest_upcall_stamp"): False}
# What evaluate() reads of the scenario: these must be present (or historic) and well-typed.
NEEDED = {("name",): str, ("hypervisor", "variant"): str, ("machine", "timing"): str, ("measurement", "load"): bool,
          ("measurement", "stamping"): bool, ("measurement", "min_samples"): int,
          ("measurement", "max_unpaired_pct"): (int, float)}


def scenario_of(view):
    """The bundle's scenario (manifest.json) as the current Scenario dataclass -> (Scenario, filled, absent):
    fields it lacks take their historic meaning (filled) or None (absent, not read by the evaluation)."""
    from . import scenario as scenario_mod
    from .scenario import TIMINGS
    filled, absent = [], []

    def build(cls, raw, path):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = path + (f.name,)
            if isinstance(raw, dict) and f.name in raw:
                value = raw[f.name]
            elif key in HISTORIC_DEFAULTS:
                value = HISTORIC_DEFAULTS[key]
                filled.append(".".join(key))
            else:
                value = None
                absent.append(".".join(key))
            if dataclasses.is_dataclass(hints.get(f.name)) and (value is None or isinstance(value, dict)):
                value = build(hints[f.name], value or {}, key)
            kwargs[f.name] = value
        return cls(**kwargs)
    s = build(scenario_mod.Scenario, view.scenario, ())
    where = view.where("manifest.json")
    problems = []
    for key, kind in NEEDED.items():
        value = s
        for k in key:
            value = getattr(value, k)
        if value is None:
            problems.append(f"{'.'.join(key)} is missing")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{'.'.join(key)} is {str(value)[:40]!r}, not a {getattr(kind, '__name__', 'number')}")
    if not problems and s.machine.timing not in TIMINGS:
        problems.append(f"machine.timing {s.machine.timing!r} is not one of {', '.join(TIMINGS)}")
    if not problems and s.hypervisor.variant not in ("stock", "natsume"):
        problems.append(f"hypervisor.variant {s.hypervisor.variant!r} is not stock or natsume")
    if problems:
        raise BundleError(f"{where}: the scenario cannot be evaluated by the current code (an older or damaged "
                          f"layout): {'; '.join(problems)}")
    return s, filled, [a for a in absent if a != "source"]


class _Replay:
    """Stands in for dom0's agent and the RT guest's console: every command 'prints' one saved file,
    so measure.py's own parsers read the bundle's logs exactly as they read the live machine."""

    def __init__(self, text):
        self.text = text

    def run(self, command, timeout=None, check=False):
        return SimpleNamespace(stdout=self.text, stderr="", ok=True, rc=0)

    def command(self, line, done, timeout, to_file=None):
        return self.text


def _read(path, limit=64 << 20):
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


def records_of(view, s, scratch):
    """measure.MeasureRecords rebuilt from the bundle -> (records, {input: where it came from}).
    Raw records and logs first; what measure recorded in summary.json where they lack it."""
    from . import measure
    raw, logs = view.folder / "raw", view.folder / "logs"
    summary = view.json("summary.json")
    summary = summary if isinstance(summary, dict) else {}
    rt_name = s.rt_guest.name if isinstance(s.rt_guest.name, str) else None
    guest_log = _read(logs / f"guest-{rt_name}-console.log") if rt_name and NAME_RE.match(rt_name) else None
    sources = {}

    def first(name, *attempts):
        for where, get in attempts:
            try:
                value = get()
            except (measure.MeasureError, KeyError, IndexError, TypeError, ValueError, AttributeError):
                continue
            if value is not None:
                sources[name] = where
                return value
        return None

    rec = measure.MeasureRecords(trace_path=raw / measure.TRACE_FILE, guest_dump_path=raw / measure.GUEST_DUMP)
    xl_info = _read(logs / "xl-info.txt")
    rec.tsc_khz = first("tsc_khz", ("logs/xl-info.txt", lambda: measure.tsc_khz(_Replay(xl_info)) if xl_info else None),
                        ("summary.json", lambda: summary["tsc_khz"]))
    xl_list = _read(raw / "sysinfo-before" / "xl-list.txt") or _read(logs / "xl-list.txt")
    rec.rt_domid = first("rt_domid", ("xl list", lambda: _domid(xl_list, rt_name)),
                         ("summary.json", lambda: summary["xen_irqs_of_rt_guest"][0]["domid"]))
    if (raw / vcpucount.LOG_FILE).exists() and isinstance(s.rt_guest.pcpu, int):
        rec.vcpu_log, rec.rt_pcpu = raw / vcpucount.LOG_FILE, s.rt_guest.pcpu
        sources["vcpu_log"] = f"raw/{vcpucount.LOG_FILE}"
    missing = [k for k, v in (("the TSC frequency (logs/xl-info.txt or summary.json)", rec.tsc_khz),
                              ("the RT guest's domain id (xl list or summary.json)", rec.rt_domid)) if v is None]
    if missing:
        raise BundleError(f"{view.display}: cannot rebuild the measurement's inputs: {'; '.join(missing)} missing")
    # measure's own table (the last `i` dump of the whole console ring) is not kept; the sysinfo copy is a
    # later dump cut to 80 lines. It is used when it names the RT guest's IRQs as measure's did (or when
    # summary.json does not say); otherwise the IRQs measure found, from summary.json.
    table = _read(raw / "sysinfo-before" / "xen-irqs.txt")
    from .evaluate import xen_guest_irqs
    raw_irqs = [x.__dict__ for x in xen_guest_irqs(table, rec.rt_domid)] if table else []
    recorded = summary.get("xen_irqs_of_rt_guest")
    if raw_irqs and (not isinstance(recorded, list) or raw_irqs == recorded):
        rec.xen_irq_table, sources["xen_irq_table"] = table, "raw/sysinfo-before/xen-irqs.txt"
    elif isinstance(recorded, list):
        rec.xen_irq_table = "".join(f"(XEN)    IRQ: {int(x['irq']):3d} vec:{int(x['vector']):02x} {x['kind']} "
                                    f"status=030 in-flight=0 d{int(x['domid'])}:{int(x['pirq'])}(---)\n"
                                    for x in summary["xen_irqs_of_rt_guest"])
        sources["xen_irq_table"] = "summary.json (xen_irqs_of_rt_guest)"
    rec.guest_irq_mode = first("guest_irq_mode",
                               (f"logs/guest-{rt_name}-console.log",
                                lambda: re.search(r"TESTBED-IRQMODE \S+ (\S+)", guest_log).group(1)),
                               ("summary.json", lambda: summary["irq_mode_guest"])) or "unknown"
    rec.guest_irqs = first("guest_irqs", (f"logs/guest-{rt_name}-console.log", lambda: _guest_irqs(guest_log)),
                           ("summary.json (irq_map)", lambda: _guest_irqs_from_map(summary))) or {}
    rec.calibration = first("calibration", (f"logs/guest-{rt_name}-console.log",
                                            lambda: measure.calibrate(_Replay(guest_log), s.machine.timing)
                                            if guest_log and "RTAGENT-CALIBRATE" in guest_log else None),
                            ("summary.json", lambda: summary["calibration"])) or {}
    if s.hypervisor.variant == "natsume":
        counters = raw / "natsume-counters.txt"
        parsed = first("natsume_counters", ("raw/natsume-counters.txt", lambda: measure.natsume_counters(
                           _Replay(counters.read_text(errors="replace")), scratch / "natsume-counters.txt")
                           if counters.is_file() else None),
                       ("summary.json", lambda: (summary["natsume_fast_path_irqs"], summary.get("natsume_dropped") or {})))
        if parsed is None:
            raise BundleError(f"{view.where('raw/natsume-counters.txt')}: missing (and summary.json has no "
                              "natsume_fast_path_irqs): a Natsume run cannot be evaluated without its fast-path count")
        rec.natsume_fast_path, rec.natsume_dropped = parsed
    traffic = view.json("raw/traffic.json")
    if isinstance(traffic, dict) and "sent" in traffic:
        rec.traffic, rec.counters_before, rec.counters_after = (traffic.get("sent") or {}, traffic.get("before") or {},
                                                                traffic.get("after") or {})
        rec.pacing = traffic.get("pacing") or {}
        sources["traffic"] = "raw/traffic.json"
    elif "traffic" in summary:
        rec.traffic, rec.counters_before, rec.counters_after = (summary.get("traffic") or {},
                                                                summary.get("counters_before") or {},
                                                                summary.get("counters_after") or {})
        sources["traffic"] = "summary.json"
    return rec, sources


def _domid(xl_list, name):
    for line in (xl_list or "").splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[0] == name and cols[1].isdigit():
            return int(cols[1])
    return None


def _guest_irqs(log):
    found = re.findall(r"^RTAGENT-STARTED irqs=(\S+)", log or "", re.M)
    return dict(p.split(":", 1) for p in found[-1].split(",")) if found else None


def _guest_irqs_from_map(summary):
    """MSI-X entry order mapped every guest vector: the map's keys are the guest's IRQs. With activity
    rank the list was not used beyond its length, which differed: no list reproduces that."""
    if str(summary.get("irq_map_method", "")).startswith("MSI-X entry order"):
        return {str(k): "" for k in summary["irq_map"]}
    return None


def reanalyze(view, results_dir, say=lambda text: None, pack=True):
    """Reanalyze a run or comparison bundle into a new bundle under results_dir -> (folder, archive, exit code)."""
    if view.kind == "comparison":
        return _reanalyze_comparison(view, results_dir, say, pack)
    return _reanalyze_run(view, results_dir, say, pack)


def _reanalyze_run(view, results_dir, say, pack):
    """One run bundle into a new bundle under results_dir (removed again on failure) -> (folder, archive, code)."""
    b = bundle.Bundle(results_dir, f"{view.name}-reanalyzed"[:120])
    try:
        code, manifest, stages, repro = _reanalyze_run_into(view, b, say)
    except BaseException:
        shutil.rmtree(b.dir, ignore_errors=True)
        raise
    final, tar = _finish(b, manifest, stages, repro, pack=pack)
    return final, tar, code


def _reanalyze_run_into(view, b, say):
    """Copy the bundle into b.dir, evaluate its raw records there -> (exit code, manifest, stages, reproducer)."""
    from . import evaluate
    from .measure import GUEST_DUMP, TRACE_FILE
    t0 = time.monotonic()
    m = view.manifest
    s, filled, absent = scenario_of(view)
    if not s.measurement.enabled:
        raise BundleError(f"{view.display}: scenario {s.name} measured nothing (measurement.enabled false): "
                          "there are no records to reanalyze")
    needed = [f"raw/{TRACE_FILE}", f"raw/{GUEST_DUMP}"] if s.measurement.stamping else []
    missing = [n for n in needed if not (view.folder / n).is_file()]
    if missing:
        why = f"the run stopped at stage {m['failed_stage']}" if m.get("failed_stage") else \
            "an older layout or a damaged bundle"
        raise BundleError(f"{view.display}: {', '.join(missing)} missing ({why}): nothing to reanalyze")
    scratch = Path(tempfile.mkdtemp(prefix="testbed-reanalysis-"))
    try:
        rec, sources = records_of(view, s, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if s.measurement.stamping and not rec.xen_irq_table:
        raise BundleError(f"{view.display}: Xen's IRQ table is missing (raw/sysinfo-before/xen-irqs.txt has no IRQ "
                          "of the RT guest and summary.json has no xen_irqs_of_rt_guest)")
    top = view.folder
    shutil.copytree(top, b.dir, dirs_exist_ok=True, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == top and n in DERIVED])
    rec.trace_path, rec.guest_dump_path = b.raw / TRACE_FILE, b.raw / GUEST_DUMP
    accel = (m.get("accelerator") or {}).get("used") if isinstance(m.get("accelerator"), dict) else None
    accel = accel or (view.json("summary.json") or {}).get("accelerator") or "unknown"
    say(f"reanalyzing {view.display} ({s.name}, {s.hypervisor.variant}, timing {s.machine.timing})")
    try:
        summary, checks = evaluate.evaluate(s, rec, b.dir, accel)
    except evaluate.InfraCheckFailed as exc:
        raise BundleError(f"{view.display}: the evaluation refuses these records: {exc}") from None
    except TestbedError as exc:
        raise BundleError(f"{view.display}: the evaluation failed: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BundleError(f"{view.display}: the evaluation failed on these records ({type(exc).__name__}: "
                          f"{str(exc)[:300]}): a damaged bundle") from None
    failed_checks = [c["name"] for c in checks if not c["ok"]]
    infra = m.get("failed_stage") not in (None, "evaluate")  # a failure after the evaluation stays a failure
    code = (m.get("exit_code") if isinstance(m.get("exit_code"), int) else EXIT_INFRA) if infra else (
        EXIT_MEASUREMENT_FAILED if failed_checks else EXIT_OK)
    old = view.json("summary.json") or {}
    new_summary = {k: summary.get(k) for k in bundle.SUMMARY_IN_MANIFEST}
    reanalysis = {
        "from": view.name, "source": str(view.source), "utc": _utc(), "producer": view.git or None,
        "code": bundle.git_state(), "inputs": sources, "scenario_fields_filled": filled,
        "scenario_fields_absent": absent, "checks": checks,
        "original": {k: m.get(k) for k in ("run_id", "finished_utc", "duration_s", "status", "exit_code",
                                           "failed_stage", "failed_checks", "summary")},
        "changes": _changes(old, summary),
    }
    manifest = dict(m, summary=new_summary, exit_code=code, failed_checks=failed_checks,
                    status={EXIT_OK: "passed", EXIT_MEASUREMENT_FAILED: "measurement failed"}.get(code, "failed"),
                    reanalysis=reanalysis)
    if not infra:
        manifest.update(failed_stage=None, error=None)
    (b.dir / "reanalysis.json").write_text(json.dumps(reanalysis, indent=2, default=str) + "\n")
    results = [_stage(r.get("name"), r.get("status"), r.get("seconds") or 0.0, str(r.get("detail", "")))
               for r in (view.json("stages.json") or []) if isinstance(r, dict)]
    if not infra:  # the evaluation that failed before is replaced by this one
        results = [r if r.name != "evaluate" else _stage("evaluate", "passed", r.seconds, "replaced by reanalyze")
                   for r in results]
    results.append(_stage("reanalyze", "passed", time.monotonic() - t0,
                          f"{summary.get('paired', 'no')} paired samples; " +
                          ", ".join(f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in checks)))
    report.junit(b.dir / "junit.xml", f"testbed.{s.name}", results, checks)
    code_git = reanalysis["code"]
    repro = (view.folder / "reproducer.sh").read_text(errors="replace") if (view.folder / "reproducer.sh").is_file() \
        else "#!/bin/sh\n# (the original bundle had no reproducer.sh)\n"
    repro += (f"\n# This bundle is a reanalysis of {view.name} (produced at git {view.git.get('commit')}) by the code at "
              f"git {code_git['commit']}{' (dirty)' if code_git['dirty'] else ''}, {reanalysis['utc']}.\n"
              f"# Redo the reanalysis: git checkout {code_git['commit']} && "
              f"python -m orchestrator reanalyze <the original bundle>\n")
    return code, manifest, _Stages(results), repro


def _changes(old, new):
    """The headline numbers before and after: {key: [original, reanalysis]} where they differ."""
    def get(d, *keys):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d
    out = {}
    for keys in (("paired",), ("unpaired_pct",), ("latency_ticks", "median"), ("latency_ticks", "p99"),
                 ("latency_ns", "median"), ("paths",), ("timing",)):
        a, b = get(old, *keys), get(new, *keys)
        if a != b:
            out[".".join(keys)] = [a, b]
    return out


def _reanalyze_comparison(view, results_dir, say, pack):
    b = bundle.Bundle(results_dir, f"{view.name}-reanalyzed"[:120])
    try:
        runs_dir = b.dir / "runs"
        runs_dir.mkdir()
        kept = []
        for r in view.runs:
            try:
                _reanalyze_run(r, runs_dir, say, pack=False)
            except BundleError as exc:  # e.g. a run that failed at boot: kept as it was
                say(f"not reanalyzed, copied as it was: {exc}")
                shutil.copytree(r.folder, runs_dir / r.name, symlinks=True)
                kept.append({"bundle": r.name, "why": str(exc)})
        original = view.json("comparison.json") or {}
        baseline = original.get("baseline") if isinstance(original.get("baseline"), str) else None
        runs = [load(d, d) for d in sorted(runs_dir.iterdir()) if d.is_dir()]
        extra = {"reanalysis": {"from": view.name, "source": str(view.source), "utc": _utc(),
                                "producer": view.git or None, "code": bundle.git_state(), "runs_not_reanalyzed": kept}}
        code, manifest, stages, repro = _comparison_into(
            b, [(0, r) for r in runs], view.manifest["comparison"], view.manifest.get("description") or "",
            baseline, "name", sources=[_source(view)], extra=extra)
    except BaseException:
        shutil.rmtree(b.dir, ignore_errors=True)
        raise
    final, tar = _finish(b, manifest, stages, repro, pack)
    return final, tar, code


# ------------------------------------------------------------------ compare

def _source(view):
    entry = {"input": str(view.source), "bundle": view.name, "kind": view.kind, "commit": view.git.get("commit"),
             "dirty": view.git.get("dirty")}
    if view.archive:
        h = hashlib.sha256()
        with open(view.source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        entry["sha256"] = h.hexdigest()
    return entry


GROUPINGS = ("scenario", "input", "name")  # name: by scenario name alone (a reanalysed comparison)


def _labels(entries, group):
    """Runs grouped (pooled as repeats) by scenario and producing and reanalysing commit; with
    group "input" also by input bundle. Each group's label is its scenario name, plus only what tells
    apart groups that share the name: @commit, then +re@commit, then #inputN.
    -> ({key: label}, {key: [(input index, View)]}), both in input order."""
    from collections import Counter

    def commit(g):
        return (g.get("commit") or "unknown")[:10] + ("+dirty" if g.get("dirty") else "")

    groups = {}
    for i, r in entries:
        if group == "name":
            key = (r.scenario_name, None, None, None)
        else:
            key = (r.scenario_name, commit(r.git), commit(r.reanalysis_code) if r.reanalysis_code else None,
                   i if group == "input" else None)
        groups.setdefault(key, []).append((i, r))
    names = {k: k[0] for k in groups}
    for suffix in (lambda k: f"@{k[1]}" if k[1] else "", lambda k: f"+re@{k[2]}" if k[2] else "",
                   lambda k: f"#input{k[3] + 1}" if k[3] is not None else ""):
        counts = Counter(names.values())
        for k in groups:
            if counts[names[k]] > 1:
                names[k] += suffix(k)
    return names, groups


def compare(views, results_dir, baseline=None, group="scenario", name="compare", description=None,
            say=lambda text: None, pack=True):
    """A comparison bundle from run bundles (a comparison's runs/ count as its runs) -> (folder, archive, code)."""
    if not NAME_RE.match(name):
        raise BundleError(f"--name {name[:60]!r}: a name is lower-case letters, digits and '-' (at most 31)")
    entries = [(i, r) for i, v in enumerate(views) for r in ([v] if v.kind == "run" else v.runs)]
    if not entries:
        raise BundleError("no run bundle among the inputs (a comparison bundle without runs?)")
    for _, r in entries:
        check_samples(r)
    b = bundle.Bundle(results_dir, name)
    try:
        runs_dir = b.dir / "runs"
        runs_dir.mkdir()
        copied = []
        for i, r in entries:
            target, n = runs_dir / r.name, 1
            while target.exists():
                n += 1
                target = runs_dir / f"{r.name}-{n}"
            shutil.copytree(r.folder, target, symlinks=True)
            copy = load(target, r.source, display=r.display)
            copied.append((i, copy))
        desc = description or ("Run bundles compared by `testbed compare`: "
                               + ", ".join(f"{v.name} ({v.kind})" for v in views) + ".")
        code, manifest, stages, repro = _comparison_into(b, copied, name, desc, baseline, group,
                                                         sources=[_source(v) for v in views])
    except BaseException:
        shutil.rmtree(b.dir, ignore_errors=True)
        raise
    say(f"compared {len(entries)} runs from {len(views)} bundles")
    final, tar = _finish(b, manifest, stages, repro, pack)
    return final, tar, code


INTERLEAVED = re.compile(r"Runs were interleaved \(\d+ per scenario\) in this one invocation, on one host, with "
                         r"identical traffic and load settings\.")


def _comparison_into(b, entries, name, description, baseline, group, sources, extra=None):
    """compare.write_report over runs already inside b.dir/runs -> (code, manifest, stages, reproducer)."""
    from . import compare as compare_mod
    t0 = time.monotonic()
    labels, groups = _labels(entries, group)
    if len(groups) < 2:
        only = next(iter(labels.values()))
        raise BundleError(f"all {len(entries)} runs are of one scenario from one commit ({only}): nothing to compare; "
                          "give bundles of two scenarios or two commits, or --group input to compare the inputs")
    order = list(labels.values())
    if baseline is None:
        base = order[0]
    elif baseline in order:
        base = baseline
    else:
        matches = [x for x in order if x.split("@")[0].split("#")[0] == baseline]
        if len(matches) != 1:
            raise BundleError(f"--baseline {baseline[:60]!r}: " + ("matches " + ", ".join(matches) + "; name one" if matches
                              else "no such run group; the groups are " + ", ".join(order)))
        base = matches[0]
    variants = {}
    for key, members in groups.items():
        variants[labels[key]] = ((members[0][1].scenario.get("hypervisor") or {}).get("variant") or "–")
    scen = {label: SimpleNamespace(name=label, hypervisor=SimpleNamespace(variant=str(variants[label])))
            for label in [base] + [x for x in order if x != base]}
    comp = SimpleNamespace(name=name, description=description, scenarios=tuple(scen.values()),
                           repeats=max(len(m) for m in groups.values()))
    label_of = {id(r): labels[k] for k, members in groups.items() for _, r in members}
    outcomes = []
    for _, r in entries:
        code = r.manifest.get("exit_code")
        outcomes.append((scen[label_of[id(r)]], SimpleNamespace(
            bundle=r.folder, code=code if isinstance(code, int) else EXIT_INFRA,
            checks=report_html.junit_checks(r.folder / "junit.xml"))))
    try:
        text = compare_mod.write_report(comp, outcomes, b.dir)
    except (TestbedError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"the comparison report failed on these bundles ({type(exc).__name__}: {str(exc)[:300]})") \
            from None
    text = _adapt_report(text, entries, label_of, sources, group, base, name)
    (b.dir / "report.md").write_text(text)
    for _, r in entries:
        if not (r.folder / "report.html").exists():
            report_html.write(r.folder)
    code = max(o.code for _, o in outcomes)
    git = bundle.git_state()
    manifest = {"comparison": name, "description": description, "repeats": comp.repeats, "exit_code": code,
                "status": "passed" if code == EXIT_OK else "failed", "made_by": "testbed compare",
                "baseline": base, "group": group, "git": git, "compared_by": git, "sources": sources,
                "runs": [{"scenario": label_of[id(r)], "scenario_name": r.scenario_name,
                          "exit_code": r.manifest.get("exit_code"), "bundle": f"runs/{r.name}",
                          "git": r.git or None} for _, r in entries]}
    manifest.update(extra or {})
    stages = _Stages([_stage(f"run:{label_of[id(r)]}", "passed" if o.code == EXIT_OK else "failed", 0.0,
                             f"exit {o.code}, bundle runs/{r.name}") for (_, r), (_, o) in zip(entries, outcomes)]
                     + [_stage("report", "passed", time.monotonic() - t0, f"{len(groups)} groups, baseline {base}")])
    repro = f"""#!/bin/sh
# Rebuild comparison {b.run_id} from the run bundles it holds (runs/), with the code that made it.
# Run from a clone of natsume-testbed. Each run's own reproducer.sh reruns its measurement.
set -eu
BUNDLE=$(cd "$(dirname "$0")" && pwd)
REPO=${{REPO:-.}}
cd "$REPO"
git checkout {git.get('commit') or 'HEAD'}
make setup
.venv/bin/python -m orchestrator compare "$BUNDLE"/runs/* --baseline {shlex.quote(base)} --group {group} --name {name}
"""
    return code, manifest, stages, repro


def _adapt_report(text, entries, label_of, sources, group, base, name):
    """compare.write_report describes runs of one invocation; these come from bundles made anywhere."""
    note = ("The runs come from separate bundles (see Sources below), not from one interleaved invocation: "
            "their hosts, commits and load may differ, and so may the conditions of the measurement.")
    text, n = INTERLEAVED.subn(note, text)
    text = re.sub(r"^Reproduce: `make testbed run SCENARIO=[^`]*` \(see reproducer\.sh\)\.$",
                  "Reproduce: `sh reproducer.sh` rebuilds this report from runs/; each run's reproducer.sh reruns "
                  "its measurement.", text, flags=re.M)
    lines = ["", "## Sources", "", ("" if n else note + "\n") +
             f"Grouped by {'input bundle and scenario' if group == 'input' else 'scenario and producing commit'}; "
             f"baseline `{base}`.", "",
             "| group | run bundle | scenario | produced by (git) | reanalysed by (git) | exit | measurement |",
             "|---|---|---|---|---|---|---|"]
    for _, r in entries:
        m = r.scenario.get("measurement") or {}
        meas = (f"{m.get('bursts')} × {m.get('frames_per_burst')} every {m.get('period_ms')} ms, "
                f"load {'on' if m.get('load') else 'off'}") if m else "–"
        re_ = r.reanalysis_code
        lines.append(f"| {label_of[id(r)]} | runs/{r.name} | {r.scenario_name} | {r.git.get('commit') or '–'}"
                     f"{' (dirty)' if r.git.get('dirty') else ''} | "
                     f"{(re_.get('commit') or '–') + (' (dirty)' if re_.get('dirty') else '') if re_ else '–'} | "
                     f"{r.manifest.get('exit_code')} | {meas} |")
    settings = {json.dumps(_measurement_settings(r), sort_keys=True) for _, r in entries}
    if len(settings) > 1:
        lines += ["", "**The measurement settings differ between runs** (bursts, frames, period, payload, load): "
                  "the comparison is of the runs as they were made, not of like with like."]
    lines += ["", "Inputs: " + "; ".join(f"`{s['input']}`" + (f" (sha256 {s['sha256'][:16]}…)" if s.get("sha256")
                                                               else "") for s in sources), ""]
    return text.rstrip("\n") + "\n" + "\n".join(lines)


def _measurement_settings(r):
    m = r.scenario.get("measurement") or {}
    return {k: m.get(k) for k in ("bursts", "frames_per_burst", "period_ms", "payload_bytes", "load",
                                  "load_rate_pps", "stamping")}


# ------------------------------------------------------------------ the commands (cli.py wires them)

def cmd_show(args, out):
    with opened(args.bundle) as view:
        show(view, out)
        if args.screenshot:
            screenshot(view, out)
    return EXIT_OK


def cmd_reanalyze(args, out):
    with opened(args.bundle) as view:
        final, tar, code = reanalyze(view, Path(args.out), say=lambda text: out.print(text, markup=False))
    manifest = json.loads((final / "manifest.json").read_text())
    changes = _d(manifest.get("reanalysis")).get("changes") or {}
    out.print("changes against the original: " + ("; ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
                                                   if changes else "none in the headline numbers"), markup=False)
    out.print(f"status: {manifest.get('status')}\nbundle: {final}\narchive: {tar}\nexit code: {code}", markup=False)
    return code


def cmd_compare(args, out):
    with contextlib.ExitStack() as stack:
        views = [stack.enter_context(opened(p)) for p in args.bundles]
        final, tar, code = compare(views, Path(args.out), baseline=args.baseline, group=args.group, name=args.name,
                                   say=lambda text: out.print(text, markup=False))
    comp = json.loads((final / "comparison.json").read_text())
    for v in list(comp.get("verdicts", {}).values()) + [v for d in comp.get("path_verdicts", {}).values()
                                                          for v in d.values()]:
        out.print(f"verdict: {v.get('sentence')}", markup=False)
    if not comp.get("verdicts"):
        out.print("no verdict: see report.md (timing modes differ, or a side has no samples)", markup=False)
    out.print(f"report: {final / 'report.html'}\nbundle: {final}\narchive: {tar}\nexit code: {code}", markup=False)
    return code
