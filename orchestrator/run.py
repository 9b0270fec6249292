"""`testbed run`: one scenario from its file to its bundle, as the stage table STAGES.

Each row names a stage, what it waits for, the `timeouts:` field that bounds it, the
function that does it and when it is part of the plan. A new stage is one row plus its
function. The stages share one Run (the context below); its ExitStack owns the boot's
Session (QEMU, console, guest agent) and the work folder, so every way out of run()
(a failed stage, Ctrl-C, SIGTERM) tears them down in the same order and the bundle is
always finished.
"""

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from rich.markup import escape

from . import boot, bundle, cpio, diagnose, evaluate, images, measure, pacing, render, report, storm, vcpucount
from .agent import GuestAgent
from .console import SerialConsole
from .errors import EXIT_INFRA, EXIT_MEASUREMENT_FAILED, EXIT_OK, ResultsFolderError, StageError
from .machine import KvmVerdicts, Machine, choose_accel, claim_udp_ports
from .session import Session
from .stages import MAX_MESSAGE, SkipStage, Stage, StageResult, StageRunner, plan


@dataclass
class Workdir:
    """Short-lived files of one boot: sockets (short paths: unix sockets allow 107 bytes) and dom0's initrd."""
    path: Path

    def paths(self, imgs, serial_log, share_dir):
        return render.RunPaths(xen=str(imgs.xen), kernel=str(imgs.kernel), dom0_initrd=str(self.path / "dom0-initrd"),
                               serial_socket=str(self.path / "serial.sock"), serial_log=str(serial_log),
                               qmp_socket=str(self.path / "qmp.sock"), qga_socket=str(self.path / "qga.sock"),
                               monitor_socket=str(self.path / "monitor.sock"), share_dir=str(share_dir),
                               vcpu_log=str(Path(share_dir) / vcpucount.LOG_FILE),
                               vcpu_ctl=str(self.path / "vcpu-ctl"),
                               arrival_logs={role: str(self.path / f"arrivals-{role}.pcap") for role in ("measured", "load")},
                               gate_fifos=(str(self.path / "gate-out"), str(self.path / "gate-in")))


def overlay(s, imgs, files):
    """dom0's per-run cpio: /init, the xl configs, the scenario, the guests' kernel and initrd."""
    entries = {
        "init": (files["dom0-init.sh"].encode(), 0o755),
        f"{render.CONFIG_DIR}/scenario.json": json.dumps(s.as_dict(), indent=2).encode(),
        f"{render.GUEST_DIR}/vmlinuz": imgs.kernel.read_bytes(),
        f"{render.GUEST_DIR}/initrd.cpio.gz": imgs.guest_initrd.read_bytes(),
    }
    for name, text in files.items():
        if name.startswith("xl-"):
            entries[f"{render.CONFIG_DIR}/{name}"] = text.encode()
    return cpio.build(entries)


def write_dom0_initrd(target, imgs, overlay_bytes):
    """The cached rootfs archive followed by the run's overlay (Linux unpacks both)."""
    with open(target, "wb") as out, open(imgs.dom0_rootfs, "rb") as base:
        shutil.copyfileobj(base, out, 1 << 20)
        out.write(overlay_bytes)


def counts_vcpus(s, accel):
    return s.machine.vcpu_counts and s.machine.timing == "instructions" and accel == "tcg"


def vcpu_plugin(s, imgs, paths, accel):
    """The -plugin value of the vCPU counter, or None where it does not run."""
    if not counts_vcpus(s, accel) or imgs.vcpu_plugin is None:
        return None
    gate = paths.gate_fifos if pacing.paced_roles(s.measurement) else None
    return vcpucount.plugin_option(imgs.vcpu_plugin, paths.vcpu_log, paths.vcpu_ctl, s.rt_guest.pcpu,
                                   vcpucount.symbol_range(imgs.xen_syms), gate)


def make_gate_fifos(plugin, paths):
    """The two FIFOs of the plugin's gate, where its -plugin value names them (the plugin opens them at start)."""
    for fifo in paths.gate_fifos if plugin and ",gate=" in plugin else ():
        if not os.path.exists(fifo):
            os.mkfifo(fifo, 0o600)


