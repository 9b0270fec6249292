"""The `testbed` command (also `python -m orchestrator`). Only wiring lives here."""

import argparse
import dataclasses
import json
import shlex
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from . import images, progress, render, report, scenario
from .errors import EXIT_BAD_INPUT, EXIT_OK, ScenarioError, TestbedError

ROOT = Path(__file__).resolve().parent.parent
MAX_PROBLEMS_SHOWN = 40
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
DEFAULT_FILE = ROOT / "testbed.yaml"
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _load(args):
    """The named scenario; without a name the default one (a comparison's first scenario)."""
    return scenario.load_scenario(args.file, args.scenario)


def cmd_validate(args):
    names = scenario.validate_file(args.file)
    out.print(f"[green]{escape(str(args.file))}: valid[/green] ({len(names)} scenarios and comparisons: "
              f"{', '.join(names)})")
    return EXIT_OK


def cmd_list(args):
    doc = scenario.load_file(args.file)
    default = scenario.default_name(doc)
    for kind, names, table in (("scenario", scenario.scenario_names(doc), doc["scenarios"]),
                               ("comparison", scenario.comparison_names(doc), doc.get("comparisons") or {})):
        for name in names:
            entry = table[name] if isinstance(table[name], dict) else {}
            desc = entry.get("description", "")
            desc = desc[:200] if isinstance(desc, str) else "(the description is not text: see testbed validate)"
            out.print(f"{'*' if name == default else ' '} {kind:<10} {name:<28} {desc}", markup=False)
    return EXIT_OK


def _planned_paths(s, folder):
    """Paths of a hand run: images where the cache will hold them, run files in `folder`."""
    keys = images.cache_keys(s.hypervisor.variant)
    imgs = images.Images({n: images.image_dir(n, k) for n, k in keys.items()})
    from .run import Workdir

    folder = Path(folder).resolve()
    paths = Workdir(folder).paths(imgs, folder / "console.log", folder / "share")
    for sock in (paths.serial_socket, paths.qmp_socket, paths.qga_socket, paths.monitor_socket):
        if len(sock.encode()) > UNIX_PATH_MAX:
            raise TestbedError(f"{sock}: {len(sock.encode())} bytes, longer than a unix socket path may be "
                               f"({UNIX_PATH_MAX}): choose a shorter folder")
    return imgs, paths


def _hand_accel(s):
    return "kvm" if s.machine.accel == "kvm" else "tcg"


def _hand_plugin(s, imgs, paths):
    """The vCPU counter's -plugin value once its image and Xen's symbols are built (else None)."""
    from .run import vcpu_plugin
    if imgs.vcpu_plugin is None or not imgs.vcpu_plugin.exists() or not imgs.xen_syms.exists():
        return None
    return vcpu_plugin(s, imgs, paths, _hand_accel(s))


def cmd_render(args):
    from .run import make_gate_fifos, overlay, write_dom0_initrd

    s = _load(args)
    folder = Path(args.outdir or ROOT / "build" / s.name)
    imgs, paths = _planned_paths(s, folder)
    plugin = _hand_plugin(s, imgs, paths)
    files = render.render_all(s, paths, _hand_accel(s), plugin)
    render.write_all(files, folder)
    make_gate_fifos(plugin, paths)
    Path(paths.share_dir).mkdir(exist_ok=True)
    out.print(f"rendered {len(files)} files of scenario {s.name} into {folder}/")
    if all(d.exists() for d in imgs.dirs.values()):
        write_dom0_initrd(paths.dom0_initrd, imgs, overlay(s, imgs, files))
        out.print(f"dom0 initrd (cached rootfs + this scenario's overlay): {paths.dom0_initrd}")
    else:
        out.print("[yellow]images are not built yet: `testbed images` builds them; render again for dom0's initrd[/]")
    return EXIT_OK


def cmd_qemu_cmdline(args):
    s = _load(args)
    folder = Path(args.outdir or ROOT / "build" / s.name)
    imgs, paths = _planned_paths(s, folder)
    print(shlex.join(render.qemu_argv(s, paths, _hand_accel(s), _hand_plugin(s, imgs, paths))))
    if not Path(paths.dom0_initrd).exists():
        err.print(f"note: run `testbed render {s.name} {folder}` first: it writes the dom0 initrd this command boots")
    return EXIT_OK


def cmd_images(args):
    imgs = images.ensure(args.variant, progress=lambda t: err.print(t))
    for name, d in imgs.dirs.items():
        out.print(f"{name:<18} {d}")
    return EXIT_OK


