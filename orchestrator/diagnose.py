"""After a failed run: the state a reader needs to tell a hung RT guest from a lost interrupt.

Collected by the collect stage when an earlier stage failed, each part on its own (a hung
guest must not cost the others): Xen's debug keys, the RT guest's /proc/interrupts and the
measured e1000e's registers as QEMU sees them.
"""

import json
import shlex

from .measure import XEN_KEY_HEADERS, GuestConsole

# j: Natsume's counters (stock Xen has no `j`); e: event channels; q: domains and vCPUs; r: run queues.
XEN_DEBUG_KEYS = "jeqr"
# Read in this order: ICR is read-to-clear, so it goes last.
E1000E_REGISTERS = {"CTRL": 0x0000, "STATUS": 0x0008, "CTRL_EXT": 0x0018, "ITR": 0x00C4, "IMS": 0x00D0,
                    "EIAC": 0x00DC, "IAM": 0x00E0, "IVAR": 0x00E4, "EITR0": 0x00E8, "EITR1": 0x00EC,
                    "EITR2": 0x00F0, "RDH0": 0x2810, "RDT0": 0x2818, "TDH0": 0x3810, "TDT0": 0x3818,
                    "ICR": 0x00C0}
TAIL_LINES = 40
GUEST_TIMEOUT_S = 15  # a hung RT guest answers nothing: do not wait for it longer than this


def collect(agent, machine, s, logs_dir, keys=XEN_DEBUG_KEYS):
    """Write logs/xen-debug-keys.txt, logs/rt-guest-interrupts.txt, logs/e1000e-registers.json;
    -> what was saved, with the reason for each part that was not."""
    parts = {"xen-debug-keys.txt": lambda: xen_debug_keys(agent, keys),
             "rt-guest-interrupts.txt": lambda: guest_interrupts(agent, s.rt_guest.name),
             "e1000e-registers.json": lambda: device_registers(machine, s.nics.measured.pci_slot)}
    saved = []
    for name, read in parts.items():
        try:
            text = read() if agent.connected or name.startswith("e1000e") else "[not collected: no dom0 agent]\n"
            saved.append(name)
        except Exception as exc:  # noqa: BLE001 - each part on its own
            text = f"[not collected: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}]\n"
        (logs_dir / name).write_text(text)
    return saved


def xen_debug_keys(agent, keys=XEN_DEBUG_KEYS):
    """Each key's output alone: Xen's console ring (a few dozen kB) is read after each key, from
    Xen's "'k' pressed" line on. The handler runs after `xl debug-keys` returns: read a second later."""
    out = []
    for key in keys:
        res = agent.run(f"xl debug-keys {key} && sleep 1 && xl dmesg", timeout=30)
        text = res.stdout
        start = text.rfind(XEN_KEY_HEADERS.get(key, f"'{key}' pressed"))
        if start >= 0:
            text = text[text.rfind("\n", 0, start) + 1:]
        else:  # a handler that does not announce itself (Natsume's j): the ring's end
            text = f"[no \"'{key}' pressed\" line: the last {TAIL_LINES} lines of xl dmesg]\n" + "\n".join(
                text.splitlines()[-TAIL_LINES:]) + "\n"
        out.append(f"==== xl debug-keys {key} (exit {res.rc})\n{text}{res.stderr}")
    return "\n".join(out)


def guest_interrupts(agent, name):
    text = GuestConsole(agent, name).command("cat /proc/interrupts; echo TESTBED-IRQS-END", r"^TESTBED-IRQS-END",
                                             GUEST_TIMEOUT_S)
    return f"# {shlex.quote(name)}: /proc/interrupts through its console\n{text}"


def device_registers(machine, slot):
    values = machine.device_registers(slot, E1000E_REGISTERS)
    return json.dumps({"slot": f"{slot:#04x}", "read_by": "QEMU (HMP xp on BAR 0), in this order",
                       "registers": {k: f"{v:#010x}" for k, v in values.items()}}, indent=2) + "\n"
