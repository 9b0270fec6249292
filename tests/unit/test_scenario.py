"""Scenario loading: the default file is valid; every kind of mistake is named by file, line and field."""

import textwrap

import pytest

from orchestrator import scenario
from orchestrator.errors import ScenarioError
from tests.conftest import ROOT

DEFAULT = ROOT / "testbed.yaml"


def test_default_file_is_valid_and_resolves():
    names = scenario.validate_file(DEFAULT)
    assert "boot-stock" in names
    s = scenario.load(DEFAULT, "iso-stock")
    assert s.measurement.enabled and s.measurement.load
    default = scenario.load_target(DEFAULT)
    assert isinstance(default, scenario.Comparison) and default.name == "stock-vs-natsume"
    assert [x.hypervisor.variant for x in default.scenarios] == ["stock", "natsume"]
    assert s.nics.measured.model == "e1000e" and s.nics.measured.bdf == "0000:00:04.0"
    assert s.nics.load.model == "e1000" and not hasattr(s.nics.load, "irq_mode")
    assert s.rt_guest.pcpu not in s.dom0.pcpus and s.rt_guest.pcpu not in s.load_guest.pcpus
    assert s.rt_guest.vcpus == 1


def test_scenario_overrides_only_what_it_names():
    s = scenario.load(DEFAULT, "boot-stock-host")
    assert s.machine.timing == "host" and scenario.load(DEFAULT, "boot-stock").machine.timing == "instructions"
    assert s.machine.cpus == scenario.load(DEFAULT, "boot-stock").machine.cpus


def _problems(tmp_path, text, name=None):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ScenarioError) as info:
        if name is None:
            scenario.validate_file(path)
        else:
            scenario.load(path, name)
    return [str(p) for p in info.value.problems]


def _with_override(tmp_path, override):
    """The default file plus one scenario `bad` with `override` (YAML text, indented under it)."""
    text = DEFAULT.read_text() + "  bad:\n" + textwrap.indent(textwrap.dedent(override), "    ")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    first_line = len(DEFAULT.read_text().splitlines()) + 2
    with pytest.raises(ScenarioError) as info:
        scenario.load(path, "bad")
    return [str(p) for p in info.value.problems], first_line, path


def test_vcpu_counts_need_instruction_timing(tmp_path):
    problems, line, path = _with_override(tmp_path, "machine:\n  timing: host\n  vcpu_counts: true\n"
                                                    "measurement:\n  pacing: host\n")
    assert len(problems) == 1 and "scenarios.bad.machine.vcpu_counts: per-vCPU instruction counts need " \
        "instruction timing" in problems[0] and problems[0].startswith(f"{path}:")


def test_unknown_key_names_line_field_and_allowed_keys(tmp_path):
    problems, line, path = _with_override(tmp_path, "machine:\n  cpu: 3\n")
    assert problems == [f"{path}:{line + 1}: scenarios.bad.machine.cpu: unknown key 'cpu'; allowed: "
                        "accel, cpu_model, cpus, interrupt_remapping, memory_mb, timing, vcpu_counts"]


def test_wrong_type(tmp_path):
    problems, line, path = _with_override(tmp_path, "machine:\n  cpus: two\n")
    assert problems == [f"{path}:{line + 1}: scenarios.bad.machine.cpus: expected an integer, got 'two' (str)"]


def test_bool_is_not_an_integer(tmp_path):
    problems, _, _ = _with_override(tmp_path, "dom0:\n  vcpus: true\n")
    assert "expected an integer, got True (bool)" in problems[0]


def test_choice_lists_what_is_allowed(tmp_path):
    problems, _, _ = _with_override(tmp_path, "machine:\n  accel: hvf\n")
    assert problems[0].endswith("scenarios.bad.machine.accel: 'hvf' is not allowed; choose one of: auto, kvm, tcg")


def test_pcpu_the_machine_lacks(tmp_path):
    problems, line, path = _with_override(tmp_path, "rt_guest:\n  pcpu: 5\n")
    assert f"{path}:{line + 1}: scenarios.bad.rt_guest.pcpu: pCPU 5 does not exist: the machine has 2 CPUs (0..1)" \
        in problems


def test_two_guests_on_the_dedicated_pcpu(tmp_path):
    problems, line, path = _with_override(tmp_path, "load_guest:\n  pcpus: [0, 1]\n")
    assert problems == [f"{path}:{line + 1}: scenarios.bad.load_guest.pcpus: pCPU 1 is dedicated to the RT guest "
                        "'rt'; the load guest 'load' may not use it: only dom0 may share it, with rt_guest.exclusive: false"]