def prepare(s, imgs, work, accel, config_dir, serial_log, share_dir):
    """Render every file, write them to config_dir and build dom0's initrd; -> (argv, paths)."""
    Path(share_dir).mkdir(parents=True, exist_ok=True)
    paths = work.paths(imgs, serial_log, share_dir)
    plugin = vcpu_plugin(s, imgs, paths, accel)
    make_gate_fifos(plugin, paths)
    files = render.render_all(s, paths, accel, plugin)
    render.write_all(files, config_dir)
    write_dom0_initrd(paths.dom0_initrd, imgs, overlay(s, imgs, files))
    return render.qemu_argv(s, paths, accel, plugin), paths


def real_parts(argv, paths, logs):
    """The real Session parts of one boot (tests pass fakes with the same Protocols)."""
    return (Machine(argv, paths.qmp_socket, logs / "qemu.log"), SerialConsole(paths.serial_socket, paths.serial_log),
            GuestAgent(paths.qga_socket))


@dataclass
class Run:
    """What the stages of one run share. The seams (make_parts, ensure_images) default to the real parts."""
    s: object
    scenario_file: Path
    bundle: bundle.Bundle
    say: Callable
    runner: StageRunner
    stack: contextlib.ExitStack
    make_parts: Callable = real_parts
    ensure_images: Callable = images.ensure
    manifest: dict = field(default_factory=dict)
    work: Optional[Workdir] = None
    logs: Optional[Path] = None  # where QEMU's and dom0's logs go (the bundle's logs/, or the KVM probe's)
    imgs: object = None
    accel: str = "tcg"
    argv: list = None
    paths: object = None
    session: Optional[Session] = None
    records: object = None
    checks: list = field(default_factory=list)
    share_sub: str = ""  # the run's folder in the host share (a kept machine's runs share one share)

    @property
    def machine(self):
        return self.session.machine

    @property
    def console(self):
        return self.session.console

    @property
    def agent(self):
        return self.session.agent


# ---------------------------------------------------------------- the stages' functions


def _ports(r, _timeout):
    nics = (r.s.nics.measured, r.s.nics.load)
    r.stack.enter_context(claim_udp_ports([n.udp_port for n in nics], f"run {r.bundle.run_id} of {r.scenario_file}"))
    return ", ".join(f"{n.udp_port}-{n.udp_port + 1}" for n in nics)


def _images(r, _timeout):
    r.imgs = r.ensure_images(r.s.hypervisor.variant, progress=r.say)
    r.manifest["images"] = r.imgs.versions()
    return ", ".join(p.name for p in r.imgs.dirs.values())


def _render(r, _timeout):
    s = r.s
    verdicts = KvmVerdicts(images.CACHE / "kvm-verdicts.json", [d.name for d in r.imgs.dirs.values()])
    if s.machine.accel == "kvm":
        verdicts.forget()  # asked for KVM: an old negative verdict must not outlive this try
    accel, notice = choose_accel(s.machine.accel, verdicts, s.machine.timing)
    if accel == "probe":
        r.say("probing whether KVM boots Xen here (once per host; the verdict is cached)")
        accel, notice = probe_kvm(r, verdicts)
    r.say(f"accelerator: {notice}")
    r.accel = accel
    r.manifest["accelerator"] = {"requested": s.machine.accel, "used": accel, "why": notice}
    b = r.bundle
    share = Path(r.work.path) / "share" if r.share_sub else b.raw  # a kept machine's share outlives the bundle
    r.argv, r.paths = prepare(s, r.imgs, r.work, accel, b.config, b.logs / "console.log", share)
    r.manifest["qemu_argv"] = r.argv
    return f"{accel}; {len(r.argv)} QEMU arguments"


def _qemu_up(r, timeout):
    r.session = r.stack.enter_context(Session(*r.make_parts(r.argv, r.paths, r.logs)))
    r.runner.tail = r.console.tail
    return boot.qemu_up(r.machine, r.console, timeout)


