"""Stage 5: the boot stages, each with an expected message and its own timeout.

Each function takes the parts it needs (machine, console, agent, scenario)
and returns a short detail string; any exception fails its stage.
"""

import re
import shlex

from . import render
from .deadline import Deadline

XEN_PANIC = r"Panic on CPU \d+|Reboot in five seconds|FATAL PAGE FAULT"
IOMMU_EXPECTED = ("I/O virtualisation enabled", "Interrupt remapping enabled")
GUEST_LOG = "/var/log/xen/console/guest-{name}.log"


class BootFailure(Exception):
    pass


def qemu_up(machine, console, timeout):
    d = Deadline(timeout)
    machine.launch(d.slice(timeout))
    console.connect(d.slice(timeout))
    status = machine.status()
    if status not in ("prelaunch", "paused"):
        raise BootFailure(f"QEMU should start paused, but its status is {status!r}")
    machine.cont()
    return f"QEMU pid {machine.proc.pid}, status {machine.status()}"


def _expect(console, machine, pattern, timeout, what):
    """Wait for `pattern` on the console, failing early on a Xen panic or a dead QEMU."""
    d = Deadline(timeout)
    for _ in d.poll(0):
        try:
            index, text = console.expect([pattern, XEN_PANIC], timeout=d.slice(5))
        except Exception as exc:  # timeout slice: check QEMU is still alive, then wait on
            machine.check_alive()
            if "closed" in str(exc):
                raise BootFailure(str(exc)) from None
            continue
        if index == 1:
            raise BootFailure(f"Xen crashed: {text!r}")
        return text
    raise BootFailure(f"no {what} within {timeout} s (waited for /{pattern}/)")


def xen_banner(machine, console, timeout):
    text = _expect(console, machine, r"Xen version [0-9][^ ]*", timeout, "Xen banner")
    return text.strip()


def iommu(machine, console, timeout):
    """Xen must report I/O virtualisation and interrupt remapping before it builds dom0."""
    _expect(console, machine, r"\*\*\* Building a PV Dom0 \*\*\*", timeout, "dom0 build message")
    log = console.text()
    missing = [m for m in IOMMU_EXPECTED if m not in log]
    if missing:
        found = [ln for ln in log.splitlines() if re.search(r"virtualisation|remapping", ln, re.I)]
        raise BootFailure(f"Xen did not report {missing}; its IOMMU lines: {found or 'none'}")
    return "; ".join(IOMMU_EXPECTED)


NATSUME_ACCEPTED = r"natsume: device \S+ -> pCPU \d+.*"
NATSUME_REFUSED = r"natsume: (.*)\r*\n.*natsume: option refused"  # Xen prints why, then this line


class NatsumeOptionRefused(BootFailure):
    """Xen refused the rendered natsume= option: a scenario error, reported as such."""


def natsume_option(agent, timeout=60):
    """The natsume= option must have been accepted by Xen (it boots on as stock when refused).
    Read from `xl dmesg`: the emulated serial console can duplicate characters."""
    log = agent.run("xl dmesg", timeout=timeout, check=True).stdout
    accepted = re.search(NATSUME_ACCEPTED, log)
    if accepted:
        return accepted.group(0).strip()
    refused = [m.group(1).strip() for m in re.finditer(NATSUME_REFUSED, log)]
    if not refused and "natsume: option refused" in log:
        refused = ["see Xen's log"]
    if refused:
        raise NatsumeOptionRefused("scenario error: Xen refused the natsume= option (it booted on as stock): "
                                   + "; ".join(refused))
    raise BootFailure("Xen printed neither an accepted nor a refused natsume= option: is this the natsume build?")


def dom0_ready(machine, console, timeout):
    _expect(console, machine, r"TESTBED-DOM0-READY", timeout, "dom0 ready marker")
    return "dom0 init finished"


def toolstack(agent, s, timeout):
    d = Deadline(timeout)
    agent.connect(d.slice(timeout))
    out = agent.run("xl list", timeout=d.slice(60)).stdout
    if not re.search(r"^Domain-0\s", out, re.M):
        raise BootFailure(f"`xl list` does not show Domain-0:\n{out}")
    pinned = pin_dom0(agent, s, d.slice(60))
    detail = f"xl list shows Domain-0; dom0 {pinned}"
    if s.dom0.load_nic_irq_vcpu is not None:
        detail += "; " + steer_load_nic_irq(agent, s, d.slice(60))
    return detail


