"""Stage 7: from raw records to samples, statistics, checks and plots.

Reads what `measure` left in the bundle's raw/ folder; writes samples.csv,
summary.json, the PNG plots and the list of checks that decide exit code 1.
"""

import json
import re
from collections import Counter
from dataclasses import dataclass

from . import analysis, breakdown, report, vcpucount, xentrace
from .scenario import TIMINGS

GUEST_IRQ_NAMES = ("eth0*",)  # the e1000e's vectors in the RT guest: eth0, eth0-rx-0, eth0-tx-0
XEN_IRQ_LINE = re.compile(r"IRQ:\s*(\d+)\s+vec:([0-9a-f]+)\s+(\S+).*?\bd(\d+):\s*(\d+)\(")


class InfraCheckFailed(Exception):
    """A check that means the testbed, not the measurement, is wrong (e.g. no MSI)."""


@dataclass
class XenIrq:
    irq: int
    vector: int
    kind: str  # e.g. PCI-MSI/-X, IO-APIC-level
    domid: int
    pirq: int


def xen_guest_irqs(table_text, domid):
    """Xen's IRQ table (`xl debug-keys i`) -> the IRQs bound to domain `domid`."""
    out = []
    for m in XEN_IRQ_LINE.finditer(table_text):
        if int(m.group(4)) == domid:
            out.append(XenIrq(int(m.group(1)), int(m.group(2), 16), m.group(3), domid, int(m.group(5))))
    return out


def map_irqs(xen_irqs, guest_irqs, vmm_counts, guest_counts):
    """Guest Linux IRQ -> Xen IRQ. The guest cannot see its pirq numbers, but Xen and the guest
    both allocate the device's vectors in MSI-X entry order, so with the same number of vectors
    on both sides the sorted lists match one to one. Otherwise fall back to activity rank (the
    busiest guest vector is the busiest Xen IRQ of the RT domain). -> (map, method)."""
    if guest_irqs and len(guest_irqs) == len(xen_irqs):
        return dict(zip(sorted(guest_irqs), sorted(xen_irqs))), "MSI-X entry order (both sides sorted)"
    guest_ranked = [irq for irq, n in guest_counts.most_common() if n]
    vmm_ranked = [irq for irq, n in vmm_counts.most_common() if n]
    if len(guest_ranked) > len(vmm_ranked):
        raise InfraCheckFailed(f"the RT guest saw interrupts on {len(guest_ranked)} vectors but Xen delivered "
                               f"only {len(vmm_ranked)} of its IRQs: {dict(guest_counts)} vs {dict(vmm_counts)}")
    return dict(zip(guest_ranked, vmm_ranked)), "activity rank"


def dump_body(text, source):
    """The ftrace lines between rtagent's markers (the console also echoes the command)."""
    begin, end = text.find("RTAGENT-DUMP-BEGIN"), text.find("RTAGENT-DUMP-END")
    if begin < 0 or end < 0:
        raise analysis.AnalysisError(f"{source}: rtagent's dump markers are missing: the dump is incomplete")
    return text[text.index("\n", begin) + 1:end]


def overlap(vmm, guest):
    """Keep the guest stamps of the span xentrace was recording: the guest's tracing starts
    before xentrace and stops after it, so its first and last stamps have no VMM partner.
    -> (vmm, guest, how many guest stamps were left out)."""
    if not vmm or not guest:
        return vmm, guest, 0
    first_vmm, last_vmm = min(v.tsc for v in vmm), max(v.tsc for v in vmm)
    # The first guest stamp after the last VMM stamp may still belong to it; later ones cannot.
    end = min((g.tsc for g in guest if g.tsc > last_vmm), default=last_vmm)
    kept = [g for g in guest if first_vmm < g.tsc <= end]
    return vmm, kept, len(guest) - len(kept)


def check(name, ok, detail):
    return {"name": name, "ok": bool(ok), "detail": detail}


