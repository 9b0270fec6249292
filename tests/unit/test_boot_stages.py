"""Boot stage logic against fake console, machine and guest agent."""

import pytest

from orchestrator import boot, scenario
from orchestrator.errors import MachineError, StageError
from orchestrator.stages import StageRunner
from tests.conftest import ROOT
from tests.unit.fakes import FakeAgent, FakeConsole, FakeMachine

XEN_LOG = """\
(XEN) Xen version 4.17.5 (Debian 4.17.5+72-g01140da4e8-1) (root@x) (gcc) debug=n Sat Jan  1 00:00:00 UTC 2025
(XEN) Intel VT-d Snoop Control not enabled.
(XEN) Interrupt remapping enabled
(XEN) I/O virtualisation enabled
(XEN) *** Building a PV Dom0 ***
[    1.0] Linux version 6.1.0-50-amd64
testbed-dom0: xenstored started
TESTBED-DOM0-READY
"""
RT_LOG = "TESTBED-PCI 0000:00:00.0 8086:10d3 driver=e1000e\nTESTBED-IRQMODE 0000:00:00.0 msix\n" \
         "TESTBED-GUEST-READY role=rt\n"
LOAD_LOG = "TESTBED-NET eth0 00:16:3e:00:00:02 up\nTESTBED-GUEST-READY role=load\n"


@pytest.fixture
def s():
    return scenario.load(ROOT / "testbed.yaml", "iso-stock")


def healthy_agent():
    return FakeAgent([
        (r"^xl list$", (0, "Name  ID   Mem VCPUs\tState\tTime(s)\nDomain-0  0  1024  1  r-----  5.0\n")),
        (r"^xl list (rt|load)$", (0, "")),
        (r"xl vcpu-pin", (0, "")),
        (r"xl pci-assignable-add", (0, "")),
        (r"xl create", (0, "Parsing config\n")),
        (r"guest-rt.log", (0, RT_LOG)),
        (r"guest-load.log", (0, LOAD_LOG)),
        (r"xl shutdown", (0, "")),
    ])


def test_console_stages_pass_in_order():
    console, machine = FakeConsole(XEN_LOG), FakeMachine()
    assert boot.qemu_up(machine, console, 5).startswith("QEMU pid 4242")
    assert machine.events == ["launch", "cont"]
    assert boot.xen_banner(machine, console, 5).startswith("Xen version 4.17.5")
    assert "Interrupt remapping enabled" in boot.iommu(machine, console, 5)
    assert boot.dom0_ready(machine, console, 5) == "dom0 init finished"


def test_qemu_must_start_paused():
    with pytest.raises(boot.BootFailure, match="should start paused"):
        boot.qemu_up(FakeMachine(status="running"), FakeConsole(""), 5)


def test_missing_interrupt_remapping_fails_iommu_stage():
    console = FakeConsole(XEN_LOG.replace("Interrupt remapping enabled", "Interrupt remapping disabled"))
    boot.xen_banner(FakeMachine(), console, 5)
    with pytest.raises(boot.BootFailure, match="did not report \\['Interrupt remapping enabled'\\]"):
        boot.iommu(FakeMachine(), console, 5)


def test_xen_panic_fails_fast():
    console = FakeConsole("(XEN) Xen version 4.17.5\n(XEN) Panic on CPU 0:\n(XEN) boom\n")
    boot.xen_banner(FakeMachine(), console, 5)
    with pytest.raises(boot.BootFailure, match="Xen crashed"):
        boot.iommu(FakeMachine(), console, 5)


def test_dead_qemu_is_reported_not_waited_for():
    with pytest.raises(MachineError, match="exited unexpectedly"):
        boot.xen_banner(FakeMachine(alive=False), FakeConsole("nothing"), 1)


def test_timeout_names_what_was_awaited(monkeypatch):
    with pytest.raises(boot.BootFailure, match="no dom0 ready marker within 1 s"):
        boot.dom0_ready(FakeMachine(), FakeConsole("(XEN) Xen version 4.17.5\n"), 1)


def test_toolstack_and_guests(s):
    agent = healthy_agent()
    assert "Domain-0" in boot.toolstack(agent, s, 5)
    assert "xl vcpu-pin Domain-0 0 0" in agent.commands  # one vCPU, one pCPU: pinned one to one
    detail = boot.rt_guest(agent, s, 5)
    assert "driver=e1000e" in detail and "irq mode msix" in detail
    assert "xl pci-assignable-add 0000:00:04.0" in agent.commands
    assert "xl create /etc/testbed/xl-rt.cfg" in agent.commands
    assert "TESTBED-NET eth0" in boot.load_guest(agent, s, 5)


def test_toolstack_without_domain0_fails(s):
    agent = FakeAgent([(r"^xl list$", (0, "Name ID\n"))])
    with pytest.raises(boot.BootFailure, match="does not show Domain-0"):
        boot.toolstack(agent, s, 5)


def test_rt_guest_without_driver_times_out_with_its_console(s):
    agent = healthy_agent()
    agent.answers.insert(0, (r"guest-rt.log", (0, "TESTBED-PCI 0000:00:00.0 8086:10d3 driver=none\n")))
    with pytest.raises(boot.BootFailure, match="driver=none"):
        boot.rt_guest(agent, s, 0.2)


def test_guest_that_died_is_reported(s):
    agent = healthy_agent()
    agent.answers.insert(0, (r"^xl list rt$", (1, "")))
    agent.answers.insert(0, (r"guest-rt.log", (0, "Kernel panic\n")))
    with pytest.raises(boot.BootFailure, match="guest rt is gone"):
        boot.rt_guest(agent, s, 5)


