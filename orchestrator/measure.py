"""Stage 6: the paper's procedure on the booted stack.

xentrace in dom0 records our VMM stamps (full TSC at Xen's interrupt entry,
and the TSCs of each upcall's delivery path) straight into the host share;
`rtagent` in the RT guest stamps its handler entries with ftrace (trace_clock
x86-tsc); the host floods the load NIC and sends bursts to the measured NIC;
afterwards both records and the counters of every NIC are taken off the
machine. Analysis happens on the host.
"""

import json
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import pacing, progress, render, traffic, vcpucount, xentrace
from .boot import GUEST_LOG, BootFailure
from .deadline import Deadline

XENTRACE_EVENTS = xentrace.XENTRACE_EVENTS  # our TRC_TESTBED subclass only, in every variant
TRACE_FILE = "xentrace.bin"
DOM0_TRACE = "/tmp/xentrace.bin"
GUEST_DUMP = "rt-guest-dump.log"
GUEST_DUMP_WIRE = "rt-guest-dump.gz.b64"  # what crossed the console; unpacked into GUEST_DUMP


class MeasureError(BootFailure):
    pass


@dataclass
class MeasureRecords:
    """Where the raw records are, and the counters around the measurement."""
    trace_path: Path
    guest_dump_path: Path
    traffic: dict = field(default_factory=dict)
    counters_before: dict = field(default_factory=dict)
    counters_after: dict = field(default_factory=dict)
    tsc_khz: int = 0
    rt_domid: int = 0
    xen_irq_table: str = ""  # Xen's `i` debug-key dump, taken after the guests bound their IRQs
    guest_irq_mode: str = "unknown"  # what the RT guest reported: msi, msix or intx
    guest_irqs: dict = field(default_factory=dict)  # the e1000e's Linux IRQs in the guest -> their names
    natsume_fast_path: int = None  # interrupts Natsume's dedicated handler took (None: stock)
    natsume_dropped: dict = field(default_factory=dict)  # Natsume's silent losses: {"unbound": n, "busy": n}
    calibration: dict = field(default_factory=dict)  # calibrate(): what one TSC tick is in this run
    dump: dict = field(default_factory=dict)  # the dump's size, console bytes and seconds
    steps: dict = field(default_factory=dict)  # wall seconds of each step of the procedure
    vcpu_log: Path = None  # the vCPU plugin's records (None: it did not run)
    pacing: dict = field(default_factory=dict)  # instruction pacing: what the gates and arrival logs say (pacing.py)
    rt_pcpu: int = 0


class GuestConsole:
    """A guest's console shell, typed into from dom0 through the pty xenconsoled
    holds for it, and read back from the log xenconsoled keeps."""

    def __init__(self, agent, name):
        self.agent = agent
        self.name = name
        self.log = GUEST_LOG.format(name=name)

    def size(self):
        out = self.agent.run(f"stat -c %s {shlex.quote(self.log)}", timeout=30).stdout.strip()
        return int(out) if out.isdigit() else 0

    def send(self, line):
        tty = f'"$(xenstore-read /local/domain/$(xl domid {shlex.quote(self.name)})/console/tty)"'
        res = self.agent.run(f"printf '%s\\n' {shlex.quote(line)} > {tty}", timeout=30)
        if not res.ok:
            raise MeasureError(f"cannot type into {self.name}'s console: {res.stderr.strip()}")

    def read_from(self, offset):
        return self.agent.run(f"tail -c +{offset + 1} {shlex.quote(self.log)}", timeout=60).stdout

    def command(self, line, done, timeout, to_file=None):
        """Type `line`, wait until regex `done` shows in the new console output; -> that output.
        With `to_file` (a path in dom0, e.g. on the host share) the output is copied there
        instead of through the agent, and read back on the host by the caller."""
        start = self.size()
        self.send(line)
        new_output = f"tail -c +{start + 1} {shlex.quote(self.log)}"
        d = Deadline(timeout)
        for _ in d.poll(0.1, max_interval=0.5, backoff=1.5):  # most commands answer within a second
            if self.agent.run(f"{new_output} | grep -qE {shlex.quote(done)}", timeout=d.attempt(60)).ok:
                if to_file:
                    self.agent.run(f"{new_output} > {shlex.quote(to_file)}", timeout=120, check=True)
                    return ""
                return self.read_from(start)
        text = self.read_from(start)
        raise MeasureError(f"{self.name}: `{line}` gave no /{done}/ within {timeout} s; it printed:\n"
                           + "\n".join(text.splitlines()[-20:]))


