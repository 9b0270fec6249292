"""`testbed run <comparison>`: several scenarios in one invocation on one host, each run
`repeats` times interleaved (A B A B ...), then the paper's Figure 2 as a table, bootstrap
confidence intervals and a verdict per scenario against the baseline, the breakdown of
each run's path, an overlaid CDF and a box plot, in one bundle. Each run keeps its own full
bundle under runs/."""

import dataclasses
import json
import threading
import time

from rich.markup import escape

from . import analysis, breakdown, bundle, images, progress, report, verdict
from .errors import EXIT_INFRA, EXIT_OK, ImageError
from .run import BootPool, Outcome, run
from .stages import StageResult, StageRunner

VERDICT_STATS = ("median", "mean", "p99")  # the statistics with a CI; the verdict sentence uses the first
PATH_VERDICT = "running"  # a second verdict on this path class alone (breakdown.PATHS)


def run_comparison(scenario_file, comp, results_dir, say, sets=(), user_sets=(), ensure_images=images.ensure):
    """Every run of the schedule, then the report; -> Outcome (its `runs` holds each run's Outcome).
    `sets` are the --set overrides already in comp's scenarios (a sweep point's included), kept in
    each run's manifest and reproducer; `user_sets` those of the command line alone."""
    bundle.check_results_folder(results_dir)
    b = bundle.Bundle(results_dir, comp.name)
    bundle.copy_into(scenario_file, b.config, "testbed.yaml")
    runner = StageRunner(report=lambda r: None)
    outcomes = []
    schedule = comp.schedule() if _images_first(comp, say, runner, ensure_images) else []
    with progress.task(f"{comp.name}: runs", total=len(schedule), unit="runs") as advance:
        interrupted = _run_schedule(scenario_file, comp, schedule, b, say, runner, outcomes, sets, advance)
    text = write_report(comp, outcomes, b.dir) if outcomes else _no_runs_report(comp, runner, b.dir)
    code = max((o.code for _, o in outcomes), default=EXIT_INFRA)
    manifest = {"comparison": comp.name, "description": comp.description, "repeats": comp.repeats,
                "reuse_boot": comp.reuse_boot,
                "overrides": list(sets),
                "exit_code": code, "status": "passed" if code == EXIT_OK else "failed", "git": bundle.git_state(),
                "host": bundle.host_facts(),
                "runs": [{"scenario": s.name, "exit_code": o.code, "bundle": f"runs/{o.bundle.name}"}
                         for s, o in outcomes]}
    report.junit(b.dir / "junit.xml", f"testbed.{comp.name}", runner.results,
                 [c for _, o in outcomes for c in (o.checks or [])])
    if comp.point:  # a sweep point: rerun as its comparison's --point, the user's own --set only
        manifest.update(sweep_of=comp.source, point=comp.point, overrides=list(user_sets))
    final, tar = b.finish(manifest, runner, bundle.reproducer(comp.source or comp.name, b.run_id,
                                                            manifest["git"]["commit"], manifest["overrides"],
                                                            point=comp.point or None))
    for _, o in outcomes:  # the runs moved with the comparison's folder when it was renamed into place
        o.bundle = final / "runs" / o.bundle.name
    checks = [c for _, o in outcomes for c in (o.checks or [])]
    return Outcome(code, final, tar, runner, checks=checks, interrupted=interrupted, runs=outcomes, report=text)


PORT_STEP = 100  # kept machines are up side by side: scenario k of a comparison uses its ports + k * PORT_STEP


def own_ports(s, k):
    """The scenario with its NICs' UDP ports moved by k * PORT_STEP (a second machine kept up beside the first)."""
    nics = s.nics
    moved = {role: dataclasses.replace(getattr(nics, role), udp_port=getattr(nics, role).udp_port + k * PORT_STEP)
             for role in ("measured", "load")}
    return dataclasses.replace(s, nics=dataclasses.replace(nics, **moved))


