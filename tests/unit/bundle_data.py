"""Real-looking result bundles for the bundle tools' tests, made from tests/data the way a run makes
them: raw records in raw/, logs in logs/, then evaluate.evaluate() (samples.csv, summary.json, plots),
junit.xml, and Bundle.finish() (manifest.json, stages, reproducer, the folder renamed and packed).

The trace is tests/data/xentrace-natsume-2cpu.bin with one path record per measured interrupt added
(one more xentrace window), so the breakdown has classes; the guest dump is tests/data/ftrace-rt-guest.txt
between rtagent's markers. `faster` takes that many ticks off each guest handler stamp (a faster variant).
"""

import dataclasses
import json
import re
import shutil

from orchestrator import bundle, evaluate, report, scenario
from orchestrator.measure import MeasureRecords
from tests.conftest import ROOT
from tests.unit.test_xentrace import KICK, WAKE, SCHEDIN, path, window

DATA = ROOT / "tests" / "data"
COMMIT_A = "0123456789abcdef0123456789abcdef01234567"
COMMIT_B = "fedcba9876543210fedcba9876543210fedcba98"
TSC_KHZ = 2_400_000
# Xen's `i` debug key as xl dmesg shows it: the measured NIC's MSI-X is IRQ 29, bound to the RT guest (d1)
IRQ_TABLE = """\
(XEN) IRQ information:
(XEN)    IRQ:   0 vec:f0 IO-APIC-edge      status=000 aff:{0}/{0} time.c#timer_interrupt()
(XEN)    IRQ:  16 vec:38 IO-APIC-level     status=030 aff:{0}/{0-1} in-flight=0 d0: 16(---)
(XEN)    IRQ:  29 vec:51 PCI-MSI/-X        status=030 aff:{1}/{1} in-flight=0 d1:151(---)
"""
# (Xen entry E, the guest's upcall U) of the four paired interrupts in tests/data (expected-samples.csv)
PAIRS = [(1_000_000_000, 1_000_010_000), (1_000_500_000, 1_000_505_000), (1_001_500_000, 1_001_507_000),
         (1_002_000_000, 1_002_003_000)]


def trace_bytes():
    """tests/data's trace plus a path record per measured interrupt: running, woken, running, running."""
    records = []
    for k, (e, u) in enumerate(PAIRS):
        bounce = u - 1_000
        if k == 1:
            records.append(path(1, 0, 1 | WAKE | SCHEDIN, bounce, pending=e + 500, notify=e + 700, schedin=e + 3_000))
        else:
            records.append(path(1, 0, 1 | KICK, bounce, pending=e + 600, notify=e + 800))
    return (DATA / "xentrace-natsume-2cpu.bin").read_bytes() + window(1, *records)


def dump_text(faster=0, lost=False):
    """The guest's dump; without `lost` the test data's `[LOST 1 EVENTS]` line is left out, so the run
    passes its trace_complete check."""
    body = (DATA / "ftrace-rt-guest.txt").read_text()
    if not lost:
        body = body.replace("CPU:0 [LOST 1 EVENTS]\n", "")
    if faster:
        body = re.sub(r"(\d+)(: irq_handler_entry: irq=24 )", lambda m: f"{int(m.group(1)) - faster}{m.group(2)}", body)
    return "rtagent dump\nRTAGENT-DUMP-BEGIN\n" + body + "\nRTAGENT-DUMP-END lines=20\n"


def guest_console():
    return ("TESTBED-IRQMODE 0000:00:05.0 msix\nRTAGENT-CALIBRATE n=400000 base=20 loop=400021\n"
            "RTAGENT-STARTED irqs=24:eth0-rx-0 upcall=xen_evtchn_do_upcall buffer_kb=4096\nRTAGENT-STOPPED\n")


def smoke(variant="stock"):
    s = scenario.load(ROOT / "testbed.yaml", "smoke-natsume" if variant == "natsume" else "smoke-stock")
    return dataclasses.replace(s, measurement=dataclasses.replace(s.measurement, min_samples=3))