@pytest.mark.parametrize("override, where, why", [
    ("nics:\n  load:\n    irq_mode: msi\n", "nics.load.irq_mode", "removed: dom0's driver picks the load NIC's"),
    ("machine:\n  iommu: amd\n", "machine.iommu", "removed: the emulated IOMMU is always Intel VT-d"),
    ("rt_guest:\n  vcpus: 2\n", "rt_guest.vcpus", "removed: the RT guest always has one vCPU"),
    ("load_guest:\n  nic_mode: passthrough\n", "load_guest.nic_mode", "pass-through of the load NIC to it is not"),
    ("timeouts:\n  measure: 10\n", "timeouts.measure", "renamed to timeouts.dump"),
])
def test_removed_knobs_say_why(tmp_path, override, where, why):
    problems, line, path = _with_override(tmp_path, override)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:{line + override.count(chr(10)) - 1}: scenarios.bad.{where}: ")
    assert why in problems[0]
    assert "allowed: " in problems[0]


def test_measured_nic_must_be_msi_capable(tmp_path):
    problems, _, _ = _with_override(tmp_path, "nics:\n  measured:\n    model: e1000\n    irq_mode: intx\n")
    assert any("the measured NIC must be an e1000e" in p for p in problems)


def test_bad_mac_and_reserved_slot(tmp_path):
    problems, _, _ = _with_override(tmp_path, "nics:\n  measured:\n    mac: '52:54:00:12:34'\n    pci_slot: 31\n")
    assert any("nics.measured.mac: '52:54:00:12:34' is not valid" in p for p in problems)
    assert any("nics.measured.pci_slot: 31 is out of range 2..30" in p for p in problems)


def test_unquoted_mac_gets_a_hint(tmp_path):
    problems, _, _ = _with_override(tmp_path, "nics:\n  measured:\n    mac: 52:54:00:12:34:01\n")
    assert any("nics.measured.mac: expected a string, got" in p and "quote it" in p for p in problems)


def test_memory_must_fit(tmp_path):
    problems, _, _ = _with_override(tmp_path, "machine:\n  memory_mb: 1024\n")
    assert any("machine.memory_mb: 1024 MB is too small" in p for p in problems)


def test_xen_option_with_a_space_is_refused(tmp_path):
    problems, _, _ = _with_override(tmp_path, "hypervisor:\n  options: ['a b']\n")
    assert any("hypervisor.options[0]: 'a b' is not valid" in p for p in problems)


def test_all_problems_are_reported_at_once(tmp_path):
    problems, _, _ = _with_override(tmp_path, "machine:\n  cpus: 0\n  accel: x\ndom0:\n  vcpus: -1\n")
    assert len(problems) == 3


def test_missing_sections_and_unknown_scenario(tmp_path):
    problems = _problems(tmp_path, """\
        defaults:
          machine: {memory_mb: 3072}
        scenarios:
          only: {}
        """)
    assert any(p.endswith("scenarios.only.nics: missing (required)") for p in problems)
    assert any("scenarios.only.machine.cpus: missing (required)" in p for p in problems)
    problems = _problems(tmp_path, "defaults: {}\nscenarios:\n  a: {}\n", name="nope")
    assert problems[0].endswith("scenarios: no scenario or comparison named 'nope'; scenarios: a; comparisons: none")


def test_yaml_syntax_error_names_the_line(tmp_path):
    problems = _problems(tmp_path, "defaults:\n  machine: [1, 2\nscenarios: {}\n")
    assert problems[0].startswith(f"{tmp_path / 'bad.yaml'}:") and "(syntax)" in problems[0]


def test_duplicate_key_is_an_error(tmp_path):
    problems = _problems(tmp_path, "defaults: {}\ndefaults: {}\nscenarios: {}\n")
    assert ":2:" in problems[0] and "duplicate key 'defaults'" in problems[0]


def test_bad_top_level_and_default_scenario(tmp_path):
    problems = _problems(tmp_path, "defualts: {}\nscenarios: {}\n")
    assert any("unknown key 'defualts'" in p for p in problems)
    text = DEFAULT.read_text().replace("default_scenario: stock-vs-natsume", "default_scenario: nope")
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        scenario.validate_file(path)
    assert "default_scenario: names no scenario" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError) as info:
        scenario.load(tmp_path / "absent.yaml")
    assert "cannot read" in str(info.value)


