"""Stage 1: load `testbed.yaml`, merge a scenario over the defaults, validate it
into typed, frozen objects. Every problem names file, line and field and says
what is allowed; all problems are reported at once.
"""

import dataclasses
import difflib
import math
import re
import reprlib
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import ScenarioError
from .yamlsrc import SourcedDict, YamlSyntaxError, deep_merge, load_text

MAC_RE = r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"
NAME_RE = r"^[a-z][a-z0-9-]{0,30}$"
XEN_OPTION_RE = r"^[A-Za-z0-9_.,:=+/-]+$"  # one token on Xen's command line, no quoting needed
# q35 slots the testbed already uses: host bridge, VGA, virtio-serial (guest agent), ICH9 LPC.
# Xen boot options the testbed renders itself (templates/xen-cmdline.j2) -> the setting they come from.
TESTBED_XEN_OPTIONS = {"console": "the testbed (serial console)", "com1": "the testbed (serial console)",
                       "conring_size": "the testbed", "dom0_mem": "dom0.memory_mb", "dom0_max_vcpus": "dom0.vcpus",
                       "iommu": "machine.interrupt_remapping", "noreboot": "the testbed",
                       "natsume": "hypervisor.variant and hypervisor.natsume",
                       "loglvl": "the testbed (loglvl=all: its boot stages read Xen's info-level messages, such as "
                                 "the IOMMU lines and '*** Building a PV Dom0 ***')",
                       "guest_loglvl": "the testbed (guest_loglvl=all: the guests' hypercall messages are evidence)"}
# What one guest TSC tick is. `instructions` is the measuring mode: under -icount shift=0
# (single-threaded TCG) QEMU's TSC advances one tick per guest instruction, so latencies repeat
# to the instruction; `host` lets the TSC follow the host clock (smoke tests, KVM).
TIMINGS = {"instructions": "instructions", "host": "ns"}  # mode -> the unit of a latency
RESERVED_PCI_SLOTS = {0: "the host bridge", 1: "the VGA slot", 16: "the guest agent's virtio-serial",
                      17: "the virtio-9p host share", 31: "the ICH9 LPC/SATA/SMBus functions"}


def spec(choices=None, min=None, max=None, pattern=None, doc=""):
    return {"choices": choices, "min": min, "max": max, "pattern": pattern, "doc": doc}


@dataclass(frozen=True)
class Machine:
    memory_mb: int = field(metadata=spec(min=1024, max=16384))
    cpus: int = field(metadata=spec(min=2, max=8))
    accel: str = field(metadata=spec(choices=["auto", "kvm", "tcg"]))
    timing: str = field(metadata=spec(
        choices=list(TIMINGS), doc="instructions: guest TSC counts instructions (-icount shift=0); host: host clock"))
    interrupt_remapping: bool = field(metadata=spec())
    cpu_model: str = field(metadata=spec(choices=["qemu64,+svm", "qemu64"]))
    vcpu_counts: bool = field(default=True, metadata=spec(
        doc="instruction timing only: a TCG plugin counts each vCPU's own instructions, so a span splits "
            "into the RT pCPU's own work, the other vCPUs' slices and skipped idle time"))


@dataclass(frozen=True)
class LoadNic:
    """The load NIC: dom0's driver picks its interrupt (INTx for QEMU's e1000, which has no MSI)."""
    model: str = field(metadata=spec(choices=["e1000e", "e1000"]))
    mac: str = field(metadata=spec(pattern=MAC_RE, doc="a lower-case MAC such as 52:54:00:12:34:01"))
    pci_slot: int = field(metadata=spec(min=2, max=30))
    udp_port: int = field(metadata=spec(min=1024, max=65000, doc="host loopback port the NIC's socket netdev listens on"))

    @property
    def bdf(self):
        return f"0000:00:{self.pci_slot:02x}.0"


@dataclass(frozen=True)
class MeasuredNic(LoadNic):
    """The measured NIC, passed through to the RT guest, whose e1000e driver is told its interrupt mode."""
    irq_mode: str = field(default="msix", metadata=spec(choices=["msi", "msix", "intx"]))


@dataclass(frozen=True)
class Nics:
    measured: MeasuredNic
    load: LoadNic