def make_run(results, variant="stock", commit=COMMIT_A, faster=0, pack=True, lost=False):
    """-> (folder, tarball or None) of a finished run bundle."""
    s = smoke(variant)
    b = bundle.Bundle(results, s.name)
    shutil.copy(ROOT / "testbed.yaml", b.config / "testbed.yaml")
    (b.raw / "xentrace.bin").write_bytes(trace_bytes())
    (b.raw / "rt-guest-dump.log").write_text(dump_text(faster, lost))
    counters = {"dom0": {"eth0": {"rx_packets": 100}}, "rt_guest": {"rx_packets": "10"}}
    after = {"dom0": {"eth0": {"rx_packets": 20_100}}, "rt_guest": {"rx_packets": "5130"}}
    sent = {"measured": {"frames": 5120, "send_errors": 0}, "load": {"frames": 20_000, "send_errors": 0}}
    (b.raw / "traffic.json").write_text(json.dumps({"sent": sent, "before": counters, "after": after}))
    for when in ("sysinfo-before", "sysinfo-after"):
        (b.raw / when).mkdir()
        (b.raw / when / "xen-irqs.txt").write_text(IRQ_TABLE)
        (b.raw / when / "xl-list.txt").write_text("Name   ID   Mem VCPUs\tState\tTime(s)\nDomain-0  0  1024  2  r-----  9.0\n"
                                                  "rt   1   256   1  -b----  1.0\nload  2  256  1  -b----  1.0\n")
    (b.logs / "xl-info.txt").write_text("host : testbed\ncpu_mhz : 2400.000\n")
    (b.logs / "console.log").write_text("(XEN) Xen version 4.17\n")
    (b.logs / f"guest-{s.rt_guest.name}-console.log").write_text(guest_console())
    rec = MeasureRecords(trace_path=b.raw / "xentrace.bin", guest_dump_path=b.raw / "rt-guest-dump.log",
                         traffic=sent, counters_before=counters, counters_after=after, tsc_khz=TSC_KHZ, rt_domid=1,
                         xen_irq_table=IRQ_TABLE, guest_irq_mode="msix", guest_irqs={"24": "eth0-rx-0"},
                         calibration={"instructions": 400000, "ticks": 400001, "read_overhead_ticks": 20,
                                      "ticks_per_instruction": 1.0000025, "tolerance": 0.001, "checked": True,
                                      "ok": True})
    if variant == "natsume":
        (b.raw / "natsume-counters.txt").write_text(
            "(XEN) natsume: fast-path irqs=5\n(XEN) natsume:   vector 0xf2 IRQ 29 entry 0: irqs=5 unbound=0 busy=0 "
            "refused=0 -> d1 pirq 55 port 9\n")
        rec.natsume_fast_path, rec.natsume_dropped = 5, {"unbound": 0, "busy": 0}
    summary, checks = evaluate.evaluate(s, rec, b.dir, "tcg")
    stages = [bundle_stage(n) for n in ("images", "render", "qemu_up", "xen_banner", "iommu", "dom0_ready",
                                        "toolstack", "rt_guest", "load_guest", "measure", "evaluate", "collect",
                                        "shutdown")]
    failed = [c["name"] for c in checks if not c["ok"]]
    code = 1 if failed else 0
    manifest = {"scenario": s.as_dict(), "scenario_file": str(ROOT / "testbed.yaml"),
                "status": "passed" if code == 0 else "measurement failed", "host": {"hostname": "ci-7", "cpus": 2},
                "git": {"commit": commit, "dirty": False}, "started_utc": "2026-12-01T10:00:00Z",
                "accelerator": {"requested": "auto", "used": "tcg", "why": "TCG: /dev/kvm is not usable on this host"},
                "summary": {k: summary.get(k) for k in ("timing", "paired", "latency_ticks")},
                "exit_code": code, "failed_stage": None, "failed_checks": failed, "error": None}
    report.junit(b.dir / "junit.xml", f"testbed.{s.name}", stages, checks)
    return b.finish(manifest, Stages(stages), bundle.reproducer(s.name, b.run_id, commit), pack=pack)


@dataclasses.dataclass
class bundle_stage:
    name: str
    status: str = "passed"
    seconds: float = 1.5
    detail: str = "ok"


class Stages:
    def __init__(self, results):
        self.results = results

    def as_list(self):
        return [dataclasses.asdict(r) for r in self.results]

    def table(self):
        return "".join(f"{r.name} {r.status}\n" for r in self.results)


def make_old_layout(results):
    """A run bundle as the code before instruction timing wrote it (commit 2a44bab): samples.csv with
    latency_cycles and no path columns, summary.json and the scenario without timing, no breakdown."""
    folder, _ = make_run(results, pack=False)
    old = folder.with_name(folder.name.replace("smoke-stock", "smoke-stock-old"))
    folder.rename(old)
    rows = (old / "samples.csv").read_text().splitlines()
    out = ["sequence,cpu,irq,vmm_tsc,guest_tsc,latency_cycles,latency_ns"]
    for row in rows[1:]:
        c = row.split(",")
        out.append(",".join(c[:5] + c[6:8]))
    (old / "samples.csv").write_text("\n".join(out) + "\n")
    summary = json.loads((old / "summary.json").read_text())
    for key in ("timing", "unit", "calibration", "breakdown", "paths", "path_records", "latency_ticks"):
        summary.pop(key, None)
    (old / "summary.json").write_text(json.dumps(summary))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["scenario"]["machine"].pop("timing")
    for key in ("stamping", "guest_upcall_stamp"):
        manifest["scenario"]["measurement"].pop(key)
    manifest["run_id"] = old.name
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old