def _xen_banner(r, timeout):
    return boot.xen_banner(r.machine, r.console, timeout)


def _iommu(r, timeout):
    return boot.iommu(r.machine, r.console, timeout)


def _dom0_ready(r, timeout):
    detail = boot.dom0_ready(r.machine, r.console, timeout)
    r.console.drain()  # no stage reads the console from here on
    return detail


def _toolstack(r, timeout):
    return boot.toolstack(r.agent, r.s, timeout)


def _natsume_option(r, timeout):
    return boot.natsume_option(r.agent, timeout)


def _rt_guest(r, timeout):
    return boot.rt_guest(r.agent, r.s, timeout)


def _load_guest(r, timeout):
    return boot.load_guest(r.agent, r.s, timeout)


def _storm(r, timeout):
    return storm.storm(r.agent, r.s, r.bundle.raw, measure.tsc_khz(r.agent), timeout, machine=r.machine)


def _measure(r, _timeout):
    ctl = r.paths.vcpu_ctl if counts_vcpus(r.s, r.accel) and r.imgs.vcpu_plugin else None
    r.records = measure.measure(r.agent, r.s, r.paths.share_dir, r.say, vcpu_ctl=ctl, share_sub=r.share_sub,
                                pacing_paths=(r.paths.arrival_logs, r.paths.gate_fifos), machine=r.machine)
    return f"traffic sent: {_traffic_line(r.records.traffic)}"


def _evaluate(r, _timeout):
    summary, r.checks = evaluate.evaluate(r.s, r.records, r.bundle.dir, r.accel)
    r.manifest["summary"] = {k: summary.get(k) for k in bundle.SUMMARY_IN_MANIFEST}
    return (f"{summary.get('paired', 'no')} paired samples; absorbed {summary['absorbed']}; "
            + ", ".join(f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in r.checks))


def _collect(r, _timeout):
    """Also after a failure: save what dom0 can still tell, if its agent ever answered."""
    if r.session is None or not r.agent.connected:
        raise SkipStage("dom0's guest agent never answered: nothing to collect from dom0")
    detail = boot.collect(r.agent, r.s, r.logs)
    if r.runner.failed_stage():  # a failure (a hang above all) must be a bundle a reader can diagnose
        saved = diagnose.collect(r.agent, r.machine, r.s, r.logs)
        detail += f"; after the failure: {', '.join(saved) or 'no diagnostics'}"
    return detail


def _shutdown(r, timeout):
    return boot.shutdown(r.agent, r.machine, timeout)


def _natsume(s):
    return s.hypervisor.variant == "natsume"


def _measuring(s):
    return s.measurement.enabled


def _storming(s):
    return s.measurement.enabled and s.measurement.storm_ics_writes > 0


STAGES = (
    Stage("ports", "the scenario's UDP ports claimed for this run alone (a second run on them refuses)", None,
          _ports),
    Stage("images", "every image of the variant in the cache (built if missing)", None, _images),
    Stage("render", "the boot files rendered and the accelerator chosen", None, _render),
    Stage("qemu_up", "QEMU started paused with its sockets, then running", "qemu_up", _qemu_up),
    Stage("xen_banner", "Xen's version banner on the serial console", "xen_banner", _xen_banner),
    Stage("iommu", "Xen's I/O virtualisation and interrupt remapping lines, up to its dom0 build", "iommu", _iommu),
    Stage("dom0_ready", "dom0's init printing TESTBED-DOM0-READY", "dom0_ready", _dom0_ready),
    Stage("toolstack", "dom0's guest agent answering and `xl list` showing Domain-0", "toolstack", _toolstack),
    Stage("natsume_option", "Xen's log accepting the natsume= option", "toolstack", _natsume_option, when=_natsume),
    Stage("rt_guest", "the RT guest up with the measured NIC bound to its e1000e driver", "rt_guest", _rt_guest),
    Stage("load_guest", "the load guest up with its bridged network", "load_guest", _load_guest),
    Stage("storm", "the RT guest's own interrupt storm, then its console and dom0 answering", "storm", _storm,
          when=_storming),
    Stage("measure", "traffic sent and the records copied off (dump bounded by timeouts.dump)", "dump", _measure,
          when=_measuring),
    Stage("evaluate", "samples, statistics and checks from the raw records", None, _evaluate, when=_measuring),
    Stage("collect", "dom0's logs copied into the bundle (also after a failure)", None, _collect, after_failure=True),
    Stage("shutdown", "the guests shut down, then QEMU quitting over QMP", "shutdown", _shutdown),
)
PROBE_STAGES = ("qemu_up", "dom0_ready")  # what the KVM probe boots: from QEMU to dom0
BOOT_STAGES = tuple(st.name for st in STAGES[:[x.name for x in STAGES].index("load_guest") + 1])