def dom0_counters(agent):
    """Per-interface packet counters in dom0 (its e1000 is the load NIC; vifN.0 feeds the load guest)."""
    out = agent.run("for i in /sys/class/net/*; do n=${i##*/}; printf '%s' $n; "
                    "for c in rx_packets rx_dropped rx_missed_errors tx_packets tx_dropped; do "
                    "printf ' %s=%s' $c $(cat $i/statistics/$c); done; echo; done", timeout=30).stdout
    table = {}
    for line in out.splitlines():
        name, *pairs = line.split()
        table[name] = {k: int(v) for k, v in (p.split("=") for p in pairs) if v.isdigit()}
    return table


def guest_counters(console=None, text=None):
    """rtagent's counters line: `RTAGENT-COUNTERS key=value ...`, asked for, or found in `text` (the
    output of `rtagent sysinfo`, which ends with it)."""
    if text is None or not re.search(r"^RTAGENT-COUNTERS ", text, re.M):
        text = console.command("rtagent counters", r"^RTAGENT-COUNTERS ", 60)
    line = re.search(r"^RTAGENT-COUNTERS (.*?)\r?$", text, re.M).group(1)
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


CALIBRATION_TOLERANCE = 0.001  # instruction timing: a loop of N instructions reads N ticks within 0.1 %
CALIBRATION_LOOP = 200_000  # iterations (2 instructions each): short enough that most trials run uninterrupted


def calibrate(rt, timing):
    """Time a loop of known instruction count in the RT guest (guest_agents/tsccal.c); -> a dict.
    Under instruction timing one tick must be one instruction, or every latency of the run is in an
    unknown unit: MeasureError (exit 2). Under host timing the ratio is reported, not checked."""
    text = rt.command(f"rtagent calibrate {CALIBRATION_LOOP}", r"^RTAGENT-(CALIBRATE|ERROR) ", 120)
    m = re.search(r"^RTAGENT-CALIBRATE n=(\d+) base=(\d+) loop=(\d+)", text, re.M)
    if not m:
        raise MeasureError(f"the RT guest's calibration loop printed no result:\n{text[-500:]}")
    instructions, base, loop = (int(x) for x in m.groups())
    ticks = loop - base
    result = {"instructions": instructions, "ticks": ticks, "read_overhead_ticks": base,
              "ticks_per_instruction": ticks / instructions, "tolerance": CALIBRATION_TOLERANCE,
              "checked": timing == "instructions"}
    result["ok"] = not result["checked"] or abs(ticks - instructions) <= CALIBRATION_TOLERANCE * instructions
    if not result["ok"]:
        raise MeasureError(f"calibration failed: a loop of {instructions} instructions in the RT guest read {ticks} "
                           f"TSC ticks ({result['ticks_per_instruction']:.5f} per instruction; instruction timing "
                           f"needs 1 within {CALIBRATION_TOLERANCE:.1%}): latencies would not be instruction counts")
    return result


def tsc_khz(agent):
    """The TSC frequency Xen calibrated at boot (`xl info` cpu_mhz)."""
    m = re.search(r"^cpu_mhz\s*:\s*(\d+)(?:\.(\d+))?", agent.run("xl info", timeout=60).stdout, re.M)
    if not m:
        raise MeasureError("`xl info` shows no cpu_mhz: cannot convert TSC cycles to ns")
    return int(m.group(1)) * 1000 + int((m.group(2) or "0").ljust(3, "0")[:3])


def check_tsc_native(agent, domid):
    """The RT guest must read the host TSC unmodified (tsc_mode native), or stamps don't compare."""
    text = agent.run("xl debug-keys s; xl dmesg | tail -n 40", timeout=60).stdout
    modes = re.findall(rf"dom{domid}: mode=(\d+)", text)
    if not modes or modes[-1] != "2":
        raise MeasureError(f"the RT guest (domain {domid}) does not run with tsc_mode native (Xen's `s` "
                           f"debug key shows mode={modes[-1] if modes else '?'}; 2 is native)")