def _run_schedule(scenario_file, comp, schedule, b, say, runner, outcomes, sets, advance):
    """Each run of the schedule into b/runs/ (outcomes appended); -> True if a signal stopped it.
    With comp.reuse_boot the repeats of a scenario measure one boot of it (run.BootPool)."""
    if not comp.reuse_boot:
        return _play(scenario_file, comp, schedule, b, say, runner, outcomes, sets, advance, None)
    index = {sc.name: k for k, sc in enumerate(comp.scenarios)}
    schedule = [(repeat, own_ports(s, index[s.name])) for repeat, s in schedule]
    with BootPool(say, runner) as pool:
        first = len(comp.scenarios) if _boots_side_by_side(comp) else 0
        if first and _first_round(scenario_file, comp, schedule[:first], b, say, runner, outcomes, sets, advance, pool):
            return True
        return _play(scenario_file, comp, schedule[first:], b, say, runner, outcomes, sets, advance, pool,
                     start=first)


def _boots_side_by_side(comp):
    """Each scenario's first run boots at the same time as the others' (one host core per QEMU): under
    instruction timing a boot's speed does not change what is measured, and only one machine runs
    while a run measures (the others paused)."""
    return len(comp.scenarios) > 1 and all(sc.machine.timing == "instructions" for sc in comp.scenarios)


def _first_round(scenario_file, comp, round_, b, say, runner, outcomes, sets, advance, pool):
    """Repeat 1 of every scenario: the machines boot side by side, then measure one after the other in
    schedule order; -> True if a signal stopped it. Each run's thread stays alive until the pool has
    shut the machines down: QEMU dies with the thread that started it (PR_SET_PDEATHSIG)."""
    turns = [threading.Event() for _ in round_]
    finished = [threading.Event() for _ in round_]
    done = [None] * len(round_)

    def one(k, s):
        tagged = lambda text: say(f"{escape(f'[{s.name}]')} {text}")  # noqa: E731 - two runs print at once
        t0 = time.monotonic()
        try:
            done[k] = (run(scenario_file, s, b.dir / "runs", tagged, pack=False, sets=sets, pool=pool,
                           turn=turns[k]), time.monotonic() - t0)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            done[k] = exc
        finished[k].set()
        pool.released.wait()

    def stop_all(wait_s=30):
        pool.abort()
        for turn in turns:
            turn.set()
        for event in finished:
            event.wait(wait_s)

    say(f"[bold]── {comp.name}: runs 1-{len(round_)}/{len(comp.schedule())}: "
        f"{', '.join(s.name for _, s in round_)} boot side by side, then measure in turn[/bold]")
    for k, (_, s) in enumerate(round_):
        threading.Thread(target=one, args=(k, s), name=f"boot-{s.name}", daemon=True).start()
    try:
        for k, (repeat, s) in enumerate(round_):
            turns[k].set()
            finished[k].wait()
            if isinstance(done[k], BaseException):
                stop_all()
                raise done[k]
            outcome, seconds = done[k]
            if _record(s, repeat, outcome, seconds, outcomes, runner, advance):
                stop_all()
                return True
    except KeyboardInterrupt:
        stop_all()
        for k, (repeat, s) in enumerate(round_):  # what finished is reported
            if isinstance(done[k], tuple) and all(o is not done[k][0] for _, o in outcomes):
                _record(s, repeat, done[k][0], done[k][1], outcomes, runner, advance)
        return True
    return False


def _record(s, repeat, outcome, seconds, outcomes, runner, advance):
    """One finished run into the comparison; -> True if a signal stopped it (nothing more starts)."""
    outcomes.append((s, outcome))
    advance()
    status = "passed" if outcome.code == EXIT_OK else "failed"
    runner.results.append(StageResult(f"run:{s.name}#{repeat}", status, seconds,
                                      f"exit {outcome.code}, bundle runs/{outcome.bundle.name}"))
    return bool(outcome.interrupted)


def _play(scenario_file, comp, schedule, b, say, runner, outcomes, sets, advance, pool, start=0):
    """The runs one after the other (after a first round, from run start + 1); -> True if a signal stopped it."""
    total = start + len(schedule)
    for i, (repeat, s) in enumerate(schedule, start=start + 1):
        say(f"[bold]── {comp.name}: run {i}/{total}: scenario {s.name}, repeat {repeat}/{comp.repeats}[/bold]")
        t0 = time.monotonic()
        outcome = run(scenario_file, s, b.dir / "runs", say, pack=False, sets=sets, pool=pool)
        if _record(s, repeat, outcome, time.monotonic() - t0, outcomes, runner, advance):
            say(f"[yellow]interrupted: {total - i} run(s) of {comp.name} not started[/yellow]")
            return True
    return False