def stage_names(s):
    return tuple(st.name for st in plan(STAGES, s))


# ---------------------------------------------------------------- the KVM probe


def probe_kvm(r, verdicts):
    """Boot this scenario's Xen + dom0 under KVM once; remember whether it got to dom0. -> (accel, notice)."""
    s = r.s
    probe_logs = r.bundle.logs / "kvm-probe"
    probe_logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testbed-kvm-", dir="/tmp") as tmp, contextlib.ExitStack() as stack:
        work = Workdir(Path(tmp))
        argv, paths = prepare(s, r.imgs, work, "kvm", probe_logs, probe_logs / "console.log", Path(tmp) / "share")
        probe = Run(s, r.scenario_file, r.bundle, r.say, StageRunner(), stack, make_parts=r.make_parts,
                    work=work, logs=probe_logs, imgs=r.imgs, accel="kvm", argv=argv, paths=paths)
        error = probe.runner.run(plan(STAGES, s, *PROBE_STAGES), probe, s)
        if error is None:
            verdicts.put(True, "dom0 booted under KVM")
            return "kvm", "KVM: the probe booted Xen and dom0"
    failed = next(res for res in probe.runner.results if res.status == "failed")
    why = f"stage '{failed.name}' failed: {failed.detail}"[:300]
    evidence = {"stage": failed.name, "error": str(error)[:4000], "logs": str(probe_logs),
                "stages": probe.runner.as_list(),
                "qemu_output": _tail(probe_logs / "qemu.log"), "console": _tail(probe_logs / "console.log")}
    (probe_logs / "probe.json").write_text(json.dumps(evidence, indent=2) + "\n")
    verdicts.put(False, why, evidence)
    r.say(f"[yellow]KVM probe failed ({escape(why)}); using TCG[/yellow]")
    return "tcg", f"TCG: KVM does not boot Xen on this host ({why}; evidence in logs/kvm-probe/)"


def _tail(path, lines=30):
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# ---------------------------------------------------------------- machines kept between runs


@dataclass
class Kept:
    """A booted machine kept for the next run of its scenario: the Run that booted it (its images,
    paths, accelerator, session) and the ExitStack that owns the session, work folder and ports."""
    r: Run
    stack: contextlib.ExitStack
    booted_by: str  # the run id whose bundle has the boot's stages, console and QEMU logs
    runs: int = 1