@dataclass(frozen=True)
class Natsume:
    """The Natsume variant's switches (ignored by stock). Device = the measured NIC, pCPU = the RT guest's."""
    preempt_evtchn: bool = field(metadata=spec(doc="step 5: the RT event is delivered before other pending work"))
    idle: str = field(metadata=spec(choices=["halt", "poll"], doc="poll: the RT pCPU never halts in Xen's idle loop"))


@dataclass(frozen=True)
class Hypervisor:
    variant: str = field(metadata=spec(choices=["stock", "natsume"]))
    options: typing.List[str] = field(metadata=spec(pattern=XEN_OPTION_RE))
    trace_buffer_pages: int = field(metadata=spec(min=16, max=65536, doc="Xen trace buffer per pCPU (xentrace -S)"))
    natsume: Natsume


@dataclass(frozen=True)
class Dom0:
    """dom0's vCPUs run on `pcpus`: one to one (vCPU i on pcpus[i]) when there are as many pCPUs as
    vCPUs, else every vCPU on all of them."""
    memory_mb: int = field(metadata=spec(min=512, max=8192))
    vcpus: int = field(metadata=spec(min=1, max=8))
    pcpus: typing.List[int] = field(metadata=spec(min=0, max=7))
    load_nic_irq_vcpu: Optional[int] = field(metadata=spec(
        min=0, max=7, doc="the dom0 vCPU that takes the load NIC's interrupt (Xen then routes it to that vCPU's "
                          "pCPU); null: Linux's default (vCPU 0)"))


@dataclass(frozen=True)
class RtGuest:
    name: str = field(metadata=spec(pattern=NAME_RE))
    pcpu: int = field(metadata=spec(min=0, max=7))
    memory_mb: int = field(metadata=spec(min=128, max=8192))
    busy_loop: bool = field(metadata=spec(doc="the paper's idle avoidance: a nice-19 CPU-bound loop in the guest"))
    sched_weight: Optional[int] = field(metadata=spec(
        min=1, max=65535, doc="the RT guest's credit2 weight (xl sched-credit2 -w); null: Xen's default, 256"))
    exclusive: bool = field(metadata=spec(
        doc="true: no other domain may use the RT pCPU; false: dom0 may share it (the paper's contention)"))
    interrupt_throttle_rate: Optional[int] = field(metadata=spec(
        min=0, max=100000, doc="e1000e InterruptThrottleRate in the guest; 0 = an interrupt per packet, null = default"))

    vcpus = 1  # the paper's RT-Domain: one vCPU on the pCPU it owns (not a setting)


@dataclass(frozen=True)
class LoadGuest:
    name: str = field(metadata=spec(pattern=NAME_RE))
    vcpus: int = field(metadata=spec(min=1, max=8))
    pcpus: typing.List[int] = field(metadata=spec(min=0, max=7))
    memory_mb: int = field(metadata=spec(min=128, max=8192))


@dataclass(frozen=True)
class Timeouts:
    """Seconds each boot stage may take (emulated boots are slow: be generous)."""
    qemu_up: int = field(metadata=spec(min=1, max=3600))
    xen_banner: int = field(metadata=spec(min=1, max=3600))
    dom0_ready: int = field(metadata=spec(min=1, max=3600))
    toolstack: int = field(metadata=spec(min=1, max=3600))
    rt_guest: int = field(metadata=spec(min=1, max=3600))
    load_guest: int = field(metadata=spec(min=1, max=3600))
    shutdown: int = field(metadata=spec(min=1, max=3600))
    iommu: int = field(metadata=spec(min=1, max=3600, doc="from Xen's banner to its IOMMU lines and dom0 build"))
    dump: int = field(metadata=spec(min=1, max=36000, doc="copying the RT guest's records off it after the traffic"))
    storm: int = field(metadata=spec(min=1, max=36000, doc="the RT guest's interrupt storm and its answer afterwards"))


