"""The storm stage: the RT guest makes its own e1000e fire nonstop, as a misbehaving guest could
(`measurement.storm_ics_writes` writes of an interrupt cause to the device's ICS, by
guest_agents/icsstorm.c), then the RT pCPU must still answer: the RT guest's console and dom0.

Stock Xen masks an IRQ that fires more than 10,000 times in 10 ms (irq_ratelimit_threshold);
Natsume's fast path keeps that check. raw/storm.json records what the storm achieved in the
same unit, interrupts per 10 ms of guest time, so a reader sees whether the limiter was reached.
"""

import json
import re
import time
from collections import Counter

from . import diagnose, render, xentrace
from .deadline import Deadline
from .evaluate import xen_guest_irqs
from .measure import (GuestConsole, MeasureError, guest_counters, natsume_counters, rt_domid, start_xentrace,
                      stop_xentrace, xen_irq_table)

ICS_OFFSET = 0xC8  # e1000e Interrupt Cause Set, in BAR0
# RXQ0, the cause of the RT guest's rx vector. QEMU's e1000e (7.2) sends a cause again only after it
# was cleared, and under MSI-X with IMS set an ICR read does not clear it: EIAC does, on each MSI-X.
# RXQ0 is in the driver's EIAC, so every write after the guest's NAPI poll re-enabled the vector
# fires again. OTHER is not: it stays pending after its first interrupt (tried: storm-stock of
# 2026-12-03 06:39, raw/storm-after: irq "eth0" fired once, ICR 0x81000206 with OTHER set).
# Measured with throttling off, 1,000,000 writes, stock: 215 interrupts, 122 per 10 ms of guest time.
# The device sets that ceiling: QEMU's e1000e keeps each vector at least 500 x 256 ns apart whatever
# the guest writes to EITR (E1000E_MIN_XITR), and Xen's trace shows no more entries than the guest
# handled. So one emulated e1000e stays far below Xen's limiter: the stage shows survival only.
STORM_CAUSE = 0x00100000
XEN_RATELIMIT_IRQS = 10_000  # per 10 ms: Xen's irq_ratelimit_threshold default
WINDOW_MS = 10
STORM_FILE = "storm.json"
TRACE_FILE = "storm-xentrace.bin"

# The e1000e's BAR0 from the RT guest's sysfs (the PV guest sees the machine address), then the writes.
GUEST_COMMAND = ("d=$(ls -d /sys/bus/pci/drivers/e1000e/0000:* | head -n1); set -- $(head -n1 $d/resource); "
                 "icsstorm $(printf %x $(( $1 + {offset} ))) {writes} {value:x}")


def irq_total(counters):
    """Interrupts of the RT guest's e1000e lines in an `rtagent counters` dict (keys irqN)."""
    return sum(int(v) for k, v in counters.items() if k.startswith("irq") and v.isdigit())


