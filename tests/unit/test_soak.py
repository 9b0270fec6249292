"""The soak's plan, its classification of runs, its rates and its bundle, on a fake `testbed run`."""

import json
import sys
import textwrap

import pytest

from orchestrator import soak


def test_wilson_interval_matches_known_values():
    low, high = soak.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = soak.wilson(1, 16)
    assert (low, high) == (pytest.approx(0.0111, abs=1e-4), pytest.approx(0.2833, abs=1e-4))
    assert soak.wilson(0, 0) == (0.0, 1.0)


def test_the_plan_interleaves_the_variants():
    assert [n for _, n in soak.plan(["a", "b", "c"], 2)] == ["a", "b", "c", "a", "b", "c"]


def _bundle(tmp_path, manifest, rt_interrupts=None):
    d = tmp_path / "b"
    (d / "logs").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(manifest))
    if rt_interrupts is not None:
        (d / "logs" / "rt-guest-interrupts.txt").write_text(rt_interrupts)
    return d


@pytest.mark.parametrize("code, manifest, interrupts, kind", [
    (0, {}, None, "passed"),
    (1, {"failed_checks": ["enough_samples"]}, None, "measurement failed"),
    (2, {"failed_stage": "measure", "error": "rt: `rtagent stop` gave no /x/ within 60 s"},
     "[not collected: rt: `cat` gave no /TESTBED-IRQS-END/ within 15 s]\n", "hang"),
    (2, {"failed_stage": "measure", "error": "boom"}, "# rt\n 24: 100 xen-pirq eth0\n", "failed"),
    (2, {"failed_stage": "xen_banner", "error": "no banner"}, None, "failed"),
    (2, {"failed_stage": "measure", "interrupted": True, "error": "interrupted (SIGTERM)"}, None, "interrupted"),
])
def test_a_run_is_classified_from_its_exit_its_manifest_and_its_diagnostics(tmp_path, code, manifest, interrupts,
                                                                            kind):
    assert soak.classify(code, _bundle(tmp_path, manifest, interrupts))[0] == kind


FAKE_RUN = textwrap.dedent('''
    import json, pathlib, sys
    args = sys.argv[1:]
    name, results = args[1], pathlib.Path(args[args.index("--results") + 1])
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    d = results / f"{name}-1"  # a soak gives each run its own results folder, named by its index
    (d / "logs").mkdir(parents=True)
    hang = results.name == "003"  # nat's second run
    (d / "manifest.json").write_text(json.dumps({"failed_stage": "measure" if hang else None,
                                                 "error": "rtagent stop gave nothing" if hang else None,
                                                 "sets": sets}))
    if hang:
        (d / "logs" / "rt-guest-interrupts.txt").write_text("[not collected: no answer within 15 s]\\n")
    print("bundle:", d)
    sys.exit(2 if hang else 0)
''')


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_soak_runs_every_run_and_reports_rates_in_a_finished_bundle(tmp_path, jobs):
    fake = tmp_path / "fake_run.py"
    fake.write_text(FAKE_RUN)
    scen = tmp_path / "testbed.yaml"
    scen.write_text("{}\n")
    lines = []
    code, final, table = soak.soak(scen, ["stock", "nat"], {"stock": (40010, 40020), "nat": (40010, 40020)}, 3,
                                   jobs, tmp_path / "results", lines.append, "testbed soak",
                                   cmd_prefix=[sys.executable, str(fake)])
    assert code == 1 and not final.name.startswith(".")
    assert table["stock"]["passed"] == 3 and table["nat"]["hang"] == 1 and table["nat"]["runs"] == 3
    assert table["nat"]["hang_ci95"] == pytest.approx(soak.wilson(1, 3))
    data = json.loads((final / "soak.json").read_text())
    assert [r["index"] for r in data["runs"]] == list(range(6))
    hang = next(r for r in data["runs"] if r["kind"] == "hang")
    assert hang["failed_stage"] == "measure" and hang["bundle"] == "runs/003/nat-1"
    report = (final / "report.md").read_text()
    assert "| nat | 3 | 2 | 0 | 1 | 0 | 33 % (6–79 %)" in report and "## Runs that did not pass" in report
    ports = {json.dumps(json.loads((d / "manifest.json").read_text())["sets"])
             for d in (final / "runs").glob("*/*")}
    # each worker on its own ports, never the scenario's own (a normal run may be using them)
    assert ports <= {json.dumps([f"nics.measured.udp_port={40010 + 200 * w}", f"nics.load.udp_port={40020 + 200 * w}"])
                     for w in range(1, jobs + 1)}
    assert len(lines) == 6 and json.loads((final / "manifest.json").read_text())["kind"] == "soak"
    assert (final / "stages.txt").read_text().count("run-0") == 6


SLOW_RUN = textwrap.dedent('''
    import json, pathlib, signal, sys, time
    args = sys.argv[1:]
    results = pathlib.Path(args[args.index("--results") + 1])
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    for _ in range(100):
        if stop:
            break
        time.sleep(0.1)
    time.sleep(1)  # finishing its bundle after the signal takes a while
    d = results / (args[1] + "-x")
    (d / "logs").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"interrupted": bool(stop), "failed_stage": "measure"}))
    sys.exit(2 if stop else 0)
''')


def test_an_interrupted_soak_waits_for_its_run_and_keeps_it(tmp_path):
    import os
    import signal
    import threading
    from orchestrator import cli
    fake = tmp_path / "slow_run.py"
    fake.write_text(SLOW_RUN)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    cli._handle_signals()
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))  # as CI cancels: the soak alone
    timer.start()
    try:
        code, final, table = soak.soak(tmp_path / "t.yaml", ["a"], {"a": (40010, 40020)}, 3, 1, tmp_path / "res",
                                       lambda text: None, "testbed soak", cmd_prefix=[sys.executable, str(fake)])
    finally:
        timer.cancel()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    data = json.loads((final / "soak.json").read_text())
    assert code == 2 and data["status"] == "Interrupted"
    [run] = data["runs"]  # the run in progress was waited for, and kept
    assert run["kind"] == "interrupted" and (final / run["bundle"] / "manifest.json").exists()
    assert table["a"]["runs"] == 0  # an interrupted run counts for no rate
