"""`testbed run`: wire the stages together, from scenario to bundle."""

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import boot, bundle, cpio, evaluate, images, measure, render, report
from .agent import GuestAgent
from .console import SerialConsole
from .errors import EXIT_INFRA, EXIT_MEASUREMENT_FAILED, EXIT_OK, StageError, TestbedError
from .machine import KvmVerdicts, Machine, check_udp_ports_free, choose_accel
from .stages import StageRunner

BOOT_STAGES = ("images", "render", "qemu_up", "xen_banner", "iommu", "dom0_ready", "toolstack", "rt_guest",
               "load_guest")
MEASURE_STAGES = ("measure", "evaluate")
END_STAGES = ("collect", "shutdown")


def stage_names(s):
    boot_stages = BOOT_STAGES
    if s.hypervisor.variant == "natsume":
        i = BOOT_STAGES.index("toolstack") + 1
        boot_stages = BOOT_STAGES[:i] + ("natsume_option",) + BOOT_STAGES[i:]
    return boot_stages + (MEASURE_STAGES if s.measurement.enabled else ()) + END_STAGES


@dataclass
class Workdir:
    """Short-lived files of one boot: sockets (short paths: unix sockets allow 107 bytes) and dom0's initrd."""
    path: Path

    def paths(self, imgs, serial_log, share_dir):
        return render.RunPaths(xen=str(imgs.xen), kernel=str(imgs.kernel), dom0_initrd=str(self.path / "dom0-initrd"),
                               serial_socket=str(self.path / "serial.sock"), serial_log=str(serial_log),
                               qmp_socket=str(self.path / "qmp.sock"), qga_socket=str(self.path / "qga.sock"),
                               share_dir=str(share_dir))


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


def prepare(s, imgs, work, accel, config_dir, serial_log, share_dir):
    """Render every file, write them to config_dir and build dom0's initrd; -> (argv, paths)."""
    Path(share_dir).mkdir(parents=True, exist_ok=True)
    paths = work.paths(imgs, serial_log, share_dir)
    files = render.render_all(s, paths, accel)
    render.write_all(files, config_dir)
    write_dom0_initrd(paths.dom0_initrd, imgs, overlay(s, imgs, files))
    return render.qemu_argv(s, paths, accel), paths


def boot_stack(s, argv, paths, logs, runner, upto=None):
    """Boot QEMU through the stages; return the still-running (machine, agent)."""
    t = s.timeouts
    machine = Machine(argv, paths.qmp_socket, logs / "qemu.log")
    console = SerialConsole(paths.serial_socket, paths.serial_log)
    agent = GuestAgent(paths.qga_socket)
    runner.tail = console.tail
    try:
        with runner.stage("qemu_up") as st:
            st.detail = boot.qemu_up(machine, console, t.qemu_up)
        with runner.stage("xen_banner") as st:
            st.detail = boot.xen_banner(machine, console, t.xen_banner)
        with runner.stage("iommu") as st:
            st.detail = boot.iommu(machine, console, t.xen_banner)
        with runner.stage("dom0_ready") as st:
            st.detail = boot.dom0_ready(machine, console, t.dom0_ready)
        console.drain()
        if upto == "dom0_ready":
            return machine, console, agent
        with runner.stage("toolstack") as st:
            st.detail = boot.toolstack(agent, s, t.toolstack)
        if s.hypervisor.variant == "natsume":
            with runner.stage("natsume_option") as st:
                st.detail = boot.natsume_option(agent)
        with runner.stage("rt_guest") as st:
            st.detail = boot.rt_guest(agent, s, t.rt_guest)
        with runner.stage("load_guest") as st:
            st.detail = boot.load_guest(agent, s, t.load_guest)
    except BaseException:
        _best_effort_collect(agent, s, logs)
        agent.close()
        console.close()
        machine.shutdown()
        raise
    return machine, console, agent


def _best_effort_collect(agent, s, logs):
    """After a failure: save what dom0 can still tell, if its agent ever answered."""
    if agent.qga is None:
        return
    try:
        boot.collect(agent, s, logs)
    except Exception:  # noqa: BLE001 - the failure being reported matters more
        pass


def probe_kvm(s, imgs, verdicts, logs, say):
    """Boot this scenario's Xen + dom0 under KVM once; remember whether it got to dom0."""
    with tempfile.TemporaryDirectory(prefix="testbed-kvm-", dir="/tmp") as tmp:
        probe_logs = logs / "kvm-probe"
        probe_logs.mkdir(parents=True, exist_ok=True)
        argv, paths = prepare(s, imgs, Workdir(Path(tmp)), "kvm", probe_logs, probe_logs / "console.log",
                              Path(tmp) / "share")
        runner = StageRunner()
        try:
            machine, console, agent = boot_stack(s, argv, paths, probe_logs, runner, upto="dom0_ready")
            machine.shutdown()
            console.close()
            verdicts.put(True, "dom0 booted under KVM")
            return "kvm", "KVM: the probe booted Xen and dom0"
        except TestbedError as exc:
            why = str(exc).splitlines()[0][:200]
            verdicts.put(False, why)
            say(f"[yellow]KVM probe failed ({why}); using TCG[/yellow]")
            return "tcg", f"TCG: KVM does not boot Xen on this host ({why})"