def _images_first(comp, say, runner, ensure_images):
    """Every variant's images before the first run, so the runs follow each other with no build
    between them (a Natsume hypervisor takes minutes); -> False if a build failed (no run starts)."""
    variants = sorted({s.hypervisor.variant for s in comp.scenarios})
    t0 = time.monotonic()
    try:
        for variant in variants:
            ensure_images(variant, progress=say)
    except ImageError as exc:
        runner.results.append(StageResult("images", "failed", time.monotonic() - t0, str(exc).splitlines()[0],
                                          message=str(exc)))
        say(f"[red]images failed[/red]: no run of {comp.name} started")
        return False
    runner.results.append(StageResult("images", "passed", time.monotonic() - t0,
                                      f"the images of {', '.join(variants)} in the cache before the first run"))
    return True


def _no_runs_report(comp, runner, folder):
    failed = next(r for r in runner.results if r.status == "failed")
    text = f"# Comparison {comp.name}\n\nNo run started: stage {failed.name} failed.\n\n```\n{failed.message}\n```\n"
    (folder / "report.md").write_text(text)
    return text


def _load_run(outcome):
    """-> (summary, [(Sample, Breakdown|None)]) or (None, []) for a run without samples."""
    summary_path = outcome.bundle / "summary.json"
    samples_path = outcome.bundle / "samples.csv"
    if not summary_path.exists() or not samples_path.exists():
        return None, []
    return json.loads(summary_path.read_text()), analysis.read_samples_csv(samples_path)


def _unit(measured):
    """The one display unit of the comparison; runs in different timing modes do not compare."""
    timings = {summary.get("timing", "host") for summary, _ in measured}
    if len(timings) > 1:
        return None
    return report.UNITS[timings.pop()] if timings else report.UNITS["host"]


def write_report(comp, outcomes, folder):
    """report.md + comparison.json + overlaid plots; -> the markdown text."""
    runs = [(s, o, *_load_run(o)) for s, o in outcomes]
    measured = [(summary, rows) for _, _, summary, rows in runs if summary is not None and rows]
    unit = _unit(measured)
    by_scenario = {s.name: [] for s in comp.scenarios}  # name -> per-run latency lists, in run order
    by_path = {s.name: [] for s in comp.scenarios}  # the same, only interrupts on the PATH_VERDICT path
    for s, _, summary, rows in runs:
        if unit is not None and summary is not None and rows:
            by_scenario[s.name].append([getattr(x, unit.key) for x, _ in rows])
            on_path = [getattr(x, unit.key) for x, b in rows if b is not None and b.path == PATH_VERDICT]
            if len(on_path) >= 2:
                by_path[s.name].append(on_path)
    baseline = comp.scenarios[0].name
    accel = next((summary["accelerator"] for summary, _ in measured), "unknown")
    lines = [f"# {comp.name}: interrupt latency, side by side", "", comp.description, ""]
    verdicts, results, path_verdicts, path_results = {}, {}, {}, {}
    if unit is None:
        lines += ["**No comparison**: the runs were made in different timing modes (instructions and host).", ""]
    elif by_scenario[baseline] and any(by_scenario[n] for n in by_scenario if n != baseline):
        verdicts, results = _verdicts(by_scenario, baseline, unit)
        path_verdicts, path_results = ({}, {}) if not by_path[baseline] else _verdicts(by_path, baseline, unit)
        lines += ["## Verdict", ""] + [f"- {v.sentence}" for v in verdicts.values()]
        lines += [f"- interrupts on the `{PATH_VERDICT}` path only (the RT vCPU was running: the part of the path "
                  f"Natsume changes, without the scheduler's waits): {v.sentence}" for v in path_verdicts.values()] + [""]
        lines += [f"> {report.EMULATION_NOTE.format(accel=accel)} {report.TIMING_NOTES[unit.timing]} "
                  f"Runs were interleaved ({comp.repeats} per scenario) in this one invocation, on one host, with "
                  "identical traffic and load settings.", ""]
        pooled = {name: [v for r in lists for v in r] for name, lists in by_scenario.items() if lists}
        stats = {name: analysis.stats(values) for name, values in pooled.items()}
        report.plot_cdf(pooled, folder / "latency-cdf.png", f"{comp.name}: latency CDF", unit)
        report.plot_box(pooled, folder / "latency-box.png", f"{comp.name}: latency", unit)
        lines += ["## Figure 2 as a table", "", f"Baseline: `{baseline}`. Improvement = (baseline − run) / baseline; "
                  "all runs of a scenario pooled.", "", report.figure2_table(stats, baseline, unit), "",
                  "## Confidence intervals", "", _ci_table(results, unit), "",
                  "## Run-to-run spread", "", _spread_table(by_scenario, unit), "",
                  "![CDF](latency-cdf.png)", "", "![box plot](latency-box.png)", ""]
        lines += _breakdown_section(runs, unit, folder, comp)
        lines += _vcpu_section(runs)
    else:
        lines += ["**No comparison**: the baseline or every other run has no samples (see the runs below).", ""]
    lines += _runs_table(runs)
    lines += ["", "Reproduce: `make testbed run SCENARIO=" + comp.name + "` (see reproducer.sh).", ""]
    text = "\n".join(lines)
    (folder / "report.md").write_text(text)
    (folder / "comparison.json").write_text(json.dumps(
        {"baseline": baseline, "timing": unit.timing if unit else None, "unit": unit.label if unit else None,
         "repeats": comp.repeats, "statistics": results,
         "verdicts": {name: v.__dict__ for name, v in verdicts.items()},
         "path_verdicts": {PATH_VERDICT: {name: v.__dict__ for name, v in path_verdicts.items()}},
         "path_statistics": {PATH_VERDICT: path_results},
         "exit_codes": [[s.name, o.code] for s, o in outcomes]}, indent=2, default=list) + "\n")
    return text  # report.html follows in Bundle.finish, once the manifest is there