@dataclass(frozen=True)
class Measurement:
    """The paper's procedure: bursts on the measured NIC, optionally a flood on the load NIC."""
    enabled: bool = field(metadata=spec())
    bursts: int = field(metadata=spec(min=1, max=100000))
    frames_per_burst: int = field(metadata=spec(min=1, max=65536))
    period_ms: int = field(metadata=spec(min=1, max=60000))
    payload_bytes: int = field(metadata=spec(min=18, max=1472))
    load: bool = field(metadata=spec(doc="flood the load NIC during the bursts"))
    load_rate_pps: Optional[int] = field(metadata=spec(min=1, max=10000000, doc="null: unthrottled"))
    pacing: str = field(metadata=spec(
        choices=["host", "instructions"],
        doc="host: the host's clock paces the frames, the guest takes them when QEMU's I/O thread runs; "
            "instructions: the guest waits at a gate every load_interval_us x 1000 instructions of the pCPUs "
            "other than the RT guest's "
            "(without load: period_ms x 10^6) until the host has handed QEMU that gate's frames - deterministic, "
            "but a rate per instruction, not per second (orchestrator/pacing.py)"))
    load_interval_us: int = field(metadata=spec(
        min=10, max=1000000, doc="instruction pacing: a flood chunk (load_rate_pps x this many µs of frames) every "
                                 "this many thousand instructions"))
    settle_s: int = field(metadata=spec(min=0, max=600, doc="quiet time after the last burst"))
    min_samples: int = field(metadata=spec(min=1, max=10000000))
    max_unpaired_pct: float = field(metadata=spec(min=0, max=100))
    guest_upcall_stamp: bool = field(metadata=spec())
    stamping: bool = field(metadata=spec(doc="false: traffic and counters only (to measure the probes' cost)"))
    storm_ics_writes: int = field(metadata=spec(
        min=0, max=100000000, doc="before the bursts, the RT guest writes its e1000e's ICS this often (an interrupt "
                                  "storm it makes itself); the RT pCPU must answer afterwards. 0: no storm"))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = field(metadata=spec())
    machine: Machine
    nics: Nics
    hypervisor: Hypervisor
    dom0: Dom0
    rt_guest: RtGuest
    load_guest: LoadGuest
    timeouts: Timeouts
    measurement: Measurement
    source: str = ""

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Problem:
    where: str
    path: str
    message: str

    def __str__(self):
        return f"{self.where}: {self.path}: {self.message}"


# ---------------------------------------------------------------- loading


MAX_FILE_BYTES = 1 << 20  # a scenario file is a few kB; more is a mistake (or /dev/zero)