class BootPool:
    """A comparison's booted machines, one per scenario, kept between that scenario's repeats: each
    run measures its scenario's machine while the others are paused over QMP (`stop`; no virtual
    time passes), and the pool shuts every machine down at its end. A run that failed is not kept."""

    def __init__(self, say, runner=None):
        self.say, self.runner, self.kept = say, runner, {}
        self.active = []  # the Runs in progress (a parallel first round has several)
        self.aborted = False
        self.released = threading.Event()  # set once every machine is down: the threads that started them may end

    def abort(self):
        """Ctrl-C or SIGTERM while runs boot side by side: stop their machines, so their stages end."""
        self.aborted = True
        for r in list(self.active):
            if r.session is not None:
                r.session.machine.kill()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(graceful=exc_type is None)

    @staticmethod
    def key(s):
        return json.dumps(s.as_dict(), sort_keys=True, default=str)

    def take(self, s):
        """The kept machine of this scenario, running, or None (a fresh boot); every other one paused.
        A kept machine that stopped answering is dropped (its scenario boots again)."""
        for key, kept in list(self.kept.items()):
            try:
                if kept.r.machine.status() == "running" and key != self.key(s):
                    kept.r.machine.stop()
            except Exception as exc:  # noqa: BLE001 - QEMU died or hung: nothing to keep
                self.say(f"[yellow]the machine kept for {kept.r.s.name} stopped answering ({exc}); "
                         "its next run boots a new one[/yellow]")
                del self.kept[key]
                kept.stack.close()
        kept = self.kept.pop(self.key(s), None)
        if kept is not None:
            kept.r.machine.cont()
        return kept

    def keep(self, s, kept):
        kept.r.machine.stop()
        self.kept[self.key(s)] = kept

    def close(self, graceful=True):
        """Shut each machine down (the guests, then QEMU) as its scenario's last run would have; after
        a failure or a signal only quit QEMU."""
        try:
            self._close(graceful)
        finally:
            self.released.set()

    def _close(self, graceful):
        while self.kept:
            _, kept = self.kept.popitem()
            t0 = time.monotonic()
            status, detail = "passed", ""
            try:
                if graceful:
                    kept.r.machine.cont()
                    detail = boot.shutdown(kept.r.agent, kept.r.machine, kept.r.s.timeouts.shutdown)
            except Exception as exc:  # noqa: BLE001 - the other machines still get shut down
                status, detail = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            finally:
                kept.stack.close()
            if self.runner is not None and graceful:
                self.runner.results.append(StageResult(f"shutdown:{kept.r.s.name}", status, time.monotonic() - t0,
                                                       f"{detail} (booted by {kept.booted_by}, measured by "
                                                       f"{kept.runs} runs)"))


def keepable(s):
    """A machine may serve the next run of its scenario unless its run changed it for good (a storm)."""
    return not _storming(s)


# ---------------------------------------------------------------- run()


@dataclass
class Outcome:
    """What a run or a comparison ended with (a comparison's `runs` holds its runs' Outcomes)."""
    code: int  # EXIT_OK, EXIT_MEASUREMENT_FAILED or EXIT_INFRA
    bundle: Path
    archive: Optional[Path]
    runner: StageRunner
    error: Exception = None  # the StageError that ended the run, if one did
    checks: list = field(default_factory=list)  # the measurement's checks (empty without a measurement)
    interrupted: bool = False  # Ctrl-C or SIGTERM ended it: a comparison stops there too
    runs: list = field(default_factory=list)  # a comparison's [(scenario, Outcome)]
    report: str = ""  # a comparison's report.md text