def pin_dom0(agent, s, timeout):
    """One to one when dom0 has a pCPU per vCPU (vCPU i on pcpus[i]), else all vCPUs on all of them."""
    if len(s.dom0.pcpus) == s.dom0.vcpus:
        for vcpu, pcpu in enumerate(s.dom0.pcpus):
            agent.run(f"xl vcpu-pin Domain-0 {vcpu} {pcpu}", timeout=timeout, check=True)
        return "vCPUs pinned one to one to pCPUs " + ",".join(str(c) for c in s.dom0.pcpus)
    pcpus = ",".join(str(c) for c in s.dom0.pcpus)
    agent.run(f"xl vcpu-pin Domain-0 all {pcpus}", timeout=timeout, check=True)
    return f"pinned to pCPU {pcpus}"


def steer_load_nic_irq(agent, s, timeout):
    """Bind the load NIC's interrupt to one dom0 vCPU: Linux rebinds its event channel
    (EVTCHNOP_bind_vcpu), and Xen moves the physical IRQ's affinity to that vCPU's pCPU."""
    vcpu = s.dom0.load_nic_irq_vcpu
    mac = s.nics.load.mac
    script = (f"for n in /sys/class/net/*; do [ \"$(cat $n/address)\" = {shlex.quote(mac)} ] && "
              f"irq=$(cat $n/device/irq) && echo {1 << vcpu:x} > /proc/irq/$irq/smp_affinity && "
              f"echo \"${{n##*/}} irq $irq -> $(cat /proc/irq/$irq/smp_affinity_list)\" && exit 0; done; exit 1")
    res = agent.run(script, timeout=timeout)
    if not res.ok:
        raise BootFailure(f"cannot bind the load NIC's interrupt to dom0 vCPU {vcpu}: {res.stdout}{res.stderr}")
    return f"load NIC {res.stdout.strip()} (dom0 vCPU {vcpu})"


def _wait_for_log(agent, name, patterns, d):
    """Poll a guest's console log (kept by xenconsoled in dom0) until every pattern shows, within Deadline d."""
    path = GUEST_LOG.format(name=name)
    text = ""
    for _ in d.poll(2):
        text = agent.run(f"cat {shlex.quote(path)} 2>/dev/null", timeout=30).stdout
        if all(re.search(p, text, re.M) for p in patterns):
            return text
        state = agent.run(f"xl list {shlex.quote(name)}", timeout=30)
        if not state.ok:
            raise BootFailure(f"guest {name} is gone: {state.stderr.strip()}\n--- its console:\n{text[-2000:]}")
    missing = [p for p in patterns if not re.search(p, text, re.M)]
    raise BootFailure(f"guest {name}: no {missing} in its console within {d.seconds} s\n--- its console:\n"
                      + "\n".join(text.splitlines()[-50:]))


def _create(agent, s, role, d):
    cfg = f"{render.CONFIG_DIR}/xl-{(s.rt_guest if role == 'rt' else s.load_guest).name}.cfg"
    res = agent.run(f"xl create {shlex.quote(cfg)}", timeout=d.slice(d.seconds))
    if not res.ok:
        raise BootFailure(f"`xl create {cfg}` failed (exit {res.rc}):\n{res.stdout}{res.stderr}")


def rt_guest(agent, s, timeout):
    """Pass the e1000e through to the RT guest; its driver must bind inside the guest."""
    d = Deadline(timeout)
    bdf = s.nics.measured.bdf
    res = agent.run(f"xl pci-assignable-add {bdf}", timeout=d.slice(60))
    if not res.ok:
        raise BootFailure(f"`xl pci-assignable-add {bdf}` failed:\n{res.stdout}{res.stderr}")
    _create(agent, s, "rt", d)
    text = _wait_for_log(agent, s.rt_guest.name, [r"TESTBED-GUEST-READY role=rt", r"TESTBED-PCI \S+ \S+ driver=e1000e"], d)
    pci = re.search(r"TESTBED-PCI \S+ \S+ driver=e1000e.*", text).group(0).strip()
    mode = re.search(r"TESTBED-IRQMODE \S+ (\S+)", text)
    detail = f"{pci}; irq mode {mode.group(1) if mode else 'unknown'}"
    if s.rt_guest.sched_weight is not None:
        detail += "; " + set_rt_weight(agent, s)
    return detail