def _read(path):
    """The file's text: a regular file of at most MAX_FILE_BYTES, in UTF-8."""
    def refuse(where, message):
        raise ScenarioError([Problem(where, "(file)", message)])
    try:
        info = path.stat()
    except OSError as exc:
        refuse(str(path), f"cannot read: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        refuse(str(path), "not a regular file (a FIFO, device or folder): give the path of a YAML file")
    if info.st_size > MAX_FILE_BYTES:
        refuse(str(path), f"{info.st_size} bytes: larger than {MAX_FILE_BYTES} bytes, too large for a scenario file")
    try:
        data = path.read_bytes()[:MAX_FILE_BYTES + 1]
    except OSError as exc:
        refuse(str(path), f"cannot read: {exc.strerror}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        refuse(f"{path}:{line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                                 "save the file as UTF-8")


def load_file(path):
    """Parse a testbed file into its raw, position-aware document."""
    path = Path(path)
    text = _read(path)
    try:
        doc = load_text(text, file=str(path))
    except YamlSyntaxError as exc:
        raise ScenarioError([Problem(f"{exc.file}:{exc.line}", "(syntax)", str(exc).split(": ", 2)[-1])]) from None
    if not isinstance(doc, SourcedDict):
        raise ScenarioError([Problem(f"{path}:1", "(top level)", "expected a mapping with 'defaults' and 'scenarios'")])
    problems = []
    _check_keys(doc, "", {"defaults", "scenarios", "comparisons", "default_scenario"}, problems)
    for key in ("defaults", "scenarios"):
        if not isinstance(doc.get(key), SourcedDict):
            problems.append(Problem(doc.where(key), key, "expected a mapping"))
    if doc.get("comparisons") is not None and not isinstance(doc["comparisons"], SourcedDict):
        problems.append(Problem(doc.where("comparisons"), "comparisons", "expected a mapping"))
    if not problems and not doc["scenarios"]:
        problems.append(Problem(doc.where("scenarios"), "scenarios", "defines no scenario: name at least one"))
    if not problems:
        _check_names(doc, problems)
    if problems:
        raise ScenarioError(problems)
    return doc


RUN_NAME_RE = r"[a-z0-9][a-z0-9-]{0,40}"  # scenario and comparison names: they name result folders and
                                          # reach the shell (reproducer.sh, make SCENARIO=...)


def _check_names(doc, problems):
    comparisons = doc.get("comparisons") or {}
    for section, table in (("scenarios", doc["scenarios"]), ("comparisons", comparisons)):
        for name in table:
            if not isinstance(name, str) or not re.fullmatch(RUN_NAME_RE, name):
                problems.append(Problem(table.where(name), f"{section}.{_show(name)}",
                                        "names use lower-case letters, digits and '-', at most 41 characters, "
                                        "starting with a letter or digit (they name result folders)"))
    for name in comparisons:
        if name in doc["scenarios"]:
            problems.append(Problem(comparisons.where(name), f"comparisons.{name}",
                                    "a scenario has the same name: rename one of them"))


def scenario_names(doc):
    return list(doc["scenarios"].keys())


def default_name(doc):
    return doc.get("default_scenario") or scenario_names(doc)[0]


SET_WHERE = "--set"


def overrides(pairs):
    """`--set a.b.c=VALUE` pairs -> a mapping merged over a scenario (VALUE is read as YAML: 40110
    is a number, false a boolean); the values' errors then name `--set N` as their place."""
    tree, problems = SourcedDict(file=SET_WHERE, line=0), []
    for n, pair in enumerate(pairs, 1):
        path, eq, text = pair.partition("=")
        keys = path.split(".")
        if not eq or not all(re.fullmatch(r"[a-z_][a-z0-9_]*", k) for k in keys):
            problems.append(Problem(f"{SET_WHERE}:{n}", pair[:80], "expected FIELD.PATH=VALUE, such as "
                                    "nics.measured.udp_port=40110 (the field names of a scenario)"))
            continue
        node = tree
        for key in keys[:-1]:
            if not isinstance(node.get(key, SourcedDict()), SourcedDict):
                problems.append(Problem(f"{SET_WHERE}:{n}", path, f"{key} was set to a value by an earlier --set"))
                break
            node = node.setdefault(key, SourcedDict(file=SET_WHERE, line=n))
            node.key_lines.setdefault(key, n)
        else:
            try:
                node[keys[-1]] = load_text(text, SET_WHERE) if text.strip() else text
            except YamlSyntaxError as exc:
                problems.append(Problem(f"{SET_WHERE}:{n}", path, str(exc).split(": ", 1)[-1]))
            node.key_lines[keys[-1]] = n
            tree.key_lines.setdefault(keys[0], n)
    if problems:
        raise ScenarioError(problems)
    return tree


def resolve(doc, name=None, override=None):
    """Merge scenario `name` over the defaults (and `override`, from --set) and validate it."""
    name = name or default_name(doc)
    scenarios = doc["scenarios"]
    if name not in scenarios:
        raise ScenarioError([Problem(scenarios.where(), "scenarios", unknown_name(doc, name))])
    own = scenarios[name]
    if own is None:
        own = SourcedDict(file=scenarios.file, line=scenarios.key_lines.get(name, 0))
    if not isinstance(own, SourcedDict):
        raise ScenarioError([Problem(scenarios.where(name), f"scenarios.{name}", "expected a mapping")])
    merged = deep_merge(doc["defaults"], own)
    if override:
        merged = deep_merge(merged, override)
    problems = []
    merged["name"] = name
    merged.setdefault("description", "")
    merged.setdefault("source", scenarios.file)
    scenario = _build(Scenario, merged, f"scenarios.{name}", merged.where(), problems)
    if not problems:
        _check_semantics(scenario, merged, f"scenarios.{name}", problems)
    if problems:
        raise ScenarioError(problems)
    return scenario


def load(path, name=None):
    return resolve(load_file(path), name)


@dataclass(frozen=True)
class Comparison:
    """Scenarios run in one invocation and reported side by side; the first is the baseline
    the others are compared with. With repeats N they run interleaved, A B A B ..., N times each,
    so a drift of the host over the invocation falls on every scenario alike."""
    name: str
    description: str
    scenarios: tuple  # of Scenario
    repeats: int = 1
    sweep: Optional[dict] = None  # {dotted field: [values]}: the comparison once per combination
    source: str = ""  # a sweep point's comparison: the comparison of testbed.yaml it is a point of
    point: str = ""  # ... and the point's label (its name is <source>-<point>)
    # Repeats of a scenario measure one boot of it (the other scenarios' machines paused meanwhile);
    # false: every run boots its own machine.
    reuse_boot: bool = True

    def points(self):
        """The sweep's points: [{"label", "overrides", "sets"}] (matrix.expand_sweep); no sweep:
        one point, no sets."""
        from .matrix import expand_sweep

        return expand_sweep(self.sweep)

    def schedule(self):
        """[(repeat number from 1, scenario), ...] in run order."""
        return [(r + 1, s) for r in range(self.repeats) for s in self.scenarios]


def comparison_names(doc):
    return list((doc.get("comparisons") or {}).keys())


def resolve_comparison(doc, name, override=None):
    comps = doc.get("comparisons") or SourcedDict()
    raw, path = comps[name], f"comparisons.{name}"
    if not isinstance(raw, SourcedDict):
        raise ScenarioError([Problem(comps.where(name), path, "expected a mapping with 'scenarios'")])
    problems = []
    _check_keys(raw, path, {"description", "scenarios", "repeats", "sweep", "reuse_boot"}, problems)
    reuse_boot = raw.get("reuse_boot", True)
    if not isinstance(reuse_boot, bool):
        problems.append(Problem(raw.where("reuse_boot"), f"{path}.reuse_boot",
                                f"expected true (repeats measure one boot per scenario) or false (a boot per run), "
                                f"got {_show(reuse_boot)}"))
    sweep = raw.get("sweep")
    if sweep is not None:
        from .matrix import expand_sweep

        try:
            expand_sweep(sweep, where=raw.where("sweep"))
        except ScenarioError as exc:
            problems.extend(Problem(pr.where, f"{path}.{pr.path}", pr.message) for pr in exc.problems)
        if isinstance(sweep, dict):  # plain values: the sweep goes into matrices and manifests as JSON
            sweep = {str(k): list(v) if isinstance(v, list) else v for k, v in sweep.items()}
    repeats = raw.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or not 1 <= repeats <= 50:
        problems.append(Problem(raw.where("repeats") if "repeats" in raw else raw.where(), f"{path}.repeats",
                                f"expected an integer 1..50 (runs of each scenario, interleaved), got {_show(repeats)}"))
    names = raw.get("scenarios")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        problems.append(Problem(raw.where("scenarios"), f"{path}.scenarios",
                                "expected a list of at least two scenario names (the first is the baseline)"))
        raise ScenarioError(problems)
    scenarios = []
    for n in names:
        if n not in doc["scenarios"]:
            problems.append(Problem(raw.where("scenarios"), f"{path}.scenarios",
                                    f"no scenario named {n!r}; defined: {', '.join(doc['scenarios'])}"))
            continue
        try:
            scenarios.append(resolve(doc, n, override))
        except ScenarioError as exc:
            problems.extend(exc.problems)
    if not problems:
        for sc in scenarios:
            if not sc.measurement.enabled:
                problems.append(Problem(raw.where("scenarios"), f"{path}.scenarios",
                                        f"scenario {sc.name!r} measures nothing (measurement.enabled: false)"))
            elif sc.measurement != scenarios[0].measurement:
                problems.append(Problem(raw.where("scenarios"), f"{path}.scenarios",
                                        f"scenario {sc.name!r} has other measurement settings than "
                                        f"{scenarios[0].name!r}: compared runs need identical traffic and load"))
    if problems:
        raise ScenarioError(problems)
    return Comparison(name, str(raw.get("description", "")), tuple(scenarios), repeats, sweep,
                      reuse_boot=reuse_boot is True)


def unknown_name(doc, name):
    """The message for a name that is neither a scenario nor a comparison, with a suggestion."""
    known = scenario_names(doc) + comparison_names(doc)
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"no scenario or comparison named {_SHORT.repr(name)}{hint}; scenarios: "
            f"{', '.join(map(str, scenario_names(doc)))}; comparisons: {', '.join(map(str, comparison_names(doc))) or 'none'}")


def load_target(path, name=None, sets=()):
    """A scenario or a comparison by name (default: the file's default_scenario), with `sets`
    (--set FIELD.PATH=VALUE) over each of its scenarios."""
    doc = load_file(path)
    name = name or default_name(doc)
    override = overrides(sets) if sets else None
    if name in comparison_names(doc):
        return resolve_comparison(doc, name, override)
    return resolve(doc, name, override)


def load_scenario(path, name=None):
    """A scenario by name; without a name the default, or the first scenario of the default comparison."""
    doc = load_file(path)
    if name is None and default_name(doc) in comparison_names(doc):
        first = (doc["comparisons"][default_name(doc)] or {}).get("scenarios") or [None]
        name = first[0] if isinstance(first, list) and first else None
    return resolve(doc, name)


def validate_file(path):
    """Validate every scenario in a file; return their names or raise with all problems."""
    doc = load_file(path)
    problems, names = [], []
    known = scenario_names(doc) + comparison_names(doc)
    if doc.get("default_scenario") is not None and doc["default_scenario"] not in known:
        problems.append(Problem(doc.where("default_scenario"), "default_scenario",
                                f"names no scenario or comparison; defined: {', '.join(known)}"))
    for name in scenario_names(doc):
        try:
            resolve(doc, name)
            names.append(name)
        except ScenarioError as exc:
            problems.extend(exc.problems)
    for name in comparison_names(doc):
        try:
            resolve_comparison(doc, name)
            names.append(name)
        except ScenarioError as exc:
            problems.extend(p for p in exc.problems if p.path.startswith("comparisons."))
    if problems:
        raise ScenarioError(problems)
    return names


# ---------------------------------------------------------------- typed build


# Keys an earlier layout had, by their path below a scenario (or `defaults`) -> why they went.
REMOVED_KEYS = {
    "machine.iommu": "removed: the emulated IOMMU is always Intel VT-d (q35's intel-iommu); "
                     "machine.interrupt_remapping switches its interrupt remapping",
    "nics.load.irq_mode": "removed: dom0's driver picks the load NIC's interrupt (QEMU's e1000 has INTx only)",
    "rt_guest.vcpus": "removed: the RT guest always has one vCPU, on the pCPU it owns (rt_guest.pcpu)",
    "load_guest.nic_mode": "removed: the load guest always gets its network from dom0's bridge over the load NIC "
                           "(pass-through of the load NIC to it is not supported)",
    "timeouts.measure": "renamed to timeouts.dump: it bounds copying the RT guest's records off it; the "
                        "traffic itself lasts measurement.bursts x period_ms",
}


def _check_keys(raw, path, allowed, problems):
    for key in raw:
        if key not in allowed:
            full = _join(path, key)
            removed = next((why for old, why in REMOVED_KEYS.items() if full == old or full.endswith("." + old)), None)
            hint = f"allowed: {', '.join(sorted(allowed))}"
            problems.append(Problem(raw.where(key), full, f"{removed}; {hint}" if removed else
                                    f"unknown key {_SHORT.repr(key)}; {hint}"))


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _build(cls, raw, path, where, problems):
    """Build dataclass `cls` from mapping `raw`, appending problems instead of raising."""
    if not isinstance(raw, SourcedDict):
        problems.append(Problem(where, path, f"expected a mapping, got {_show(raw)}"))
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(raw, path, set(fields), problems)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is not dataclasses.MISSING:
                continue
            problems.append(Problem(raw.where(), _join(path, name), "missing (required)"))
            continue
        values[name] = _convert(hints[name], f.metadata, raw[name], _join(path, name), raw.where(name), problems)
    if len(values) != len([f for f in fields.values() if f.name in raw]) or any(v is _BAD for v in values.values()):
        return None
    try:
        return cls(**values)
    except TypeError:
        return None


_BAD = object()
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def _show(value):
    """A value for a message: bounded (a YAML alias can expand to gigabytes), with its type."""
    return f"{_SHORT.repr(value)} ({type(value).__name__})" if value is not None else "null"


def _convert(hint, meta, value, path, where, problems):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, path, where, problems)
        return _BAD if built is None else built
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return _convert(inner, meta, value, path, where, problems)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            problems.append(Problem(where, path, f"expected a list, got {_show(value)}"))
            return _BAD
        inner = typing.get_args(hint)[0]
        items = [_convert(inner, meta, v, f"{path}[{i}]", where, problems) for i, v in enumerate(value)]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    return _scalar(hint, meta, value, path, where, problems)