def parse_storm(text):
    """-> (writes, ticks, start TSC) from icsstorm's line, or MeasureError with what it printed."""
    m = re.search(r"^ICSSTORM writes=(\d+) ticks=(\d+) start=(\d+)", text, re.M)
    if not m:
        raise MeasureError(f"the RT guest's icsstorm printed no result:\n{text[-500:]}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def summarize(writes, ticks, irqs, tsc_khz, answered_s):
    """What the storm achieved, in the limiter's own unit (interrupts per 10 ms of guest time)."""
    window_ticks = tsc_khz * WINDOW_MS
    per_window = irqs * window_ticks / ticks if ticks else 0.0
    return {"writes": writes, "ticks": ticks, "interrupts": irqs, "tsc_khz": tsc_khz,
            "interrupts_per_10ms": round(per_window, 1), "xen_ratelimit_per_10ms": XEN_RATELIMIT_IRQS,
            "reached_ratelimit": per_window >= XEN_RATELIMIT_IRQS, "answered_after_s": round(answered_s, 2)}


# After the storm, what says where its interrupts stopped: j (Natsume's counters; first, because
# read after the long i and M dumps its lines were not in the ring yet, in a storm-natsume run),
# i (Xen's IRQs: in-flight, the guest's flags), M (MSI/MSI-X state and mask bits), e (event channels).
AFTER_KEYS = "jiMe"
AFTER_DIR = "storm-after"


def xen_view(trace_path, irq_table, domid, start, ticks):
    """What Xen saw during the storm (TSC start .. start + ticks, the guest's TSC being Xen's), from
    its trace: interrupt entries on the RT guest's IRQs and upcall deliveries to it. Entries well
    above the guest's handler runs would say the guest coalesced them (one upcall for several);
    about as many, that the device sent no more."""
    records = xentrace.read_trace(trace_path, allow_truncated=True).records
    irqs = {x.irq for x in xen_guest_irqs(irq_table, domid)}
    end = start + ticks
    entries = [v for v in xentrace.vmm_stamps(records, str(trace_path)) if v.irq in irqs and start <= v.tsc <= end]
    upcalls = [p for p in xentrace.path_records(records, str(trace_path))
               if p.domid == domid and start <= p.bounce_tsc <= end]
    return {"entries": len(entries), "entries_per_irq": dict(Counter(str(v.irq) for v in entries)),
            "upcalls": len(upcalls),
            "lost_records": xentrace.lost_records(records)}


def storm(agent, s, raw_dir, tsc_khz, timeout, machine=None):
    """Run the storm, prove the RT guest and dom0 answer after it, keep the state after it
    (raw/storm-after/: Xen's debug keys, the guest's /proc/interrupts, the e1000e's registers);
    -> the stage's detail line."""
    d = Deadline(timeout)
    rt = GuestConsole(agent, s.rt_guest.name)
    before = irq_total(guest_counters(rt))
    cmd = GUEST_COMMAND.format(offset=ICS_OFFSET, writes=s.measurement.storm_ics_writes, value=STORM_CAUSE)
    trace_pid = start_xentrace(agent, s.hypervisor.trace_buffer_pages)  # what Xen saw of it
    out = rt.command(cmd, r"^ICSSTORM(-ERROR)? ", d.left)
    writes, ticks, start = parse_storm(out)
    t0 = time.monotonic()
    rt.command("echo STORM-ANSWERED", r"^STORM-ANSWERED", d.slice(120))  # the RT pCPU is not livelocked
    answered = time.monotonic() - t0
    irqs = irq_total(guest_counters(rt)) - before
    agent.run("xl list", timeout=d.slice(60), check=True)  # nor is dom0
    stop_xentrace(agent, trace_pid, render.SHARE_MOUNT, name=TRACE_FILE)
    result = summarize(writes, ticks, irqs, tsc_khz, answered)
    result["xen"] = xen_view(raw_dir / TRACE_FILE, xen_irq_table(agent), rt_domid(agent, s), start, ticks)
    result.update(cause=f"{STORM_CAUSE:#010x}", interrupt_throttle_rate=s.rt_guest.interrupt_throttle_rate)
    if s.hypervisor.variant == "natsume":
        fast, dropped = natsume_counters(agent, raw_dir / "natsume-counters-storm.txt")
        result["natsume"] = {"fast_path_irqs": fast, **dropped}
    (raw_dir / STORM_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if machine is not None:
        (raw_dir / AFTER_DIR).mkdir(exist_ok=True)
        diagnose.collect(agent, machine, s, raw_dir / AFTER_DIR, keys=AFTER_KEYS)
    return (f"{writes} ICS writes in {ticks} ticks -> {irqs} interrupts "
            f"(Xen, during the writes: {result['xen']['entries']} entries, {result['xen']['upcalls']} upcalls) "
            f"({result['interrupts_per_10ms']:.0f} per 10 ms; Xen's limiter: {XEN_RATELIMIT_IRQS}); "
            f"the RT guest answered {answered:.1f} s later, dom0 too")