def test_failed_create_shows_xl_output(s):
    agent = healthy_agent()
    agent.answers.insert(0, (r"xl create", (3, "libxl: error: passthrough not supported\n")))
    with pytest.raises(boot.BootFailure, match="passthrough not supported"):
        boot.rt_guest(agent, s, 5)


def test_collect_saves_every_file_even_when_one_fails(s, tmp_path):
    def answer(command):
        if command == "xl dmesg":
            raise TimeoutError("no answer")
        return 0, f"output of {command}\n"
    agent = FakeAgent([(r".", answer)])
    detail = boot.collect(agent, s, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"xl-list.txt", "xl-info.txt", "xl-dmesg.txt", "guest-rt-console.log", "guest-load-console.log"} <= names
    assert (tmp_path / "xl-dmesg.txt").read_text().startswith("[not collected")
    total = len(boot.DOM0_COMMANDS) + 4
    assert detail == f"{total - 1}/{total} files"


def test_stage_runner_attributes_failure_and_tail():
    runner = StageRunner(tail=lambda: ["line 1", "line 2"])
    with runner.stage("a"):
        pass
    with pytest.raises(StageError) as info:
        with runner.stage("b"):
            raise boot.BootFailure("nothing came")
    runner.skip_rest(["a", "b", "c"])
    assert [(r.name, r.status) for r in runner.results] == [("a", "passed"), ("b", "failed"), ("c", "skipped")]
    assert info.value.stage == "b" and info.value.tail_lines == ["line 1", "line 2"]
    assert "stage 'b' failed: nothing came" in str(info.value) and "last 2 console lines" in str(info.value)
    assert runner.failed_stage() == "b" and not runner.passed
    assert "b              failed" in runner.table()


def test_shutdown_quits_qemu_after_guests_are_gone():
    machine = FakeMachine()
    assert boot.shutdown(healthy_agent(), machine, 5) == "guests shut down; QEMU quit over QMP"
    assert machine.events == ["shutdown"]


def test_guest_that_ignores_shutdown_fails_the_stage_but_qemu_still_quits():
    machine = FakeMachine()
    agent = healthy_agent()
    agent.answers.insert(0, (r"^xl list$", (0, "Name ID\nDomain-0 0 1024 1 r----- 5.0\nrt 1 256 1 -b---- 1.0\n")))
    with pytest.raises(boot.BootFailure, match="guests did not shut down"):
        boot.shutdown(agent, machine, 0.5)
    assert machine.events == ["shutdown"]


def test_natsume_option_accepted_or_refused_as_scenario_error():
    ok = FakeAgent([(r"^xl dmesg$", (0, "(XEN) natsume: device 0000:00:04.0 -> pCPU 1, preempt on, idle halt (x)\n"))])
    assert boot.natsume_option(ok).startswith("natsume: device 0000:00:04.0 -> pCPU 1")
    bad = FakeAgent([(r"^xl dmesg$", (0, "(XEN) natsume: no PCI device 0000:00:09.0 at boot\n"
                                        "(XEN) natsume: option refused, Xen continues as stock (no dedicated device)\n"))])
    with pytest.raises(boot.NatsumeOptionRefused, match="scenario error: .*no PCI device 0000:00:09.0 at boot"):
        boot.natsume_option(bad)
    stock = FakeAgent([(r"^xl dmesg$", (0, "(XEN) Xen version 4.17.5\n"))])
    with pytest.raises(boot.BootFailure, match="neither an accepted nor a refused"):
        boot.natsume_option(stock)


def test_paper_shape_pins_dom0_one_to_one_and_steers_the_load_nic_irq():
    s = scenario.load(ROOT / "testbed.yaml", "paper-stock")
    agent = healthy_agent()
    agent.answers.insert(0, (r"smp_affinity", (0, "eth0 irq 20 -> 3\n")))
    detail = boot.toolstack(agent, s, 10)
    assert [c for c in agent.commands if c.startswith("xl vcpu-pin")] == [
        "xl vcpu-pin Domain-0 0 0", "xl vcpu-pin Domain-0 1 1", "xl vcpu-pin Domain-0 2 2", "xl vcpu-pin Domain-0 3 3"]
    steer = next(c for c in agent.commands if "smp_affinity" in c)
    assert "echo 8 > /proc/irq/$irq/smp_affinity" in steer and "52:54:00:12:34:02" in steer
    assert detail.endswith("load NIC eth0 irq 20 -> 3 (dom0 vCPU 3)")


def test_a_load_nic_irq_that_cannot_be_steered_fails_the_stage():
    s = scenario.load(ROOT / "testbed.yaml", "paper-stock")
    agent = healthy_agent()
    agent.answers.insert(0, (r"smp_affinity", (1, "")))
    with pytest.raises(boot.BootFailure, match="cannot bind the load NIC's interrupt to dom0 vCPU 3"):
        boot.toolstack(agent, s, 10)


def test_rt_weight_is_set_and_checked():
    s = scenario.load(ROOT / "testbed.yaml", "paper-stock-weighted")
    agent = healthy_agent()
    agent.answers[:0] = [(r"sched-credit2 -d rt -w", (0, "")),
                         (r"sched-credit2 -d rt$", (0, "Name   ID Weight  Cap\nrt      1  65535    0\n"))]
    assert boot.rt_guest(agent, s, 10).endswith("; credit2 weight 65535")
    agent.answers[1] = (r"sched-credit2 -d rt$", (0, "Name   ID Weight  Cap\nrt      1    256    0\n"))
    with pytest.raises(boot.BootFailure, match="credit2 weight is not 65535"):
        boot.rt_guest(agent, s, 10)