def _scalar(hint, meta, value, path, where, problems):
    kinds = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}
    accepted = (int, float) if hint is float else hint
    ok = isinstance(value, accepted) and not (hint in (int, float) and isinstance(value, bool))
    if not ok:
        hint_text = "; quote it (YAML reads unquoted 52:54:... or 1e3 as a number)" if hint is str else ""
        problems.append(Problem(where, path, f"expected {kinds[hint]}, got {_show(value)}{hint_text}"))
        return _BAD
    if meta.get("choices") is not None and value not in meta["choices"]:
        problems.append(Problem(where, path, f"{_SHORT.repr(value)} is not allowed; choose one of: {', '.join(meta['choices'])}"))
        return _BAD
    lo, hi = meta.get("min"), meta.get("max")
    if hint is float and not math.isfinite(value):
        problems.append(Problem(where, path, f"{value} is not a finite number"))
        return _BAD
    if hint in (int, float) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        extra = f" ({meta['doc']})" if meta.get("doc") else ""
        problems.append(Problem(where, path, f"{value} is out of range {lo}..{hi}{extra}"))
        return _BAD
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):  # fullmatch: no trailing newline
        extra = meta["doc"] or f"must match {meta['pattern']}"
        problems.append(Problem(where, path, f"{_SHORT.repr(value)} is not valid: {extra}"))
        return _BAD
    return value