def cmd_matrix(args):
    from . import matrix

    return matrix.cmd(args)


def cmd_show(args):
    from . import bundles

    return bundles.cmd_show(args, out)


def cmd_reanalyze(args):
    from . import bundles

    return bundles.cmd_reanalyze(args, out)


def cmd_compare(args):
    from . import bundles

    return bundles.cmd_compare(args, out)


def _interrupt(signum, _frame):
    """The first SIGINT/SIGTERM stops the run (KeyboardInterrupt); later ones are only reported, so the
    teardown and the bundle they interrupt still finish (a CI cancel sends SIGTERM, then SIGKILL)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _already_stopping)
    raise KeyboardInterrupt(signal.Signals(signum).name)  # run() names the signal in the bundle


def _already_stopping(signum, _frame):
    err.print(f"{signal.Signals(signum).name} again: already stopping (QEMU shut down, the bundle finished first)")


def _handle_signals():
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)


def _with_accel(target, accel):
    """`--accel` over the scenario's machine.accel (every scenario of a comparison)."""
    def one(s):
        if accel == "kvm" and s.machine.timing == "instructions":
            raise ScenarioError([f"--accel kvm: scenario {s.name!r} uses machine.timing: instructions, which needs "
                                 "single-threaded TCG (-icount); choose a scenario with timing: host, such as "
                                 "boot-stock-host"])
        return dataclasses.replace(s, machine=dataclasses.replace(s.machine, accel=accel))
    if isinstance(target, scenario.Comparison):
        return dataclasses.replace(target, scenarios=tuple(one(s) for s in target.scenarios))
    return one(target)


