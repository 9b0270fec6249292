"""report.html: one self-contained page per bundle, beside its report.md.

The page has no script and loads nothing: plots are embedded as data: URIs, the CSS is inline,
and a Content-Security-Policy forbids every other source, so it renders the same offline, from a
CI artifact or a mail attachment. Order: the verdict first, then the tables, plots, breakdown,
runs, the manifest's facts and the reproducer.

A run bundle has no report.md of its own (evaluate writes samples, summary and plots): `write()`
writes one from summary.json, junit.xml, stages.json and manifest.json, with the breakdown's
stacked bars (breakdown.png). A comparison bundle's report.md comes from compare.write_report.

`check_in_browser()` renders a page in headless Chromium (Debian's `chromium`): a screenshot that
must not be blank, and no console message (the page runs no script, so any message, such as a
blocked load, is a defect).
"""

import base64
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TestbedError

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_EMBED_BYTES = 20 << 20  # one plot; a larger file is left out, not embedded
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAT_KEYS = ("n", "min", "mean", "median", "p90", "p99", "p999", "max", "stddev")
CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232a;
background:#fff;margin:0;padding:24px 32px 48px;max-width:1500px}
h1{font-size:1.6em;margin:.2em 0 .4em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #d8dee4;
padding-bottom:.2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
td:not(:first-child){font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #e5e8eb;margin:.4em 0}
code{background:#f1f3f5;padding:0 .25em;border-radius:3px;font-size:.92em}
pre{background:#f6f8fa;border:1px solid #d8dee4;padding:10px;overflow-x:auto;white-space:pre-wrap;font-size:12.5px}
blockquote{margin:.6em 0;padding:.3em 1em;border-left:4px solid #c8d1da;color:#444;background:#fbfbfc}
.verdict{padding:12px 16px;border-radius:6px;margin:.6em 0 1.2em;font-size:1.05em;border:1px solid}
.verdict.passed{background:#e9f7ee;border-color:#46a35e}.verdict.measurement{background:#fff6e0;border-color:#d59b1d}
.verdict.failed{background:#fdecec;border-color:#cf3d3d}.verdict.unknown{background:#f1f3f5;border-color:#999}
.facts td:first-child{font-weight:600;white-space:nowrap}.missing{color:#a33;font-style:italic}
footer{margin-top:3em;color:#666;font-size:12px}
"""


class BrowserError(TestbedError):
    """Chromium is missing, failed, or the page it rendered is blank or logged console messages."""


# ------------------------------------------------------------------ reading a bundle folder

def _json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _text(path, limit=200_000):
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


def is_comparison(folder, manifest=None):
    manifest = manifest if manifest is not None else (_json(Path(folder) / "manifest.json") or {})
    return "comparison" in manifest or (Path(folder) / "comparison.json").exists()


def junit_checks(path):
    """The measurement's checks from junit.xml (`check.*` cases) -> [{name, ok, detail}]."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("check."):
            continue
        failure = case.find("failure")
        detail = (failure.text if failure is not None else (case.findtext("system-out") or "")) or ""
        out.append({"name": name[len("check."):], "ok": failure is None, "detail": detail.strip()})
    return out


def status_of(manifest):
    """-> (css class, one sentence) for the verdict box of a run or comparison."""
    code = manifest.get("exit_code")
    if code == 0:
        return "passed", "Passed: every stage passed" + ("" if "comparison" in manifest else
                                                          " and the measurement passed its checks") + "."
    if code == 1 and "comparison" in manifest:
        return "measurement", "A run of the comparison failed its measurement checks (exit 1): see the runs."
    if code == 1:
        failed = ", ".join(str(c) for c in manifest.get("failed_checks") or []) or "see the checks"
        return "measurement", f"Measurement failed its own checks (exit 1): {failed}."
    if code is None:
        return "unknown", f"Unfinished or unknown: the manifest has no exit code (status {manifest.get('status')!r})."
    stage = manifest.get("failed_stage")
    error = (manifest.get("error") or "").strip().splitlines()
    where = f" at stage `{stage}`" if stage else ""
    return "failed", f"Failed{where} (exit {code})" + (f": {error[0][:300]}" if error else ".")


# ------------------------------------------------------------------ the run report (markdown)

def run_report_markdown(folder):
    """report.md of a run bundle, from its own files; writes breakdown.png when there is a breakdown."""
    from . import breakdown, report
    folder = Path(folder)
    manifest = _json(folder / "manifest.json") or {}
    summary = _json(folder / "summary.json")
    scen = manifest.get("scenario") if isinstance(manifest.get("scenario"), dict) else {}
    name = scen.get("name") or (summary or {}).get("scenario") or folder.name
    lines = [f"# {name}: run {manifest.get('run_id', folder.name)}", ""]
    if scen.get("description"):
        lines += [str(scen["description"]), ""]
    _, sentence = status_of(manifest)
    lines += ["## Verdict", "", sentence, ""]
    checks = junit_checks(folder / "junit.xml")
    if checks:
        lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c['name']} | {'ok' if c['ok'] else '**FAILED**'} | {_cell(c['detail'])} |" for c in checks]
        lines.append("")
    if summary and summary.get("stamping", True) and isinstance(summary.get("latency_ns"), dict):
        unit = report.unit_of(summary)
        lat = summary.get(unit.key) or {}
        lines += [f"## Interrupt latency ({unit.label})", "",
                  "| " + " | ".join(STAT_KEYS) + " |", "|" + "---|" * len(STAT_KEYS),
                  "| " + " | ".join(str(lat.get(k, "–")) if k == "n" else unit.show(lat.get(k)) for k in STAT_KEYS)
                  + " |", ""]
        cal = summary.get("calibration") or {}
        unpaired = summary.get("unpaired_pct")
        lines += [f"Paired {summary.get('paired', '–')}; unpaired "
                  f"{'–' if unpaired is None else f'{unpaired:.2f} %'} (VMM {summary.get('lonely_vmm', '–')}, guest "
                  f"{summary.get('unpaired_guest', '–')}); coalesced VMM entries {summary.get('coalesced_vmm', '–')}; "
                  f"IRQ mode in the guest: {summary.get('irq_mode_guest', '–')}; accelerator "
                  f"{summary.get('accelerator', '–')}; timing {summary.get('timing', 'host')}"
                  + (f"; calibration {cal['ticks']} ticks for {cal['instructions']} instructions"
                     if "ticks" in cal and "instructions" in cal else "") + ".", ""]
        lines += _pacing_line(summary.get("pacing"))
        if summary.get("note"):
            lines += [f"> {summary['note']}", ""]
        for png, alt in (("latency-histogram.png", "histogram"), ("latency-cdf.png", "CDF")):
            if (folder / png).exists():
                lines += [f"![{alt}]({png})", ""]
        lines += _run_breakdown(folder, name, summary, breakdown, report)
        lines += _run_vcpu_split(summary)
    elif summary:
        lines += ["## Measurement", "", "Stamping was off: no latencies (a probe-cost run).", ""]
    else:
        lines += ["## Measurement", "", "No summary.json: this run measured nothing, or stopped before the "
                  "evaluation.", ""]
    if summary and summary.get("traffic"):
        lines += ["## Traffic", "", "| stream | frames sent | send errors |", "|---|---|---|"]
        lines += [f"| {k} | {v.get('frames', '–')} | {v.get('send_errors', '–')} |"
                  for k, v in summary["traffic"].items() if isinstance(v, dict)]
        absorbed = summary.get("absorbed") or {}
        lines += ["", "Absorbed: " + ", ".join(f"{k} {v}" for k, v in absorbed.items()), ""]
    stages = _json(folder / "stages.json")
    if isinstance(stages, list) and stages:
        lines += ["## Stages", "", "| stage | status | seconds | detail |", "|---|---|---|---|"]
        for r in stages:
            if isinstance(r, dict):
                secs = r.get("seconds")
                lines.append(f"| {r.get('name')} | {r.get('status')} | "
                             f"{secs:.1f} | {_cell(r.get('detail', ''))} |" if isinstance(secs, (int, float)) else
                             f"| {r.get('name')} | {r.get('status')} | – | {_cell(r.get('detail', ''))} |")
        lines.append("")
    lines += [f"Reproduce: `make testbed run SCENARIO={name}` from the commit in the manifest (see reproducer.sh).",
              ""]
    return "\n".join(lines)


def _run_vcpu_split(summary):
    """summary.json's vcpu_split: the elapsed ticks next to the RT pCPU's own instructions."""
    split = summary.get("vcpu_split")
    if not isinstance(split, dict) or not isinstance(split.get("paths"), dict):
        return []
    lines = ["## Whose instructions a span holds", "",
             f"{split.get('split', '–')} of {split.get('samples', '–')} samples split by the vCPU plugin "
             f"(RT pCPU {split.get('rt_pcpu', '–')}); median / p99. `rt_own`: the RT pCPU's own instructions, "
             "`others`: the other vCPUs' inside the span, `idle_skipped`: ticks QEMU skipped with every vCPU idle.",
             "", "| path | n | elapsed | rt_own | others | idle_skipped |", "|---|---|---|---|---|---|"]
    for path, g in split["paths"].items():
        if not isinstance(g, dict):
            continue
        cells = [f"{_t((g.get(k) or {}).get('median'))} / {_t((g.get(k) or {}).get('p99'))}"
                 for k in ("elapsed", "rt_own", "others", "idle_skipped")]
        lines.append(f"| {path} | {g.get('n', '–')} | " + " | ".join(cells) + " |")
    return lines + [""]


def _pacing_line(pacing):
    """How the frames were paced: by the host's clock, or at the plugin's gates (and what that came to in guest time)."""
    if not pacing:
        return ["Traffic paced by the host's clock.", ""]
    nics = "; ".join(f"{role} NIC {c['arrived']:,} of {c['sent']:,} frames in, "
                     + (f"{c['frames_per_guest_s']:,.0f} per guest second" if c.get("frames_per_guest_s") else "–")
                     for role, c in pacing.get("chunks", {}).items())
    return [f"Traffic paced by instructions: {pacing.get('gates', 0):,} gates every {pacing.get('step', 0):,} "
            f"{pacing.get('clock') or 'instructions of all pCPUs'}, "
            f"{'on schedule' if pacing.get('on_schedule') else 'NOT on schedule'}; {nics}.", ""]


def _run_breakdown(folder, name, summary, breakdown, report):
    groups = summary.get("breakdown")
    paths = summary.get("paths")
    lines = []
    if paths:
        lines += ["## Breakdown of the path", "", "Paths: " + ", ".join(f"{p} {paths.get(p, 0)}" for p in breakdown.PATHS)
                  + f"; path records {summary.get('path_records', '–')}.", ""]
    if not isinstance(groups, dict) or not groups:
        return lines
    head = "| path | n | latency median / p99 | " + " | ".join(breakdown.SEGMENT_NAMES) + " |"
    lines += ["Ticks, median / p99 per segment. " + "; ".join(f"`{n}` {d}" for n, d in breakdown.SEGMENTS) + ".",
              "", head, "|" + "---|" * (3 + len(breakdown.SEGMENT_NAMES))]
    for path, g in groups.items():
        if not isinstance(g, dict) or not g.get("n"):
            continue
        cells = [f"{_t((g.get(seg) or {}).get('median'))} / {_t((g.get(seg) or {}).get('p99'))}"
                 for seg in breakdown.SEGMENT_NAMES]
        lat = g.get("latency") or {}
        lines.append(f"| {path} | {g['n']} | {_t(lat.get('median'))} / {_t(lat.get('p99'))} | " + " | ".join(cells) + " |")
    lines.append("")
    plottable = all(isinstance(g, dict) and all("bar" in (g.get(seg) or {}) for seg in breakdown.SEGMENT_NAMES)
                    for g in groups.values())
    if plottable and any(p not in ("all", "unmatched") and g.get("n") for p, g in groups.items()):
        report.plot_breakdown({name: groups}, folder / "breakdown.png", f"{name}: where the ticks go (median per segment)")
        lines += ["![breakdown](breakdown.png)", ""]
    elif not plottable:
        lines += ["(No stacked bars: this summary.json comes from an older layout without per-class bar medians; "
                  "`testbed reanalyze` rebuilds it.)", ""]
    return lines


def _t(v):
    return "–" if not isinstance(v, (int, float)) else f"{v:,.0f}"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")[:400]


# ------------------------------------------------------------------ markdown -> one HTML page

def _markdown_to_html(text):
    import markdown
    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    # Raw HTML in the markdown is shown as text, never passed through: a bundle is input, not markup.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md.convert(text)


IMG = re.compile(r'<img\b([^>]*?)\bsrc="([^"]*)"([^>]*)>')
HREF = re.compile(r'\bhref="([^"]*)"')
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.png$")


def _embed_images(body, folder):
    """Each <img src="plot.png"> -> a data: URI of that file in the bundle's top folder (only plain
    PNG names, regular files, PNG magic); anything else is replaced by a note."""
    folder = Path(folder)

    def one(m):
        src = html.unescape(m.group(2))
        path = folder / src
        ok = bool(SAFE_NAME.match(src)) and path.is_file() and not path.is_symlink()
        data = path.read_bytes() if ok and path.stat().st_size <= MAX_EMBED_BYTES else b""
        if not data.startswith(PNG_MAGIC):
            return f'<span class="missing">[plot {html.escape(src)} is not in the bundle]</span>'
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        return f'<img{m.group(1)}src="{uri}"{m.group(3)}>'
    body = IMG.sub(one, body)
    # links: in-page anchors and relative files of the bundle only (no scheme, no absolute path)
    return HREF.sub(lambda m: m.group(0) if re.match(r"^(#|[A-Za-z0-9_.-][A-Za-z0-9_./-]*$)", html.unescape(m.group(1)))
                    and ".." not in m.group(1) else 'href="#"', body)


def _facts(folder, manifest):
    """The manifest's facts as (label, value) rows."""
    rows = []
    scen = manifest.get("scenario") if isinstance(manifest.get("scenario"), dict) else None
    add = lambda k, v: rows.append((k, v)) if v not in (None, "", [], {}) else None  # noqa: E731
    add("bundle", manifest.get("run_id", Path(folder).name))
    if scen:
        add("scenario", scen.get("name"))
        add("variant", (scen.get("hypervisor") or {}).get("variant"))
        add("timing", (scen.get("machine") or {}).get("timing", "host (older layout: no timing field)"))
        m = scen.get("measurement") or {}
        if m.get("enabled"):
            add("measurement", f"{m.get('bursts')} bursts × {m.get('frames_per_burst')} frames every "
                               f"{m.get('period_ms')} ms; load {'on' if m.get('load') else 'off'}")
    if "comparison" in manifest:
        add("comparison", manifest.get("comparison"))
        add("repeats", manifest.get("repeats"))
    add("status", f"{manifest.get('status')} (exit {manifest.get('exit_code')})")
    add("failed stage", manifest.get("failed_stage"))
    acc = manifest.get("accelerator")
    if isinstance(acc, dict):
        add("accelerator", f"{acc.get('used')} — {acc.get('why')}")
    add("started (UTC)", manifest.get("started_utc"))
    add("finished (UTC)", manifest.get("finished_utc"))
    add("duration", f"{manifest['duration_s']} s" if isinstance(manifest.get("duration_s"), (int, float)) else None)
    git = manifest.get("git")
    if isinstance(git, dict):
        add("produced by (git)", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}")
    re_ = manifest.get("reanalysis")
    if isinstance(re_, dict):
        code = re_.get("code") or {}
        add("reanalysed by (git)", f"{code.get('commit')}{' (dirty)' if code.get('dirty') else ''} at "
                                   f"{re_.get('utc')} from {re_.get('from')}")
    tool = manifest.get("compared_by")
    if isinstance(tool, dict):
        add("compared by (git)", f"{tool.get('commit')}{' (dirty)' if tool.get('dirty') else ''}")
    host = manifest.get("host")
    if isinstance(host, dict):
        add("host", ", ".join(f"{k} {host[k]}" for k in ("hostname", "os", "kernel", "cpu_model", "cpus", "memory_kb",
                                                         "qemu", "python") if host.get(k) is not None))
    images = manifest.get("images")
    if isinstance(images, dict):
        add("images", ", ".join(str(k) for k in images))
    for src in manifest.get("sources") or []:
        if isinstance(src, dict):
            add("source", f"{src.get('input')}: {src.get('bundle')} ({src.get('kind')}, git {src.get('commit')})")
    return rows


def _verdicts(folder):
    """A comparison's verdict sentences (comparison.json), for the box at the top of the page."""
    comp = _json(Path(folder) / "comparison.json")
    if not isinstance(comp, dict):
        return ""
    sentences = [v.get("sentence") for v in (comp.get("verdicts") or {}).values() if isinstance(v, dict)]
    for path, verdicts in (comp.get("path_verdicts") or {}).items():
        sentences += [f"{path} path only: {v.get('sentence')}" for v in (verdicts or {}).values() if isinstance(v, dict)]
    if not sentences:
        return "<br>No verdict: see the report below."
    return "<ul>" + "".join(f"<li>{html.escape(str(x))}</li>" for x in sentences if x) + "</ul>"


def build_html(folder, markdown_text=None):
    """The page of the bundle in `folder` -> HTML text. markdown_text: its report (default: report.md)."""
    folder = Path(folder)
    manifest = _json(folder / "manifest.json")
    manifest = manifest if isinstance(manifest, dict) else {}
    if markdown_text is None:
        markdown_text = _text(folder / "report.md") or "# Report\n\n(report.md is missing from this bundle)\n"
    css_class, sentence = status_of(manifest)
    scen = manifest.get("scenario") if isinstance(manifest.get("scenario"), dict) else {}
    title = manifest.get("comparison") or scen.get("name") or folder.name
    parts = ["<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             f"<title>{html.escape(str(title or folder.name))} — natsume-testbed</title>",
             f"<style>{CSS}</style></head><body>",
             f"<div class=\"verdict {css_class}\"><strong>{html.escape(sentence)}</strong>{_verdicts(folder)}</div>",
             _embed_images(_markdown_to_html(markdown_text), folder)]
    runs = sorted(p for p in (folder / "runs").iterdir() if p.is_dir()) if (folder / "runs").is_dir() else []
    if runs:
        parts.append("<h2>Run bundles</h2><ul>")
        for r in runs:
            m = _json(r / "manifest.json") or {}
            link = f"runs/{r.name}/report.html"
            label = html.escape(r.name)
            item = f'<a href="{html.escape(link)}">{label}</a>' if (r / "report.html").exists() else label
            parts.append(f"<li>{item} — {html.escape(str(m.get('status')))} (exit {html.escape(str(m.get('exit_code')))})"
                         "</li>")
        parts.append("</ul>")
    rows = _facts(folder, manifest)
    parts.append("<h2>Manifest</h2>")
    if rows:
        parts.append("<table class=\"facts\">" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>")
    else:
        parts.append("<p class=\"missing\">manifest.json is not written yet or unreadable.</p>")
    reproducer = _text(folder / "reproducer.sh", 20_000)
    parts.append("<h2>Reproducer</h2>")
    parts.append(f"<pre>{html.escape(reproducer)}</pre>" if reproducer else
                 "<p class=\"missing\">reproducer.sh is not written yet.</p>")
    parts.append("<footer>Self-contained page written by natsume-testbed (orchestrator/report_html.py): no script, "
                 "nothing loaded from outside.</footer></body></html>\n")
    return "\n".join(parts)


def write(folder, strict=False):
    """Write report.html (and, for a run bundle, report.md and breakdown.png) into the bundle folder;
    -> the path of report.html. Not strict (the finish-time hook): a failure writes a small page that
    names the error instead of raising, so a report never costs a run its bundle."""
    folder = Path(folder)
    target = folder / "report.html"
    try:
        text = None
        if not is_comparison(folder):
            text = run_report_markdown(folder)
            (folder / "report.md").write_text(text)
        target.write_text(build_html(folder, text))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        if strict:
            raise
        target.write_text(f"<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv="
                          f"\"Content-Security-Policy\" content=\"{CSP}\"><title>report error</title></head><body>"
                          f"<h1>The report could not be built</h1><pre>{html.escape(repr(exc))}</pre></body></html>\n")
    return target


# ------------------------------------------------------------------ headless Chromium

@dataclass
class BrowserCheck:
    png: Path
    width: int
    height: int
    variance: float  # of the grey levels; 0 for a blank page
    console: list = field(default_factory=list)  # console lines Chromium logged (none expected)

    @property
    def blank(self):
        return self.variance < 1.0

    @property
    def ok(self):
        return not self.blank and not self.console

    def problems(self):
        out = [f"the screenshot is blank (grey-level variance {self.variance:.3f})"] if self.blank else []
        return out + [f"console: {line}" for line in self.console]


def chromium_binary():
    for name in (os.environ.get("TESTBED_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CONSOLE_LINE = re.compile(r":CONSOLE[:(]|Uncaught")


def check_in_browser(html_path, png_path, size=(1280, 2200), timeout=90):
    """Render html_path in headless Chromium, save the screenshot to png_path -> BrowserCheck.
    Raises BrowserError when Chromium is missing or produces no screenshot."""
    binary = chromium_binary()
    if binary is None:
        raise BrowserError("chromium is not installed: `apt-get install chromium` (images/install-host-deps.sh "
                           "installs it)")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.unlink(missing_ok=True)
    profile = tempfile.mkdtemp(prefix="testbed-chromium-")
    argv = [binary, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            f"--window-size={size[0]},{size[1]}", f"--screenshot={png_path}", html_path.as_uri()]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group: the renderer and GPU helpers too
            proc.communicate()
            raise BrowserError(f"chromium did not finish rendering {html_path} within {timeout} s") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if not png_path.exists():
        tail = "\n    ".join(stderr.strip().splitlines()[-15:])
        raise BrowserError(f"chromium (exit {proc.returncode}) wrote no screenshot of {html_path}:\n    {tail}")
    width, height, variance = png_stats(png_path)
    console = [line.strip()[:500] for line in stderr.splitlines() if CONSOLE_LINE.search(line)]
    return BrowserCheck(png_path, width, height, variance, console)


def png_stats(path):
    """-> (width, height, variance of the grey levels)."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"), dtype=float)
    return grey.shape[1], grey.shape[0], float(grey.var())