def set_rt_weight(agent, s):
    """The RT guest's credit2 weight: with more weight than the vCPU it shares its pCPU with, a
    woken RT vCPU pre-empts it instead of waiting for its time slice (Xen's tools, as the paper had)."""
    name = shlex.quote(s.rt_guest.name)
    agent.run(f"xl sched-credit2 -d {name} -w {s.rt_guest.sched_weight}", timeout=60, check=True)
    shown = agent.run(f"xl sched-credit2 -d {name}", timeout=60).stdout
    if not re.search(rf"^\S+\s+\d+\s+{s.rt_guest.sched_weight}\b", shown, re.M):
        raise BootFailure(f"the RT guest's credit2 weight is not {s.rt_guest.sched_weight}:\n{shown}")
    return f"credit2 weight {s.rt_guest.sched_weight}"


def load_guest(agent, s, timeout):
    """The load guest gets its network through dom0's bridge, from the load NIC dom0 owns."""
    d = Deadline(timeout)
    want = [r"TESTBED-GUEST-READY role=load", r"TESTBED-NET \S+ \S+ up"]
    _create(agent, s, "load", d)
    text = _wait_for_log(agent, s.load_guest.name, want, d)
    return f"{re.search(want[1], text).group(0)} (bridged from dom0's load NIC)"


# What `collect` saves from dom0 into the bundle's logs/ folder.
DOM0_COMMANDS = {
    "xl-list.txt": "xl list",
    "xl-info.txt": "xl info",
    "xl-dmesg.txt": "xl dmesg",
    "xl-pci-assignable.txt": "xl pci-assignable-list",
    "dom0-dmesg.txt": "dmesg",
    "dom0-interrupts.txt": "cat /proc/interrupts",
    "dom0-lspci.txt": "lspci -vv -nn 2>&1",
    "dom0-ip.txt": "ip -d addr; ip -d link show type bridge",
    "dom0-processes.txt": "ps -ef",
    "qemu-ga.log": "cat /var/log/qemu-ga.log 2>/dev/null",
}


def collect(agent, s, logs_dir, budget=None):
    """Copy the toolstack's view and each guest's console out of dom0 (best effort per file;
    with a `budget` in seconds, what fits in it, the rest marked not collected)."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    d = Deadline(budget if budget is not None else 60 * 60)
    commands = dict(DOM0_COMMANDS)
    for guest in (s.rt_guest, s.load_guest):
        commands[f"guest-{guest.name}-console.log"] = f"cat {shlex.quote(GUEST_LOG.format(name=guest.name))}"
        commands[f"xl-pci-list-{guest.name}.txt"] = f"xl pci-list {shlex.quote(guest.name)}"
    saved = []
    for name, command in commands.items():
        try:
            if d.expired():
                raise TimeoutError(f"the {budget} s budget after the signal was spent")
            res = agent.run(command, timeout=d.slice(60))
            (logs_dir / name).write_text(res.stdout + (f"\n[stderr]\n{res.stderr}" if res.stderr else ""))
            saved.append(name)
        except Exception as exc:  # noqa: BLE001 - one missing file must not lose the others
            (logs_dir / name).write_text(f"[not collected: {exc}]\n")
    return f"{len(saved)}/{len(commands)} files"


def shutdown(agent, machine, timeout):
    """Shut the guests down through the toolstack (they must obey), then quit QEMU over QMP."""
    d = Deadline(timeout)
    res = agent.run("xl shutdown -a -w", timeout=d.slice(timeout))
    # A guest that has shut down is listed (state "s") until xl's daemon destroys it.
    for _ in d.poll(1):
        left = agent.run("xl list", timeout=d.slice(30)).stdout.splitlines()[2:]
        if not left:
            break
    ended = machine.shutdown(d.slice(timeout))
    if not res.ok or left:
        raise BootFailure(f"guests did not shut down (xl shutdown exit {res.rc}): {left or res.stderr.strip()}; "
                          f"{ended.detail}")
    if not ended.clean:
        raise BootFailure(f"guests shut down, but {ended.detail}")
    return f"guests shut down; {ended.detail}"