def cmd_run(args):
    from .run import run

    target = scenario.load_target(args.file, args.scenario, args.sets)
    if args.accel:
        target = _with_accel(target, args.accel)
    if isinstance(target, scenario.Comparison):
        return _run_comparison(args, target)
    if args.point is not None:
        raise TestbedError(f"--point {args.point}: {target.name} is a scenario; --point picks one point of a "
                           "comparison's sweep")
    s = target
    # SIGTERM (CI cancelling, `kill`) ends the run like Ctrl-C: QEMU stopped, bundle finished.
    _handle_signals()
    out.rule(f"natsume-testbed: scenario {s.name}")
    out.print(s.description, markup=False)
    outcome = run(args.file, s, args.results, out.print, sets=args.sets)
    table = Table(title=f"stages of {outcome.bundle.name}")
    for col in ("stage", "status", "seconds", "detail"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    colors = {"passed": "green", "failed": "red", "skipped": "dim"}
    for r in outcome.runner.results:
        table.add_row(r.name, f"[{colors[r.status]}]{r.status}[/]", f"{r.seconds:.1f}", r.detail[:80])
    out.print(table)
    _print_measurement(outcome.bundle)
    for c in outcome.checks:
        mark = "[green]ok[/green]" if c["ok"] else "[red]FAILED[/red]"
        out.print(f"check {c['name']:<20} {mark}  {c['detail']}")
    if outcome.error is not None:
        err.print(f"[red]run failed[/red] at stage [bold]{outcome.runner.failed_stage()}[/bold]:")
        err.print(str(outcome.error), markup=False)
    out.print(f"bundle: {outcome.bundle}\narchive: {outcome.archive}\nexit code: {outcome.code}", markup=False)
    return outcome.code


def _soak_runs(text):
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number 1..100, got {text!r}")
    return int(text)


def cmd_soak(args):
    from .soak import DEFAULT_SCENARIOS, soak

    names = args.scenarios or list(DEFAULT_SCENARIOS)
    ports = {}
    for name in names:  # every scenario checked before the first boot
        s = scenario.load_scenario(args.file, name)
        ports[name] = (s.nics.measured.udp_port, s.nics.load.udp_port)
    _handle_signals()
    command = shlex.join(["testbed", "--file", str(args.file), "soak", *names, "--runs", str(args.runs),
                          "--jobs", str(args.jobs)])
    out.rule(f"natsume-testbed: soak, {args.runs} runs of each of {', '.join(names)}, {args.jobs} at a time")
    code, final, table = soak(Path(args.file), names, ports, args.runs, args.jobs, args.results,
                              lambda text: out.print(text, markup=False), command)
    out.print(Markdown((final / "report.md").read_text()))
    out.print(f"bundle: {final}\nexit code: {code}", markup=False)
    return code


def _run_comparison(args, comp):
    """A comparison; with a sweep, one comparison (and bundle) per point, its overrides as --set."""
    _handle_signals()
    points = comp.points()
    if args.point is not None:
        chosen = [p for p in points if p["label"] == args.point]
        if not chosen:
            raise TestbedError(f"--point {args.point}: comparison {comp.name} has "
                               + (f"the points {', '.join(p['label'] for p in points)}" if comp.sweep else "no sweep"))
        points = chosen
    if not comp.sweep:
        return _run_one_comparison(args, comp, args.sets).code
    codes = []
    for i, point in enumerate(points, 1):
        out.rule(f"sweep of {comp.name}: point {i}/{len(points)}: {point['label']} ({', '.join(point['sets'])})")
        one = scenario.load_target(args.file, comp.name, [*args.sets, *point["sets"]])
        if args.accel:
            one = _with_accel(one, args.accel)
        one = dataclasses.replace(one, name=f"{comp.name}-{point['label']}", sweep=None, source=comp.name,
                                  point=point["label"])
        outcome = _run_one_comparison(args, one, [*args.sets, *point["sets"]])
        codes.append(outcome.code)
        if outcome.interrupted:
            break
    return max(codes)


def _run_one_comparison(args, comp, sets):
    from .compare import run_comparison

    out.rule(f"natsume-testbed: comparison {comp.name} ({', '.join(s.name for s in comp.scenarios)})")
    out.print(comp.description, markup=False)
    outcome = run_comparison(args.file, comp, args.results, out.print, sets=sets, user_sets=args.sets)
    for s, o in outcome.runs:
        out.rule(f"{s.name}: exit {o.code}")
        _print_measurement(o.bundle)
    out.print(Markdown(outcome.report))
    out.print(f"bundle: {outcome.bundle}\narchive: {outcome.archive}\nexit code: {outcome.code}", markup=False)
    return outcome


def _print_measurement(bundle_dir):
    """The one-screen summary of a measurement: latency statistics and traffic counts."""
    path = bundle_dir / "summary.json"
    if not path.exists():
        return
    summary = json.loads(path.read_text())
    for name, c in summary["traffic"].items():
        out.print(f"traffic {name}: sent {c['frames']} frames, {c['send_errors']} send errors")
    out.print("absorbed: " + ", ".join(f"{k} {v}" for k, v in summary["absorbed"].items()))
    if not summary.get("stamping", True):
        out.print("stamping off: no latencies (probe-cost run)")
        return
    unit = report.unit_of(summary)
    lat = summary[unit.key]
    table = Table(title=f"interrupt latency, {summary['scenario']} ({unit.label}; timing "
                        f"{summary.get('timing', 'host')}, {summary['accelerator']})")
    for col in ("n", "min", "mean", "median", "p90", "p99", "p999", "max", "stddev"):
        table.add_column(col, justify="right")
    table.add_row(*[("–" if lat[k] is None else str(lat[k]) if k == "n" else unit.show(lat[k]))
                    for k in ("n", "min", "mean", "median", "p90", "p99", "p999", "max", "stddev")])
    out.print(table)
    out.print(f"paired {summary['paired']}; unpaired VMM {summary['lonely_vmm']}, guest {summary['unpaired_guest']} "
              f"({summary['unpaired_pct']:.2f} %); coalesced VMM entries {summary['coalesced_vmm']}; "
              f"irq mode in guest: {summary['irq_mode_guest']}")
    out.print(f"[dim]{escape(summary['note'])}[/dim]")


def build_parser():
    p = argparse.ArgumentParser(prog="testbed", description="Rebuild Natsume's evaluation in QEMU.")
    p.add_argument("--file", "-f", default=str(DEFAULT_FILE), help="scenario file (default: testbed.yaml)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="plain progress lines instead of bars (the default when stdout is not a terminal)")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("run", help="boot a scenario and write a result bundle")
    sp.add_argument("scenario", nargs="?", help="scenario name (default: the file's default_scenario)")
    sp.add_argument("--results", default=str(ROOT / "results"), help="where bundles go (default: results/)")
    sp.add_argument("--accel", choices=["auto", "kvm", "tcg"],
                    help="override machine.accel (kvm also retries KVM where an earlier probe said no)")
    sp.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD.PATH=VALUE",
                    help="override one scenario field for this run (repeatable), e.g. nics.measured.udp_port=40110; "
                         "kept in the manifest and the reproducer")
    sp.add_argument("--point", metavar="LABEL", help="of a comparison with a sweep: run only this point "
                                                     "(its label, as in `testbed matrix`)")
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("soak", help="boot scenarios N times each; hang and failure rates with 95 %% intervals")
    sp.add_argument("scenarios", nargs="*", help="scenario names (default: soak-stock soak-natsume "
                                                 "soak-natsume-no-preempt)")
    sp.add_argument("--runs", type=_soak_runs, default=10, help="runs of each scenario, 1..100 (default: 10)")
    sp.add_argument("--jobs", type=int, default=1, choices=[1, 2, 3, 4],
                    help="runs booted at once, each on its own UDP ports (default: 1)")
    sp.add_argument("--results", default=str(ROOT / "results"), help="where the soak bundle goes (default: results/)")
    sp.set_defaults(func=cmd_soak)
    sp = sub.add_parser("validate", help="check a scenario file")
    sp.add_argument("path", nargs="?", help="file to check (default: --file)")
    sp.set_defaults(func=cmd_validate)
    sp = sub.add_parser("list", help="list scenarios")
    sp.set_defaults(func=cmd_list)
    for name, func, help_ in (("render", cmd_render, "write every rendered config of a scenario to a folder"),
                              ("qemu-cmdline", cmd_qemu_cmdline, "print the QEMU command of a scenario")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("scenario", nargs="?")
        sp.add_argument("outdir", nargs="?", help="folder for run files (default: build/<scenario>)")
        sp.set_defaults(func=func)
    sp = sub.add_parser("images", help="build (or reuse) the images")
    sp.add_argument("--variant", default="stock", choices=["stock", "natsume"])
    sp.set_defaults(func=cmd_images)
    sp = sub.add_parser("matrix", help="print the GitHub Actions job matrix of a comparison or scenario (JSON)")
    sp.add_argument("target", nargs="?", help="comparison or scenario (default: the file's default_scenario)")
    sp.add_argument("--github-output", metavar="FILE", help="also append matrix=, target=, kind= lines to FILE")
    sp.set_defaults(func=cmd_matrix)
    # bundle tools (orchestrator/bundles.py): a bundle is a results folder or its .tar.gz
    sp = sub.add_parser("show", help="one-screen summary of a result bundle (folder or .tar.gz)")
    sp.add_argument("bundle")
    sp.add_argument("--screenshot", action="store_true",
                    help="render report.html in headless Chromium, check it, keep report.png")
    sp.set_defaults(func=cmd_show)
    sp = sub.add_parser("reanalyze", help="recompute samples, summary, plots and checks from a bundle's raw records")
    sp.add_argument("bundle")
    sp.add_argument("--out", default=str(ROOT / "results"), help="where the new bundle goes (default: results/)")
    sp.set_defaults(func=cmd_reanalyze)
    sp = sub.add_parser("compare", help="side-by-side report of run bundles made anywhere")
    sp.add_argument("bundles", nargs="+", metavar="BUNDLE", help="run or comparison bundles (folders or .tar.gz)")
    sp.add_argument("--baseline", help="the group the others are compared with (default: the first)")
    sp.add_argument("--group", choices=["scenario", "input"], default="scenario",
                    help="pool runs by scenario and commit (default), or keep each input apart")
    sp.add_argument("--name", default="compare", help="the comparison's name (default: compare)")
    sp.add_argument("--out", default=str(ROOT / "results"), help="where the new bundle goes (default: results/)")
    sp.set_defaults(func=cmd_compare)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "path", None):
        args.file = args.path
    progress.use(progress.for_console(out, args.quiet))
    try:
        return args.func(args)
    except ScenarioError as exc:
        err.print(f"[red]scenario error[/red] ({len(exc.problems)} problem{'s' if len(exc.problems) > 1 else ''}):")
        for problem in exc.problems[:MAX_PROBLEMS_SHOWN]:
            err.print(f"  {problem}", markup=False)
        if len(exc.problems) > MAX_PROBLEMS_SHOWN:  # one broken default repeats in every scenario
            err.print(f"  ... and {len(exc.problems) - MAX_PROBLEMS_SHOWN} more (fix the first ones, then validate again)",
                      markup=False)
        return EXIT_BAD_INPUT
    except TestbedError as exc:
        err.print("[red]error:[/red] " + escape(str(exc)))
        return exc.exit_code
    except OSError as exc:  # e.g. render into a folder that cannot be written
        err.print("[red]error:[/red] " + escape(f"{exc.filename or ''}: {exc.strerror or exc}"))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