# The first line of a debug key's output, where its handler prints no "'k' pressed" line.
XEN_KEY_HEADERS = {"i": "IRQ information:", "M": "MSI information:", "j": "natsume: fast-path"}


def xen_irq_table(agent):
    """Xen's IRQ table (debug key `i`), the last dump in its console ring."""
    text = agent.run("xl debug-keys i; xl dmesg", timeout=60, check=True).stdout
    header = XEN_KEY_HEADERS["i"]
    return text[text.rfind(header):] if header in text else text


def rt_domid(agent, s):
    return int(agent.run(f"xl domid {shlex.quote(s.rt_guest.name)}", timeout=30, check=True).stdout)


SYSINFO = {
    "dom0-interrupts.txt": "cat /proc/interrupts",
    "xen-irqs.txt": "xl debug-keys i; xl dmesg | tail -n 80",
    "xl-list.txt": "xl list",
}


def sysinfo(agent, rt, folder):
    """Snapshot of interrupt state in dom0, Xen and the RT guest (avocado's sysinfo); -> the RT guest's
    part (it ends with rtagent's counters line)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, command in SYSINFO.items():
        (folder / name).write_text(agent.run(command, timeout=60).stdout)
    text = rt.command("rtagent sysinfo", r"^RTAGENT-SYSINFO-END", 60)
    (folder / "rt-guest-interrupts.txt").write_text(text)
    return text


def start_xentrace(agent, pages):
    """xentrace in the background into dom0's tmpfs (writing straight onto the 9p share
    fails under traffic with EFAULT); -> its pid."""
    cmd = (f"setsid xentrace -D -e {XENTRACE_EVENTS} -S {pages} {DOM0_TRACE} "
           f"</dev/null >{DOM0_TRACE}.log 2>&1 & echo $!")
    pid = agent.run(cmd, timeout=30, check=True).stdout.strip()
    time.sleep(1)
    if not agent.run(f"kill -0 {pid}", timeout=30).ok:
        log = agent.run(f"cat {DOM0_TRACE}.log", timeout=30).stdout
        raise MeasureError(f"xentrace exited at once:\n{log}")
    return pid


def stop_xentrace(agent, pid, share_mount, timeout=60, name=TRACE_FILE):
    """SIGINT makes xentrace flush and exit; then the trace (as `name`) and its log go to the host share."""
    agent.run(f"kill -INT {pid}", timeout=30)
    for _ in Deadline(timeout).poll(0.5):
        if not agent.run(f"kill -0 {pid}", timeout=30).ok:
            break
    else:
        raise MeasureError(f"xentrace (pid {pid}) did not stop within {timeout} s of SIGINT")
    log = "xentrace.log" if name == TRACE_FILE else f"{name}.log"
    agent.run(f"cp {DOM0_TRACE} {share_mount}/{name} && cp {DOM0_TRACE}.log {share_mount}/{log}",
              timeout=300, check=True)


def send_traffic(s, say, pacing_paths=None, vcpu_ctl=None, out_dir=None, machine=None):
    """The flood (if any) around the bursts; -> counters as dicts (and, paced by the guest, "pacing")."""
    m = s.measurement
    if m.pacing == "instructions":
        return send_paced_traffic(s, say, pacing_paths, vcpu_ctl, out_dir, machine)
    stop = threading.Event()
    flood = None
    if m.load:
        duration = m.bursts * m.period_ms / 1000 + 10
        flood = traffic.Sender(traffic.Flood(rate_pps=m.load_rate_pps, duration_s=duration,
                                             payload_size=m.payload_bytes),
                               ("127.0.0.1", s.nics.load.udp_port), stop=stop)
        flood.start()
        time.sleep(1)  # the load is established before the first burst
    say(f"sending {m.bursts} bursts of {m.frames_per_burst} frames every {m.period_ms} ms"
        + (" while flooding the load NIC" if m.load else " (no load)"))
    with progress.task("bursts", total=m.bursts, unit="bursts") as advance:
        bursts = traffic.send_bursts(("127.0.0.1", s.nics.measured.udp_port), m.frames_per_burst,
                                     m.period_ms / 1000, m.bursts, payload_size=m.payload_bytes, on_burst=advance)
    result = {"measured": bursts.as_dict()}
    if flood is not None:
        stop.set()
        result["load"] = flood.join(30).as_dict()
    return result


def send_paced_traffic(s, say, pacing_paths, vcpu_ctl, out_dir, machine):
    """As send_traffic, the guest waiting at the vCPU plugin's gates for each chunk (orchestrator/pacing.py);
    -> counters by NIC role, and "pacing": what the gates and the arrival logs say."""
    m = s.measurement
    arrival_logs, fifos = pacing_paths
    if not vcpu_ctl or not fifos:
        raise MeasureError("instruction pacing needs the vCPU plugin's gate, and the plugin is not running here")
    if machine is None:
        raise MeasureError("instruction pacing releases each gate's frames over QMP, and no machine was given")
    logs = {role: pacing.ArrivalLog(arrival_logs[role], pacing.payload_tag).start() for role in pacing.paced_roles(m)}
    gate = pacing.Gate(*fifos)
    say(f"sending {m.bursts} bursts of {m.frames_per_burst} frames every {m.period_ms * 10**6:,} guest instructions"
        + (f" while flooding the load NIC ({pacing.flood_chunk(0, m.load_rate_pps, m.load_interval_us)} frames every "
           f"{pacing.gate_step(m):,} instructions)" if m.load else " (no load)") + ", the guest waiting for each at a gate")
    try:
        with progress.task("bursts", total=m.bursts, unit="bursts") as advance:
            release = lambda role: machine.flush_netfilter(pacing.BUFFER_ID.format(role=role))
            counters, rep = pacing.run(s, gate, vcpu_ctl, logs, release, threading.Event(), on_burst=advance)
    finally:
        gate.close()
        for role, log in logs.items():
            log.close()
            pacing.write_arrivals(log, Path(out_dir) / pacing.ARRIVALS_FILE.format(role=role))
    rep = rep.as_dict()
    say(f"pacing: {rep['gates']} gates of {rep['step']:,} instructions in {rep['host_s']:.1f} s host "
        f"({rep['instructions_per_host_s'] or 0:,.0f} paced instructions per host second); "
        + "; ".join(f"{role} NIC {c['arrived']} of {c['sent']} frames in, {c['spread']} chunks spread, "
                    f"{c['frames_per_guest_s'] or 0:,.0f} frames per guest second over {c['guest_span_s']:.1f} s"
                    for role, c in rep["chunks"].items()))
    return {**{role: c.as_dict() for role, c in counters.items()}, "pacing": rep}


def measure(agent, s, share_dir, say, vcpu_ctl=None, share_sub="", pacing_paths=None, machine=None):
    """Run the procedure; -> MeasureRecords (raw files land in share_dir/share_sub, which dom0
    sees as SHARE_MOUNT/share_sub). `vcpu_ctl`: the vCPU plugin's control file, when it runs (its
    log goes to that folder too). With `measurement.stamping: false` no probe runs: only the
    traffic and the counters (the probes' own cost is the difference in what the guests absorb)."""
    share_dir = Path(share_dir) / share_sub
    mount = f"{render.SHARE_MOUNT}/{share_sub}".rstrip("/")
    share_dir.mkdir(parents=True, exist_ok=True)
    agent.run(f"echo ok > {mount}/.share-check", timeout=30)
    if not (share_dir / ".share-check").exists():
        raise MeasureError(f"dom0 cannot write the host share ({mount} -> {share_dir})")
    rt = GuestConsole(agent, s.rt_guest.name)
    rec = MeasureRecords(trace_path=share_dir / TRACE_FILE, guest_dump_path=share_dir / GUEST_DUMP)
    step = _stepper(rec.steps)
    step("setup")
    rec.tsc_khz = tsc_khz(agent)
    rec.rt_pcpu = s.rt_guest.pcpu
    if vcpu_ctl:
        rec.vcpu_log = share_dir / vcpucount.LOG_FILE
        lo, hi = vcpucount.activate_guest_clock(agent, vcpu_ctl, rec.vcpu_log)
        say(f"vCPU counts: the guest clock {vcpucount.GUEST_CLOCK_SYMBOL} at {lo:#x}-{hi:#x}")
    rec.rt_domid = rt_domid(agent, s)
    check_tsc_native(agent, rec.rt_domid)
    mode = re.search(r"TESTBED-IRQMODE \S+ (\S+)", agent.run(f"cat {rt.log}", timeout=60).stdout)
    rec.guest_irq_mode = mode.group(1) if mode else "unknown"
    rec.xen_irq_table = xen_irq_table(agent)
    step("calibrate")
    rec.calibration = calibrate(rt, s.machine.timing)
    say(f"calibration: {rec.calibration['instructions']} instructions read {rec.calibration['ticks']} ticks "
        f"({rec.calibration['ticks_per_instruction']:.5f} per instruction)")
    step("sysinfo_before")
    guest_view = sysinfo(agent, rt, share_dir / "sysinfo-before")
    rec.counters_before = {"dom0": dom0_counters(agent), "rt_guest": guest_counters(rt, guest_view)}
    stamping = s.measurement.stamping
    step("probes_start")
    pid = start_probes(agent, rt, s, rec) if stamping else None
    try:
        step("traffic")
        rec.traffic = send_traffic(s, say, pacing_paths, vcpu_ctl, share_dir, machine)
        rec.pacing = rec.traffic.pop("pacing", {})
        step("settle")
        time.sleep(s.measurement.settle_s)
    finally:
        if stamping:
            step("probes_stop")
            stop_xentrace(agent, pid, mount)
            rt.command("rtagent stop", r"^RTAGENT-STOPPED", 60)
    step("sysinfo_after")
    guest_view = sysinfo(agent, rt, share_dir / "sysinfo-after")
    rec.counters_after = {"dom0": dom0_counters(agent), "rt_guest": guest_counters(rt, guest_view)}
    if s.hypervisor.variant == "natsume":
        rec.natsume_fast_path, rec.natsume_dropped = natsume_counters(agent, share_dir / "natsume-counters.txt")
    (share_dir / "traffic.json").write_text(json.dumps(
        {"sent": rec.traffic, "before": rec.counters_before, "after": rec.counters_after, "pacing": rec.pacing},
        indent=2) + "\n")
    if stamping:
        step("dump")
        with progress.task("dump of the RT guest's records") as advance:
            rec.dump = dump_records(rt, s, share_dir, mount, rec.guest_dump_path, say)
            advance()
        d = rec.dump
        say(f"dump: {d['bytes']} bytes of records through {d['channel']} in {d['seconds']:.2f} s: "
            f"{d['bytes'] / max(d['seconds'], 1e-3) / 1e3:,.0f} kB/s"
            + (f" (the frames themselves: {d['frames_span_s']:.3f} s, "
               f"{d['bytes'] / max(d['frames_span_s'], 1e-4) / 1e6:,.1f} MB/s)" if "frames_span_s" in d else ""))
    step(None)
    return rec


def dump_records(rt, s, share_dir, mount, target, say):
    """The RT guest's records into `target` (rt-guest-dump.log): as raw frames on the measured NIC,
    which the host receives at its end of the NIC's netdev; if that fails, gzipped through the
    console. -> what it took: channel, bytes, seconds (and frames or console bytes)."""
    t0 = time.monotonic()
    try:
        with traffic.FrameReceiver(s.nics.measured.udp_port + 1) as rx:
            text = rt.command("rtagent dump --frames", r"^RTAGENT-DUMP-(END|ERROR)|^FRAMESEND-ERROR", s.timeouts.dump)
            sent = re.search(r"^FRAMESEND frames=(\d+) bytes=(\d+) retries=(\d+)(.*)$", text, re.M)
            if not sent or not re.search(r"^RTAGENT-DUMP-END lines=", text, re.M):
                raise traffic.FrameError(f"the RT guest's frame sender said: {text.strip()[-300:]}")
            frames, size, retries = (int(x) for x in sent.groups()[:3])
            body = rx.collect(frames, size, wait_s=10).decode(errors="replace")
            span = rx.span_s()
        body += "" if body.endswith("\n") or not body else "\n"
        lines = sum(1 for ln in body.splitlines() if ln.strip() and not ln.startswith("#"))
        target.write_text(f"RTAGENT-DUMP-BEGIN\n{body}RTAGENT-DUMP-END lines={lines}\n")
        ticks = dict(re.findall(r"(read_ticks|send_ticks)=(\d+)", sent.group(4)))
        return {"channel": "frames on the measured NIC", "bytes": size, "frames": frames, "retries": retries,
                "seconds": round(time.monotonic() - t0, 3), "frames_span_s": round(span, 4),
                **{k: int(v) for k, v in ticks.items()}}
    except (traffic.FrameError, OSError) as exc:
        say(f"[yellow]the dump as frames failed ({exc}); the console carries it instead[/yellow]")
    t0 = time.monotonic()
    rt.command("rtagent dump --gzip", r"^RTAGENT-DUMP-END", s.timeouts.dump, to_file=f"{mount}/{GUEST_DUMP_WIRE}")
    wire = share_dir / GUEST_DUMP_WIRE
    sent = wire.stat().st_size
    target.write_text(unpack_dump(wire))
    wire.unlink()
    return {"channel": "the console (gzip+base64)", "bytes": target.stat().st_size, "console_bytes": sent,
            "seconds": round(time.monotonic() - t0, 3)}


def _stepper(steps):
    """step(name) ends the step before (its seconds go into `steps`) and starts `name`; step(None) ends."""
    current = {"name": None, "t0": time.monotonic()}

    def step(name):
        now = time.monotonic()
        if current["name"]:
            steps[current["name"]] = round(steps.get(current["name"], 0) + now - current["t0"], 2)
        current.update(name=name, t0=now)
    return step


def unpack_dump(wire):
    """rtagent's `dump --gzip` output as the console carried it -> the plain dump (BEGIN, lines, END)."""
    import base64
    import gzip
    import zlib
    text = Path(wire).read_text(errors="replace")
    m = re.search(r"^RTAGENT-DUMP-BEGIN gzip\+base64 bytes=(\d+)\s*$(.*?)^(RTAGENT-DUMP-END lines=\d+)", text, re.M | re.S)
    if not m:
        raise MeasureError(f"{wire}: rtagent's gzip dump markers are missing: the dump is incomplete")
    try:
        body = gzip.decompress(base64.b64decode("".join(m.group(2).split()), validate=True)).decode(errors="replace")
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise MeasureError(f"{wire}: the RT guest's gzip+base64 dump does not decode ({exc}): the console "
                           "garbled it") from None
    if len(body.encode()) != int(m.group(1)):
        raise MeasureError(f"{wire}: the dump decoded to {len(body.encode())} bytes, rtagent sent {m.group(1)}")
    return f"RTAGENT-DUMP-BEGIN\n{body}{m.group(3)}\n"


def natsume_counters(agent, path):
    """Natsume's evidence (debug key j): how many interrupts took the fast path; -> (irqs, dropped)."""
    text = agent.run("xl debug-keys j; xl dmesg | tail -n 40", timeout=60, check=True).stdout
    header = XEN_KEY_HEADERS["j"]
    text = text[text.rfind(header):] if header in text else text
    path.write_text(text)
    m = re.search(r"natsume: fast-path irqs=(\d+)", text)
    if not m:
        raise MeasureError("Xen's `j` debug key printed no Natsume fast-path counter: is this the natsume build?")
    return int(m.group(1)), dropped_counts(text)


def dropped_counts(text):
    """Interrupts Natsume's dedicated handler took but could not deliver, summed over its vectors
    (debug key j: `vector 0xf2 ... irqs=n unbound=n busy=n ratelimited=n`): a vector with no binding, an
    event channel whose lock was busy, or an interrupt the storm limiter masked."""
    counts = {"unbound": 0, "busy": 0, "ratelimited": 0}
    for line in re.findall(r"natsume:\s+vector 0x[0-9a-f]+ .*", text):
        for key in counts:
            found = re.search(rf"\b{key}=(\d+)", line)
            counts[key] += int(found.group(1)) if found else 0
    return counts


def start_probes(agent, rt, s, rec):
    """ftrace in the RT guest first, then xentrace (so every VMM stamp has a guest side); -> xentrace's pid."""
    upcall = " --upcall" if s.measurement.guest_upcall_stamp else ""
    started = rt.command(f"rtagent start{upcall}", r"^RTAGENT-STARTED", 60)
    irqs = re.search(r"^RTAGENT-STARTED irqs=(\S+)", started, re.M)
    rec.guest_irqs = dict(p.split(":", 1) for p in irqs.group(1).split(",")) if irqs else {}
    return start_xentrace(agent, s.hypervisor.trace_buffer_pages)