def run(scenario_file, s, results_dir, say, pack=True, make_parts=real_parts, ensure_images=images.ensure, sets=(),
        pool=None, turn=None):
    """Run one scenario through STAGES; always leaves a bundle. `sets` are the --set overrides
    already in `s`, kept for the manifest and the reproducer. With a BootPool the run measures the
    machine an earlier run of this scenario booted (its boot stages are not run again) and leaves
    it to the pool instead of shutting it down. With `turn` (a threading.Event; runs booting side
    by side) the booted machine waits paused until the event is set, then measures. -> Outcome."""
    bundle.check_results_folder(results_dir)
    b = bundle.Bundle(results_dir, s.name)
    runner = StageRunner(report=lambda res: say(_stage_line(res)))
    manifest = {"scenario": s.as_dict(), "scenario_file": str(scenario_file), "status": "running",
                "overrides": list(sets), "host": bundle.host_facts(), "git": bundle.git_state(),
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    bundle.copy_into(scenario_file, b.config, "testbed.yaml")
    error, interrupted = None, False
    pooled = pool is not None and keepable(s)
    kept = pool.take(s) if pooled else None
    stages = [st for st in plan(STAGES, s) if not (pooled and st.name == "shutdown")
              and not (kept and st.name in BOOT_STAGES)]
    with contextlib.ExitStack() as stack:
        r = _pooled_run(s, scenario_file, b, say, runner, stack, manifest, kept) if kept else None
        if r is None:
            work = Workdir(Path(tempfile.mkdtemp(prefix="testbed-", dir="/tmp")))
            stack.callback(shutil.rmtree, work.path, ignore_errors=True)
            r = Run(s, scenario_file, b, say, runner, stack, make_parts=make_parts, ensure_images=ensure_images,
                    manifest=manifest, work=work, logs=b.logs, share_sub=b.run_id if pooled else "")
        kept_now = False
        if pooled:
            pool.active.append(r)
        try:
            booting = [st for st in stages if st.name in BOOT_STAGES] if turn is not None else []
            error = runner.run(booting, r, s) if booting else None
            if booting and error is None:
                _wait_for_turn(r, turn, pool, say)
            rest = [st for st in stages if st not in booting]
            error = _cause_of_a_dead_machine(r, runner, runner.run(rest, r, s, error))
        except KeyboardInterrupt as exc:
            interrupted = True
            error = StageError(runner.results[-1].name if runner.results else "start",
                               f"interrupted ({exc.args[0] if exc.args else 'SIGINT'})")
            runner.skip_rest(stages)
            _after_signal(r, runner, manifest, error)
        finally:
            if pooled:
                pool.active.remove(r)
            if pooled:  # the share outlives this run's bundle: its raw records were in a folder of their own
                _move_raw(Path(r.work.path) / "share" / b.run_id, b)
            if pooled and error is None and not interrupted and r.session is not None:
                owner = kept.stack if kept else stack.pop_all()  # the session, work folder and ports
                try:
                    pool.keep(s, Kept(r, owner, kept.booted_by if kept else b.run_id, kept.runs + 1 if kept else 1))
                    manifest["machine"] = "kept running (paused) for the next run of this scenario"
                    kept_now = True
                except Exception as exc:  # noqa: BLE001 - QEMU went away just now: nothing to keep
                    say(f"[yellow]the machine could not be kept for the next run ({escape(str(exc))})[/yellow]")
                    owner.close()
            elif kept:
                kept.stack.close()  # a failed run leaves the machine in no state to measure again
            stack.close()  # the Session first (it was entered last), then the work folder
        if r.session is not None and not kept_now:
            manifest["machine_exit"] = r.session.machine_exit.__dict__
    return _finish(b, s, runner, manifest, error, r.checks, interrupted, pack)


def _wait_for_turn(r, turn, pool, say):
    """A machine booted beside others waits paused (no virtual time passes) until its run's turn."""
    r.machine.stop()
    say(f"{r.s.name}: booted; paused until its turn to measure")
    turn.wait()
    if pool.aborted:
        raise KeyboardInterrupt("the comparison was stopped while this run waited for its turn")
    r.machine.cont()


def _pooled_run(s, scenario_file, b, say, runner, stack, manifest, kept):
    """The Run of a run that measures a kept machine: the boot's parts, this run's bundle."""
    k = kept.r
    manifest.update(boot={"reused_from": kept.booted_by, "runs_before": kept.runs},
                    qemu_argv=k.argv, accelerator=k.manifest.get("accelerator"), images=k.manifest.get("images"))
    (b.logs / "boot.txt").write_text(f"This run measured the machine that run {kept.booted_by} booted "
                                     f"(after {kept.runs} run(s) of it); that run's bundle holds the boot's stages, "
                                     "the serial console and QEMU's output.\n")
    return Run(s, scenario_file, b, say, runner, stack, manifest=manifest, work=k.work, logs=b.logs, imgs=k.imgs,
               accel=k.accel, argv=k.argv, paths=k.paths, session=k.session, share_sub=b.run_id)


def _move_raw(folder, b):
    """A pooled run's raw records from the share into its bundle's raw/ (also after a failure)."""
    if not folder.is_dir():
        return
    for item in folder.iterdir():
        shutil.move(str(item), str(b.raw / item.name))
    folder.rmdir()


def _cause_of_a_dead_machine(r, runner, error):
    """A stage that failed because QEMU died sees only a closed socket ("Disconnected"): name the
    cause, QEMU's exit, in the error, the stage's row and so the manifest and JUnit."""
    code = r.machine.returncode() if error is not None and r.session is not None else None
    if code is None:  # no failure, no QEMU, or QEMU still runs
        return error
    how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
    message = f"QEMU exited during the stage ({how}); the stage saw: {str(error).split(': ', 1)[-1]}"
    row = next((res for res in runner.results if res.name == error.stage and res.status == "failed"), None)
    if row is not None:
        row.detail, row.message = message.splitlines()[0], message[:MAX_MESSAGE]
    return StageError(error.stage, message.split("\n  last ")[0], error.tail_lines)


AFTER_SIGNAL_COLLECT_S = 5  # a CI cancel escalates to SIGKILL about 10 s after its first signal
AFTER_SIGNAL_QUIT_S = 3


def _after_signal(r, runner, manifest, error):
    """After Ctrl-C or SIGTERM the bundle is finished first, with what is known; then dom0's logs
    are collected for a few seconds and QEMU is stopped, and run() finishes the bundle again."""
    _finish(r.bundle, r.s, runner, dict(manifest, teardown="interrupted: collecting dom0's logs, then stopping QEMU"),
            error, r.checks, True, pack=False)
    r.logs = r.bundle.logs  # the bundle's folder has its final name now
    if r.session is None:
        return
    if r.agent.connected:
        try:
            boot.collect(r.agent, r.s, r.logs, budget=AFTER_SIGNAL_COLLECT_S)
        except Exception as exc:  # noqa: BLE001 - the logs are a bonus here; stopping QEMU is not
            r.say(f"collecting dom0's logs after the signal failed: {escape(str(exc))}")
    r.session.close(AFTER_SIGNAL_QUIT_S)


def _finish(b, s, runner, manifest, error, checks, interrupted, pack):
    failed_checks = [c["name"] for c in checks if not c["ok"]]
    code = EXIT_INFRA if error is not None or not runner.passed else (
        EXIT_MEASUREMENT_FAILED if failed_checks else EXIT_OK)
    manifest.update(status={EXIT_OK: "passed", EXIT_MEASUREMENT_FAILED: "measurement failed"}.get(code, "failed"),
                    exit_code=code, failed_stage=runner.failed_stage(), failed_checks=failed_checks,
                    error=str(error) if error else None, interrupted=interrupted)
    manifest["raw_records"] = _raw_records(b, runner)
    report.junit(b.dir / "junit.xml", f"testbed.{s.name}", runner.results, checks)
    try:
        final, tar = b.finish(manifest, runner, bundle.reproducer(s.name, b.run_id, manifest["git"]["commit"],
                                                                manifest.get("overrides", ())), pack=pack)
    except OSError as exc:  # the folder filled up (or went away) during the run: say so, no traceback
        raise ResultsFolderError(f"the bundle could not be finished ({exc.strerror or exc}: {exc.filename}); "
                                 f"what was written stays in {b.dir}") from None
    return Outcome(code, final, tar, runner, error, checks, interrupted)


def _raw_records(b, runner):
    """What raw/ holds, and whether it is the whole measurement: a run stopped or failed in its
    measure stage keeps the records dom0 had written so far (the trace, counters), marked partial."""
    files = sorted(str(p.relative_to(b.raw)) for p in b.raw.rglob("*") if p.is_file() and not p.name.startswith("."))
    measured = next((r.status for r in runner.results if r.name == "measure"), None)
    return {"complete": measured == "passed", "files": files,
            "why": {"passed": "the measure stage passed", None: "no measure stage in this run",
                    "skipped": "the run ended before its measure stage"}.get(
                measured, f"the measure stage {measured}: the records stop where it did")}


def _traffic_line(t):
    return "; ".join(f"{name} {c['frames']} frames ({c['send_errors']} send errors)" for name, c in t.items())


def _stage_line(res):
    mark = {"passed": "[green]✓[/green]", "failed": "[red]✗[/red]", "skipped": "[dim]-[/dim]"}[res.status]
    return f"{mark} {res.name:<14} {res.seconds:7.1f} s  {escape(res.detail)}"

