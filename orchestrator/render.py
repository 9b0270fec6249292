"""Stage 2: render a scenario into every boot config (jinja2 templates).

Outputs are plain data: the QEMU argv as a list (never a shell string), the
Xen and dom0 command lines, dom0's /init and each guest's xl config. Values
reach shell and xl text only through the quoting filters below.
"""

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from . import pacing

TEMPLATES = Path(__file__).parent / "templates"
QGA_PORT = "org.qemu.guest_agent.0"
SHARE_TAG = "testbed"
SHARE_MOUNT = "/mnt/testbed"  # where dom0 mounts the host share
BRIDGE = "xenbr0"
# Where dom0 finds the guests' kernel, initrd and configs (put there by the overlay cpio).
GUEST_DIR = "/boot/guest"
CONFIG_DIR = "/etc/testbed"
LOAD_VIF_MAC = "00:16:3e:00:00:02"
E1000E_INTMODE = {"intx": 0, "msi": 1, "msix": 2}  # the driver's IntMode parameter


@dataclass(frozen=True)
class RunPaths:
    """Host paths a run uses; fixed fake values make golden files stable."""
    xen: str
    kernel: str
    dom0_initrd: str
    serial_socket: str
    serial_log: str
    qmp_socket: str
    qga_socket: str
    share_dir: str  # host folder dom0 mounts over virtio-9p (bulk data: traces, guest dumps)
    # A second QMP monitor the testbed never uses: for a person (or the fault suite) to inspect or
    # poke the VM during a run (`stop`, `set_link`, `info`) without taking the testbed's own.
    monitor_socket: str
    vcpu_log: str = ""  # the vCPU plugin's record log (raw/, beside the traces) and its control file
    vcpu_ctl: str = ""
    # instruction pacing: per NIC role, the pcap QEMU's filter-dump writes of the frames it takes in; the FIFOs
    # (out, in) of the vCPU plugin's gate
    arrival_logs: dict = field(default_factory=dict)
    gate_fifos: tuple = ()


def shquote(value):
    return shlex.quote(str(value))


def xlquote(value):
    """A string literal for xl's config syntax (no escapes exist there)."""
    text = str(value)
    if re.search(r'["\\\n]', text):
        raise ValueError(f"value {text!r} cannot be written into an xl config")
    return f'"{text}"'


def mbmod(value):
    """QEMU's -initrd lists multiboot modules split by ',': a literal comma is ',,'."""
    return str(value).replace(",", ",,")


def _env():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(shquote=shquote, xlquote=xlquote, mbmod=mbmod)
    return env


def _render(name, **ctx):
    return _env().get_template(name).render(**ctx)


def xen_cmdline(s):
    return _render("xen-cmdline.j2", s=s).strip()


def dom0_cmdline(s):
    return _render("dom0-cmdline.j2", s=s).strip()


def qemu_argv(s, paths, accel, plugin=None):
    """The QEMU command as a list. `accel` is the resolved accelerator: 'tcg' or 'kvm'; `plugin`
    the -plugin value of the vCPU counter (vcpucount.plugin_option), if it runs."""
    for p in (paths.xen, paths.kernel, paths.dom0_initrd, paths.share_dir, paths.serial_log, *paths.arrival_logs.values()):
        if " " in str(p) or "," in str(p):
            raise ValueError(f"path {p!r} contains a space or a comma; QEMU's options cannot carry it")
    if plugin and " " in plugin:
        raise ValueError(f"the plugin option {plugin!r} contains a space")
    paced = pacing.paced_roles(s.measurement)
    missing = sorted(set(paced) - set(paths.arrival_logs))
    if missing:
        raise ValueError(f"instruction pacing needs an arrival log path for {', '.join(missing)}")
    text = _render("qemu-argv.j2", s=s, paths=paths, accel=accel, plugin=plugin, qga_port=QGA_PORT, share_tag=SHARE_TAG,
                   xen_cmdline=xen_cmdline(s), dom0_cmdline=dom0_cmdline(s), pacing=paced,
                   snaplen=pacing.SNAPLEN, buffer_interval_us=pacing.BUFFER_INTERVAL_US, buffer_id=pacing.BUFFER_ID)
    return [line for line in text.splitlines() if line]


def dom0_init(s):
    return _render("dom0-init.sh.j2", bridge=BRIDGE, qga_port=QGA_PORT, share_tag=SHARE_TAG, share_mount=SHARE_MOUNT,
                   load_nic_mac=s.nics.load.mac)


def xl_config(s, role):
    guest = s.rt_guest if role == "rt" else s.load_guest
    extra = f"console=hvc0 testbed.role={role}"
    if role == "rt":
        cpus, pci, vif = str(guest.pcpu), [s.nics.measured.bdf], None
        extra += f" testbed.e1000e_intmode={E1000E_INTMODE[s.nics.measured.irq_mode]}"
        if guest.busy_loop:
            extra += " testbed.busy_loop=1"
        if guest.interrupt_throttle_rate is not None:
            extra += f" testbed.e1000e_itr={guest.interrupt_throttle_rate}"
        if s.measurement.storm_ics_writes:
            extra += " iomem=relaxed"  # icsstorm maps the e1000e's BAR through /dev/mem, which the driver holds
    else:
        cpus = ",".join(str(c) for c in guest.pcpus)
        pci, vif = [], f"mac={LOAD_VIF_MAC},bridge={BRIDGE}"
    return _render("xl-guest.cfg.j2", s=s, role=role, guest=guest, cpus=cpus, pci=pci, vif=vif, extra=extra,
                   tsc_native=role == "rt",
                   guest_kernel=f"{GUEST_DIR}/vmlinuz", guest_initrd=f"{GUEST_DIR}/initrd.cpio.gz")


def shell_lines(argv):
    """argv as a readable shell command: one option and its value per line."""
    lines, current = [], [shlex.quote(argv[0])]
    for arg in argv[1:]:
        if arg.startswith("-") and current:
            lines.append(" ".join(current))
            current = []
        current.append(shlex.quote(arg))
    lines.append(" ".join(current))
    return " \\\n  ".join(lines) + "\n"


def render_all(s, paths, accel, plugin=None):
    """Every rendered file of a scenario, by file name."""
    argv = qemu_argv(s, paths, accel, plugin)
    return {
        "qemu-argv.txt": "\n".join(argv) + "\n",
        "qemu-cmdline.sh": f"#!/bin/sh\n# QEMU command of scenario {s.name} (accelerator {accel})\n"
                           + shell_lines(argv),
        "xen-cmdline.txt": xen_cmdline(s) + "\n",
        "dom0-cmdline.txt": dom0_cmdline(s) + "\n",
        "dom0-init.sh": dom0_init(s),
        f"xl-{s.rt_guest.name}.cfg": xl_config(s, "rt"),
        f"xl-{s.load_guest.name}.cfg": xl_config(s, "load"),
    }


def write_all(files, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
        if name.endswith(".sh"):
            (folder / name).chmod(0o755)
    return folder