# ---------------------------------------------------------------- cross-field rules


def _at(raw, *keys):
    """file:line of a nested key in the merged raw document."""
    node = raw
    for key in keys[:-1]:
        node = node[key]
    return node.where(keys[-1])


def _check_semantics(s, raw, path, problems):
    def bad(keys, message):
        problems.append(Problem(_at(raw, *keys), ".".join([path, *keys]), message))

    if s.machine.timing == "instructions" and s.machine.accel == "kvm":
        bad(("machine", "timing"), "instruction-count timing needs TCG (QEMU's -icount excludes KVM): "
            "use accel: tcg or auto, or timing: host")
    m = s.measurement
    if m.pacing == "instructions" and m.enabled:
        if s.machine.timing != "instructions" or not s.machine.vcpu_counts:
            bad(("measurement", "pacing"), "instruction pacing holds the guest at the vCPU plugin's gates: it "
                "needs machine.timing: instructions and machine.vcpu_counts: true (or set pacing: host)")
        if m.load and m.load_rate_pps is None:
            bad(("measurement", "load_rate_pps"), "instruction pacing sends the flood as chunks of a known rate: "
                "set load_rate_pps (null, unthrottled, needs pacing: host)")
        elif m.load and m.load_rate_pps * m.load_interval_us < 1_000_000:
            bad(("measurement", "load_interval_us"), f"at {m.load_rate_pps} frames/s a chunk of "
                f"{m.load_interval_us} µs of guest time holds no frame: make it at least "
                f"{-(-1_000_000 // m.load_rate_pps)}")
        if m.load and (m.period_ms * 1000) % m.load_interval_us:
            bad(("measurement", "load_interval_us"), f"instruction pacing sends a burst every period_ms "
                f"({m.period_ms} ms) at a gate of the flood's: load_interval_us ({m.load_interval_us}) must divide it")
    if s.machine.vcpu_counts and s.machine.timing != "instructions":
        bad(("machine", "vcpu_counts"), "per-vCPU instruction counts need instruction timing (with the host's "
            "clock a span is not made of instructions): set vcpu_counts: false or timing: instructions")
    cpus = s.machine.cpus
    for keys, pcpus in ((("dom0", "pcpus"), s.dom0.pcpus), (("load_guest", "pcpus"), s.load_guest.pcpus),
                        (("rt_guest", "pcpu"), (s.rt_guest.pcpu,))):
        for cpu in pcpus:
            if cpu >= cpus:
                bad(keys, f"pCPU {cpu} does not exist: the machine has {cpus} CPUs (0..{cpus - 1})")
        if not pcpus:
            bad(keys, "needs at least one pCPU")
    rt = s.rt_guest.pcpu
    for keys, who, pcpus in ((("dom0", "pcpus"), "dom0", s.dom0.pcpus),
                             (("load_guest", "pcpus"), f"the load guest '{s.load_guest.name}'", s.load_guest.pcpus)):
        if len(set(pcpus)) != len(pcpus):
            bad(keys, f"pCPU listed twice in {list(pcpus)}: list each pCPU once")
        if rt in pcpus and (s.rt_guest.exclusive or keys[0] == "load_guest"):
            why = ("the RT guest is exclusive (rt_guest.exclusive: false lets dom0 share it)"
                   if keys[0] == "dom0" else "only dom0 may share it, with rt_guest.exclusive: false")
            bad(keys, f"pCPU {rt} is dedicated to the RT guest '{s.rt_guest.name}'; {who} may not use it: {why}")
    irq_vcpu = s.dom0.load_nic_irq_vcpu
    if irq_vcpu is not None and irq_vcpu >= s.dom0.vcpus:
        bad(("dom0", "load_nic_irq_vcpu"), f"dom0 has {s.dom0.vcpus} vCPU(s) (0..{s.dom0.vcpus - 1})")
    if s.rt_guest.name == s.load_guest.name:
        bad(("load_guest", "name"), f"both guests are named {s.rt_guest.name!r}")

    for role in ("measured", "load"):
        nic = getattr(s.nics, role)
        if nic.pci_slot in RESERVED_PCI_SLOTS:
            bad(("nics", role, "pci_slot"), f"slot {nic.pci_slot} is {RESERVED_PCI_SLOTS[nic.pci_slot]}")
    if s.nics.measured.model != "e1000e":
        bad(("nics", "measured", "model"), "the measured NIC must be an e1000e (MSI-capable, as in the paper)")
    if s.nics.measured.irq_mode == "intx":
        bad(("nics", "measured", "irq_mode"), "the measured NIC must use msix (the paper's model needs MSI)")
    if s.nics.measured.irq_mode == "msi":
        bad(("nics", "measured", "irq_mode"),
            "plain MSI cannot work with QEMU's e1000e: it drops RXSEQ from the interrupt mask, so the driver's "
            "MSI self-test never fires and it falls back to INTx; use msix (see images/README.md)")
    if s.nics.measured.pci_slot == s.nics.load.pci_slot:
        bad(("nics", "load", "pci_slot"), f"slot {s.nics.load.pci_slot} is already the measured NIC's")
    if s.nics.measured.mac == s.nics.load.mac:
        bad(("nics", "load", "mac"), "both NICs have the same MAC")
    if abs(s.nics.measured.udp_port - s.nics.load.udp_port) < 2:
        bad(("nics", "load", "udp_port"), "each NIC uses two ports (port, port+1): keep them 2 apart")
    if int(s.nics.measured.mac.split(":")[0], 16) & 1 or int(s.nics.load.mac.split(":")[0], 16) & 1:
        bad(("nics",), "NIC MACs must be unicast (first octet even)")

    for i, opt in enumerate(s.hypervisor.options):
        key = opt.split("=", 1)[0]
        if key in TESTBED_XEN_OPTIONS:
            source = TESTBED_XEN_OPTIONS[key]
            why = (f"{key!r} is set by {source}; it cannot be changed here" if source.startswith("the testbed") else
                   f"{key!r} is set by the testbed from {source}; set it there instead of repeating it here")
            problems.append(Problem(_at(raw, "hypervisor", "options"), f"{path}.hypervisor.options[{i}]", why))
    used = s.dom0.memory_mb + s.rt_guest.memory_mb + s.load_guest.memory_mb
    if used + 256 > s.machine.memory_mb:
        bad(("machine", "memory_mb"),
            f"{s.machine.memory_mb} MB is too small: dom0 + guests need {used} MB plus 256 MB for Xen")
    if len(s.dom0.pcpus) < s.dom0.vcpus and s.dom0.vcpus > 1:
        bad(("dom0", "vcpus"), f"{s.dom0.vcpus} vCPUs pinned to {len(s.dom0.pcpus)} pCPU(s): give dom0 more pCPUs")