@dataclass
class Outcome:
    code: int  # EXIT_OK, EXIT_MEASUREMENT_FAILED or EXIT_INFRA
    bundle: Path
    archive: Path
    runner: StageRunner
    error: Exception = None  # the StageError that ended the run, if one did
    checks: list = None  # the measurement's checks (empty without a measurement)
    interrupted: bool = False  # Ctrl-C or SIGTERM ended it: a comparison stops there too


def run(scenario_file, s, results_dir, say, pack=True):
    """Run one scenario; always leaves a bundle. -> Outcome."""
    b = bundle.Bundle(results_dir, s.name)
    runner = StageRunner(report=lambda r: say(_stage_line(r)))
    manifest = {"scenario": s.as_dict(), "scenario_file": str(scenario_file), "status": "running",
                "host": bundle.host_facts(), "git": bundle.git_state(),
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    bundle.copy_into(scenario_file, b.config, "testbed.yaml")
    work = Workdir(Path(tempfile.mkdtemp(prefix="testbed-", dir="/tmp")))
    machine = agent = console = None
    error = None
    checks = []
    interrupted = False
    try:
        with runner.stage("images") as st:
            imgs = images.ensure(s.hypervisor.variant, progress=say)
            manifest["images"] = imgs.versions()
            st.detail = ", ".join(p.name for p in imgs.dirs.values())
        with runner.stage("render") as st:
            check_udp_ports_free([n.udp_port for n in (s.nics.measured, s.nics.load)])
            accel, notice = choose_accel(s.machine.accel, KvmVerdicts(images.CACHE / "kvm-verdicts.json"),
                                         s.machine.timing)
            if accel == "probe":
                say("probing whether KVM boots Xen here (once per host; the verdict is cached)")
                accel, notice = probe_kvm(s, imgs, KvmVerdicts(images.CACHE / "kvm-verdicts.json"), b.logs, say)
            say(f"accelerator: {notice}")
            manifest["accelerator"] = {"requested": s.machine.accel, "used": accel, "why": notice}
            argv, paths = prepare(s, imgs, work, accel, b.config, b.logs / "console.log", b.raw)
            manifest["qemu_argv"] = argv
            st.detail = f"{accel}; {len(argv)} QEMU arguments"
        machine, console, agent = boot_stack(s, argv, paths, b.logs, runner)
        if s.measurement.enabled:
            with runner.stage("measure") as st:
                records = measure.measure(agent, s, b.raw, say)
                st.detail = f"traffic sent: {_traffic_line(records.traffic)}"
            with runner.stage("evaluate") as st:
                summary, checks = evaluate.evaluate(s, records, b.dir, accel)
                manifest["summary"] = {k: summary.get(k) for k in ("timing", "calibration", "paired", "unpaired_pct",
                                                                    "latency_ticks", "latency_ns", "paths", "absorbed")}
                st.detail = f"{summary.get('paired', 'no')} paired samples; absorbed {summary['absorbed']}; " + \
                    ", ".join(f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in checks)
        with runner.stage("collect") as st:
            st.detail = boot.collect(agent, s, b.logs)
        with runner.stage("shutdown") as st:
            st.detail = boot.shutdown(agent, machine, s.timeouts.shutdown)
    except StageError as exc:
        error = exc
    except KeyboardInterrupt:
        interrupted = True
        error = StageError(runner.results[-1].name if runner.results else "start", "interrupted (Ctrl-C)")
    finally:
        for part in (agent, console, machine):
            if part is not None:
                (part.shutdown if isinstance(part, Machine) else part.close)()
        shutil.rmtree(work.path, ignore_errors=True)
        runner.skip_rest(stage_names(s))
        failed_checks = [c["name"] for c in checks if not c["ok"]]
        code = EXIT_INFRA if error is not None or not runner.passed else (
            EXIT_MEASUREMENT_FAILED if failed_checks else EXIT_OK)
        manifest.update(status={EXIT_OK: "passed", EXIT_MEASUREMENT_FAILED: "measurement failed"}.get(code, "failed"),
                        exit_code=code, failed_stage=runner.failed_stage(), failed_checks=failed_checks,
                        error=str(error) if error else None)
        report.junit(b.dir / "junit.xml", f"testbed.{s.name}", runner.results, checks)
        final, tar = b.finish(manifest, runner, bundle.reproducer(s.name, b.run_id, manifest["git"]["commit"]),
                              pack=pack)
    return Outcome(code, final, tar, runner, error, checks, interrupted)


def _traffic_line(t):
    parts = [f"{name} {c['frames']} frames ({c['send_errors']} send errors)" for name, c in t.items()]
    return "; ".join(parts)


def _stage_line(r):
    mark = {"passed": "[green]✓[/green]", "failed": "[red]✗[/red]", "skipped": "[dim]-[/dim]"}[r.status]
    return f"{mark} {r.name:<12} {r.seconds:7.1f} s  {r.detail}"