def absorbed(rec):
    """Frames each guest took in during the measurement, from the counters before and after."""
    def delta(after, before, *keys):
        try:
            a, b = after, before
            for k in keys:
                a, b = a[k], b[k]
            return int(a) - int(b)
        except (KeyError, TypeError, ValueError):
            return None
    vifs = [n for n in rec.counters_after.get("dom0", {}) if n.startswith("vif")]
    return {"rt_guest_rx": delta(rec.counters_after, rec.counters_before, "rt_guest", "rx_packets"),
            "load_nic_rx_in_dom0": delta(rec.counters_after, rec.counters_before, "dom0", "eth0", "rx_packets"),
            "load_guest_rx": sum(delta(rec.counters_after, rec.counters_before, "dom0", n, "tx_packets") or 0
                                 for n in vifs) if vifs else None}


def evaluate(s, rec, out_dir, accel):
    """-> (summary dict, checks list). Raises InfraCheckFailed when MSI is not in use, or
    when a Natsume run's interrupts did not take Natsume's fast path."""
    if rec.natsume_fast_path == 0:
        raise InfraCheckFailed("Natsume's fast path took no interrupt (debug key j: fast-path irqs=0): "
                               "this run would be a stock result under a Natsume label")
    if not s.measurement.stamping:
        summary = {"scenario": s.name, "variant": s.hypervisor.variant, "load": s.measurement.load,
                   "accelerator": accel, "timing": s.machine.timing, "stamping": False, "absorbed": absorbed(rec),
                   "traffic": rec.traffic,
                   "counters_before": rec.counters_before, "counters_after": rec.counters_after}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary, []
    trace = xentrace.read_trace(rec.trace_path, allow_truncated=True)
    lost = xentrace.lost_records(trace.records)
    rt_irqs = xen_guest_irqs(rec.xen_irq_table, rec.rt_domid)
    if not rt_irqs:
        raise InfraCheckFailed(f"Xen's IRQ table shows no IRQ bound to the RT guest (domain {rec.rt_domid})")
    if not all("MSI" in x.kind for x in rt_irqs):
        raise InfraCheckFailed("the RT guest's device interrupts are not message-signalled in Xen: "
                               + ", ".join(f"IRQ {x.irq} {x.kind}" for x in rt_irqs))
    rt_irq_numbers = {x.irq for x in rt_irqs}
    entries = xentrace.vmm_stamps(trace.records, str(rec.trace_path))  # every IRQ's: the vCPU split reads them all
    vmm = [v for v in entries if v.irq in rt_irq_numbers]
    body = dump_body(rec.guest_dump_path.read_text(errors="replace"), rec.guest_dump_path)
    guest = analysis.parse_ftrace(body, irq_names=GUEST_IRQ_NAMES, source=str(rec.guest_dump_path))
    vmm, stamps, outside = overlap(vmm, guest.stamps)
    irq_map, how = map_irqs(rt_irq_numbers, {int(k) for k in rec.guest_irqs}, Counter(v.irq for v in vmm),
                            Counter(g.irq for g in stamps))
    pairing = analysis.pair(vmm, stamps, rec.tsc_khz, irq_map=irq_map)
    merged, lonely = analysis.coalesced(vmm, pairing.samples)
    bad = lonely + pairing.unpaired_guest + len(pairing.nonpositive)
    unpaired_pct = 100 * bad / (len(pairing.samples) + bad) if pairing.samples or bad else 0.0
    paths = xentrace.path_records(trace.records, str(rec.trace_path))
    breakdowns = breakdown.attach(pairing.samples, paths, rec.rt_domid)
    splits, vcpu_split = split_by_vcpu(rec, entries, analysis.ftrace_timestamps(body), pairing.samples, breakdowns)
    analysis.write_samples_csv(out_dir / "samples.csv", pairing.samples, breakdowns, splits)
    m = s.measurement
    timing = s.machine.timing
    summary = {
        "scenario": s.name, "variant": s.hypervisor.variant, "load": m.load, "accelerator": accel,
        "timing": timing, "unit": TIMINGS[timing], "calibration": rec.calibration,
        "note": report.EMULATION_NOTE.format(accel=accel) + " " + report.TIMING_NOTES[timing],
        "tsc_khz": rec.tsc_khz,
        "irq_mode_guest": rec.guest_irq_mode,
        "xen_irqs_of_rt_guest": [x.__dict__ for x in rt_irqs], "irq_map": irq_map, "irq_map_method": how,
        "vmm_stamps": len(vmm), "guest_stamps": len(stamps), "outside_common_window": outside,
        "coalesced_vmm": merged, "lonely_vmm": lonely, "unpaired_pct": unpaired_pct,
        "guest_lines_cut_off": guest.cut_off,
        "guest_lost_events": guest.lost_events, "trace_lost_records": lost,
        "trace_truncated_at": trace.truncated_at, **analysis.summary(pairing),
        "traffic": rec.traffic, "pacing": rec.pacing, "absorbed": absorbed(rec), "stamping": True,
        "natsume_fast_path_irqs": rec.natsume_fast_path, "natsume_dropped": rec.natsume_dropped or None,
        "path_records": len(paths), "paths": breakdown.path_counts(breakdowns),
        "breakdown": breakdown.segment_stats(breakdowns, [x.latency_ticks for x in pairing.samples]),
        "vcpu_split": vcpu_split, "dump": rec.dump or None, "measure_steps_s": rec.steps or None,
        "counters_before": rec.counters_before, "counters_after": rec.counters_after,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    unit = report.UNITS[timing]
    latencies = [getattr(x, unit.key) for x in pairing.samples]
    label = f"{s.hypervisor.variant}, load {'on' if m.load else 'off'}"
    report.plot_histogram({label: latencies}, out_dir / "latency-histogram.png", f"{s.name}: interrupt latency", unit)
    report.plot_cdf({label: latencies}, out_dir / "latency-cdf.png", f"{s.name}: interrupt latency CDF", unit)
    checks = [
        check("enough_samples", len(pairing.samples) >= m.min_samples,
              f"{len(pairing.samples)} paired samples (need ≥ {m.min_samples})"),
        check("unpaired", unpaired_pct <= m.max_unpaired_pct,
              f"{unpaired_pct:.2f} % unpaired (VMM {lonely}, guest {pairing.unpaired_guest}; allowed ≤ "
              f"{m.max_unpaired_pct} %); {merged} VMM entries coalesced into a later handler run"),
        check("positive_latencies", not pairing.nonpositive,
              f"{len(pairing.nonpositive)} guest stamps at or before their VMM stamp"),
        check("trace_complete", lost == 0 and trace.truncated_at is None and guest.lost_events == 0,
              f"xentrace lost {lost} records, truncated at {trace.truncated_at}; ftrace lost {guest.lost_events}"),
    ]
    if rec.natsume_fast_path is not None:
        dropped = {k: v for k, v in (rec.natsume_dropped or {}).items() if v}
        checks.append(check("natsume_delivered_all", not dropped,
                            "Natsume's dedicated handler dropped "
                            + (", ".join(f"{v} {k}" for k, v in dropped.items()) if dropped
                               else "no interrupt (unbound 0, busy 0)")))
        handled = guest_handled_irqs(rec)
        checks.append(check("natsume_took_every_interrupt", handled <= rec.natsume_fast_path,
                            f"the RT guest ran its e1000e handlers {handled} times since they were bound, Natsume's "
                            f"fast path took {rec.natsume_fast_path} interrupts (read later; more handler runs would "
                            "mean some came by stock Xen's path)"))
    return summary, checks


def split_by_vcpu(rec, entries, clocks, samples, breakdowns):
    """The vCPU plugin's split of each sample (vcpucount.py) -> (rows or None, summary or None).
    entries: Xen's entry stamps of every IRQ; clocks: every TSC the RT guest's ftrace clock read
    (each line of the dump)."""
    if rec.vcpu_log is None or not rec.vcpu_log.exists():
        return None, None
    events, _totals = vcpucount.read_log(rec.vcpu_log)  # the run's totals come only at QEMU's exit
    on_rt_pcpu = [v.tsc for v in entries if v.cpu == rec.rt_pcpu]
    rows, _ = vcpucount.split_samples(samples, on_rt_pcpu, clocks, events)
    return rows, vcpucount.split_stats(rows, samples, breakdowns, rec.rt_pcpu, len(events))


def guest_handled_irqs(rec):
    """The RT guest's handler runs of the e1000e's IRQs (rtagent's irqN counters, after the traffic)."""
    counters = (rec.counters_after or {}).get("rt_guest") or {}
    return sum(int(v) for k, v in counters.items() if re.fullmatch(r"irq\d+", k) and str(v).isdigit())