def _verdicts(by_scenario, baseline, unit):
    """Bootstrap every other scenario against the baseline -> ({name: Verdict}, {name: result})."""
    others = {name: runs for name, runs in by_scenario.items() if name != baseline and runs}
    results = verdict.compare_to_baseline(by_scenario[baseline], others, stats=VERDICT_STATS)
    verdicts = {name: verdict.verdict(result, VERDICT_STATS[0], baseline_name=baseline, other_name=name,
                                      unit=unit.label) for name, result in results.items()}
    return verdicts, results


def _ci_table(results, unit):
    pct = lambda r: "–" if r is None else f"{100 * (r - 1):+.1f} %"  # noqa: E731
    lines = [f"| scenario | statistic | baseline | other | difference ({unit.label}) | 95 % CI | ratio | 95 % CI |",
             "|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for stat, e in result["stats"].items():
            lo, hi = e["difference_ci"]
            ratio_ci = "–" if e["ratio_ci"] is None else f"{pct(e['ratio_ci'][0])} to {pct(e['ratio_ci'][1])}"
            lines.append(f"| {name} | {stat} | {unit.show(e['baseline'])} | {unit.show(e['other'])} | "
                         f"{unit.show(e['difference'])} | {unit.show(lo)} to {unit.show(hi)} | {pct(e['ratio'])} | "
                         f"{ratio_ci} |")
    return "\n".join(lines)


def _spread_table(by_scenario, unit):
    lines = ["| scenario | runs | per-run medians | spread (max − min) / median |", "|---|---|---|---|"]
    for name, runs in by_scenario.items():
        if not runs:
            continue
        spread = verdict.run_spread(runs)
        rel = spread["relative_spread"]
        lines.append(f"| {name} | {len(runs)} | {', '.join(unit.show(v) for v in spread['values'])} | "
                     f"{'–' if rel is None else f'{100 * rel:.2f} %'} |")
    return "\n".join(lines)


def _breakdown_section(runs, unit, folder, comp):
    """Per scenario (runs pooled): path classes, and each segment's median and p99 (ticks)."""
    per = {}
    for s, _, summary, rows in runs:
        if summary is None or not rows or rows[0][1] is None:
            continue
        entry = per.setdefault(s.name, ([], []))
        entry[0].extend(b for _, b in rows)
        entry[1].extend(x.latency_ticks for x, _ in rows)
    if not per:
        return []
    stats = {name: breakdown.segment_stats(b, lat) for name, (b, lat) in per.items()}
    report.plot_breakdown(stats, folder / "breakdown.png", f"{comp.name}: where the ticks go (median per segment)")
    head = "| scenario | path | n | latency median / p99 | " + " | ".join(breakdown.SEGMENT_NAMES) + " |"
    lines = ["## Breakdown of the path (TSC ticks; median / p99 per segment)", "",
             "Segments: " + "; ".join(f"`{n}` {d}" for n, d in breakdown.SEGMENTS) + ".", "",
             head, "|" + "---|" * (4 + len(breakdown.SEGMENT_NAMES))]
    for name, groups in stats.items():
        for path, g in groups.items():
            if not g["n"]:
                continue
            cells = [f"{_t(g[seg]['median'])} / {_t(g[seg]['p99'])}" for seg in breakdown.SEGMENT_NAMES]
            lines.append(f"| {name} | {path} | {g['n']} | {_t(g['latency']['median'])} / {_t(g['latency']['p99'])} | "
                         + " | ".join(cells) + " |")
    return lines + ["", "![breakdown](breakdown.png)", ""]


def _vcpu_section(runs):
    """Per scenario and path class: the elapsed ticks next to the RT pCPU's own instructions, the other
    vCPUs' and the skipped idle time (the vCPU plugin's split; runs pooled)."""
    from .vcpucount import SPLIT_COLUMNS
    per = {}
    for s, _, summary, rows in runs:
        for x, b in rows or ():
            if x.rt_own is None:
                continue
            for group in ("all", b.path if b is not None else None):
                if group:
                    per.setdefault((s.name, group), []).append(x)
    if not per:
        return []
    cols = ("latency_ticks",) + SPLIT_COLUMNS
    lines = ["## Whose instructions a span holds (median / p99)", "",
             "Single-threaded TCG runs the vCPUs round robin and the guest TSC counts every vCPU's instructions "
             "(and the idle time QEMU skipped): `rt_own` is the RT pCPU's own work from Xen's entry to the guest's "
             "handler, `others` the instructions the other vCPUs ran inside the span, `idle_skipped` the ticks "
             "skipped with every vCPU idle (counted by the TCG plugin images/plugin/vcpucount.c).", "",
             "| scenario | path | n | elapsed | rt_own | others | idle_skipped |", "|---|---|---|---|---|---|---|"]
    for (name, group), xs in per.items():
        cells = []
        for c in cols:
            values = sorted(getattr(x, c) for x in xs)
            cells.append(f"{_t(analysis.percentile(values, 0.5))} / {_t(analysis.percentile(values, 0.99))}")
        lines.append(f"| {name} | {group} | {len(xs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _t(v):
    return "–" if v is None else f"{v:,.0f}"


def _runs_table(runs):
    lines = ["## Runs", "", "| scenario | variant | timing | exit | paired | unpaired | coalesced VMM entries | "
             "paths (running / woken / coalesced / no notify / unmatched) | calibration (ticks per instruction) | "
             "traffic sent (measured / load) | RT guest rx | Natsume fast-path IRQs | bundle |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, o, summary, _ in runs:
        summary = summary or {}
        traffic = summary.get("traffic", {})
        sent = " / ".join(str(traffic.get(k, {}).get("frames", "–")) for k in ("measured", "load"))
        paths = summary.get("paths")
        paths = " / ".join(str(paths.get(p, 0)) for p in breakdown.PATHS) if paths else "–"
        cal = summary.get("calibration") or {}
        cal = f"{cal['ticks_per_instruction']:.5f}" if "ticks_per_instruction" in cal else "–"
        fast = summary.get("natsume_fast_path_irqs")
        unpaired = f"{summary['unpaired_pct']:.2f} %" if "unpaired_pct" in summary else "–"
        lines.append(f"| {s.name} | {s.hypervisor.variant} | {summary.get('timing', '–')} | {o.code} | "
                     f"{summary.get('paired', '–')} | {unpaired} | {summary.get('coalesced_vmm', '–')} | {paths} | "
                     f"{cal} | {sent} | {summary.get('absorbed', {}).get('rt_guest_rx', '–')} | "
                     f"{'–' if fast is None else fast} | runs/{o.bundle.name} |")
    return lines