def test_timing_names_the_mode_and_refuses_kvm(tmp_path):
    problems, _, path = _with_override(tmp_path, "machine:\n  accel: kvm\n")
    assert [p.split(": ", 1)[1] for p in problems] == [
        "scenarios.bad.machine.timing: instruction-count timing needs TCG (QEMU's -icount excludes KVM): "
        "use accel: tcg or auto, or timing: host"]
    problems, _, _ = _with_override(tmp_path, "machine:\n  timing: cycles\n")
    assert any("'cycles' is not allowed; choose one of: instructions, host" in p for p in problems)


def test_duplicate_pcpus_and_the_shared_rt_pcpu(tmp_path):
    problems, _, _ = _with_override(tmp_path, "load_guest:\n  pcpus: [0, 0]\n")
    assert any("pCPU listed twice in [0, 0]" in p for p in problems)
    problems, _, _ = _with_override(tmp_path, "dom0:\n  vcpus: 2\n  pcpus: [0, 1]\n")
    assert any("dom0 may not use it: the RT guest is exclusive" in p for p in problems)
    shared = scenario.load(DEFAULT, "paper-stock")
    assert shared.rt_guest.pcpu in shared.dom0.pcpus and not shared.rt_guest.exclusive


def test_load_nic_irq_vcpu_must_exist(tmp_path):
    problems, _, _ = _with_override(tmp_path, "dom0:\n  load_nic_irq_vcpu: 1\n")
    assert any("load_nic_irq_vcpu: dom0 has 1 vCPU(s) (0..0)" in p for p in problems)


def test_comparison_repeats_are_checked(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(DEFAULT.read_text().replace("    repeats: 2\n", "    repeats: 0\n", 1))
    with pytest.raises(ScenarioError) as info:
        scenario.validate_file(path)
    assert "comparisons.stock-vs-natsume.repeats: expected an integer 1..50" in str(info.value)


# ---------------------------------------------------------------- --set FIELD.PATH=VALUE


def test_set_overrides_fields_of_a_scenario_and_of_every_scenario_of_a_comparison():
    s = scenario.load_target(DEFAULT, "smoke-stock", ["nics.measured.udp_port=40110", "nics.load.udp_port=40120",
                                                      "hypervisor.natsume.preempt_evtchn=false"])
    assert (s.nics.measured.udp_port, s.nics.load.udp_port, s.hypervisor.natsume.preempt_evtchn) == (40110, 40120, False)
    comp = scenario.load_target(DEFAULT, "smoke-comparison", ["measurement.bursts=5"])
    assert [x.measurement.bursts for x in comp.scenarios] == [5, 5]


@pytest.mark.parametrize("sets, where, says", [
    (["foo"], "--set:1: foo", "expected FIELD.PATH=VALUE"),
    (["Nics.x=1"], "--set:1: Nics.x", "expected FIELD.PATH=VALUE"),
    (["measurement.bursts=5", "nics.bogus=1"], "--set:2: scenarios.smoke-stock.nics.bogus", "unknown key 'bogus'"),
    (["nics.measured.udp_port=abc"], "--set:1: scenarios.smoke-stock.nics.measured.udp_port", "expected an integer"),
    (["measurement.bursts=[1"], "--set:1: measurement.bursts", "YAML syntax"),
])
def test_a_bad_set_names_its_position_and_field(sets, where, says):
    with pytest.raises(ScenarioError) as exc:
        scenario.load_target(DEFAULT, "smoke-stock", sets)
    text = "\n".join(map(str, exc.value.problems))
    assert where in text and says in text, text


def test_a_run_with_sets_reproduces_them():
    from orchestrator import bundle
    script = bundle.reproducer("smoke-stock", "r1", "abc", ["nics.measured.udp_port=40110", "x.y=a b"])
    assert "run smoke-stock --set nics.measured.udp_port=40110 --set 'x.y=a b'" in script
    assert "make testbed run SCENARIO=smoke-stock" in bundle.reproducer("smoke-stock", "r1", "abc")


def test_instruction_pacing_needs_the_vcpu_plugin(tmp_path):
    """pacing: instructions gates the guest in the vCPU plugin: host timing cannot carry it."""
    problems, line, path = _with_override(
        tmp_path, "machine:\n  timing: host\n  vcpu_counts: false\nmeasurement:\n  pacing: instructions\n")
    assert len(problems) == 1 and "scenarios.bad.measurement.pacing: instruction pacing holds the guest" in problems[0]
    assert problems[0].startswith(f"{path}:")


def test_instruction_pacing_needs_the_burst_period_on_the_flood_grid(tmp_path):
    problems, line, path = _with_override(tmp_path, "measurement:\n  pacing: instructions\n  load_interval_us: 3000\n")
    assert len(problems) == 1 and "scenarios.bad.measurement.load_interval_us" in problems[0]
    assert "must divide" in problems[0] and problems[0].startswith(f"{path}:")
