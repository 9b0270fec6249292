"""`testbed run <comparison>`: several scenarios, one after the other, in one
invocation on one host, then the paper's Figure 2 as a table, an overlaid CDF
and a box plot in one bundle. Each scenario keeps its own full bundle under
runs/<scenario>/."""

import json
import time

from . import analysis, bundle, report
from .errors import EXIT_OK
from .run import run
from .stages import StageResult, StageRunner


def run_comparison(scenario_file, comp, results_dir, say):
    b = bundle.Bundle(results_dir, comp.name)
    bundle.copy_into(scenario_file, b.config, "testbed.yaml")
    runner = StageRunner(report=lambda r: None)
    outcomes = []
    for s in comp.scenarios:
        say(f"[bold]── {comp.name}: scenario {s.name} ({len(outcomes) + 1}/{len(comp.scenarios)})[/bold]")
        t0 = time.monotonic()
        outcome = run(scenario_file, s, b.dir / "runs", say, pack=False)
        outcomes.append((s, outcome))
        status = "passed" if outcome.code == EXIT_OK else "failed"
        runner.results.append(StageResult(f"run:{s.name}", status, time.monotonic() - t0,
                                          f"exit {outcome.code}, bundle runs/{outcome.bundle.name}"))
    text = write_report(comp, outcomes, b.dir)
    code = max(o.code for _, o in outcomes)
    manifest = {"comparison": comp.name, "description": comp.description, "exit_code": code,
                "status": "passed" if code == EXIT_OK else "failed", "git": bundle.git_state(),
                "host": bundle.host_facts(),
                "runs": [{"scenario": s.name, "exit_code": o.code, "bundle": f"runs/{o.bundle.name}"}
                         for s, o in outcomes]}
    report.junit(b.dir / "junit.xml", f"testbed.{comp.name}", runner.results,
                 [c for _, o in outcomes for c in (o.checks or [])])
    final, tar = b.finish(manifest, runner, bundle.reproducer(comp.name, b.run_id, manifest["git"]["commit"]))
    for _, o in outcomes:  # the runs moved with the comparison's folder when it was renamed into place
        o.bundle = final / "runs" / o.bundle.name
    return code, final, tar, runner, outcomes, text


def _load_run(outcome):
    summary_path = outcome.bundle / "summary.json"
    samples_path = outcome.bundle / "samples.csv"
    if not summary_path.exists() or not samples_path.exists():
        return None, []
    summary = json.loads(summary_path.read_text())
    return summary, [x.latency_ns for x in analysis.read_samples_csv(samples_path)]


def write_report(comp, outcomes, folder):
    """report.md + comparison.json + overlaid plots; -> the markdown text."""
    runs = {s.name: _load_run(o) for s, o in outcomes}
    baseline = comp.scenarios[0].name
    measured = {name: r for name, r in runs.items() if r[0] is not None}
    series = {name: lat for name, (_, lat) in measured.items()}
    stats = {name: summary["latency_ns"] for name, (summary, _) in measured.items()}
    accel = next((summary["accelerator"] for summary, _ in measured.values()), "unknown")
    lines = [f"# {comp.name}: interrupt latency, side by side", "", comp.description, "",
             f"> {report.EMULATION_NOTE.format(accel=accel)} All runs below were made one after the other "
             "in this one invocation, on one host, with identical traffic and load settings.", ""]
    if baseline in stats and len(stats) > 1:
        report.plot_cdf(series, folder / "latency-cdf.png", f"{comp.name}: latency CDF")
        report.plot_box(series, folder / "latency-box.png", f"{comp.name}: latency")
        lines += ["## Figure 2 as a table", "", f"Baseline: `{baseline}`. Improvement = (baseline − run) / baseline.",
                  "", report.figure2_table(stats, baseline), "",
                  "![CDF](latency-cdf.png)", "", "![box plot](latency-box.png)", ""]
    else:
        lines += ["**No comparison**: the baseline or every other run has no samples (see the runs below).", ""]
    lines += ["## Runs", "", "| scenario | variant | exit | paired | unpaired | coalesced VMM entries | "
              "traffic sent (measured / load) | RT guest rx | Natsume fast-path IRQs | bundle |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s, o in outcomes:
        summary, _ = runs[s.name]
        traffic = (summary or {}).get("traffic", {})
        sent = " / ".join(str(traffic.get(k, {}).get("frames", "–")) for k in ("measured", "load"))
        paired = summary["paired"] if summary else "–"
        unpaired = f"{summary['unpaired_pct']:.2f} %" if summary else "–"
        coalesced = (summary or {}).get("coalesced_vmm", "–")
        rx = (summary or {}).get("absorbed", {}).get("rt_guest_rx", "–")
        fast = (summary or {}).get("natsume_fast_path_irqs")
        lines.append(f"| {s.name} | {s.hypervisor.variant} | {o.code} | {paired} | {unpaired} | {coalesced} | {sent} | "
                     f"{rx} | {'–' if fast is None else fast} | runs/{o.bundle.name} |")
    lines += ["", "Reproduce: `make testbed run SCENARIO=" + comp.name + "` (see reproducer.sh).", ""]
    text = "\n".join(lines)
    (folder / "report.md").write_text(text)
    (folder / "comparison.json").write_text(json.dumps(
        {"baseline": baseline, "stats_ns": stats, "exit_codes": {s.name: o.code for s, o in outcomes}},
        indent=2) + "\n")
    return text

