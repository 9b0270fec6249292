"""Rendering: golden files of the default scenario, and the quoting that keeps YAML values out of shells."""

import os
import shlex

import pytest

from orchestrator import render, scenario
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "boot-stock"
PATHS = render.RunPaths(xen="/images/xen-stock/xen", kernel="/images/kernel/vmlinuz",
                        dom0_initrd="/run/testbed/dom0-initrd", serial_socket="/run/testbed/serial.sock",
                        serial_log="/results/run/logs/console.log", qmp_socket="/run/testbed/qmp.sock",
                        qga_socket="/run/testbed/qga.sock", share_dir="/results/run/raw",
                        monitor_socket="/run/testbed/monitor.sock")


def _default():
    return scenario.load(ROOT / "testbed.yaml", "boot-stock")


def test_golden_files_of_default_scenario():
    """Set UPDATE_GOLDEN=1 to rewrite them after an intended change, then review the diff."""
    files = render.render_all(_default(), PATHS, "tcg")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN.iterdir():
            old.unlink()
        render.write_all(files, GOLDEN)
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(files)
    for name, text in files.items():
        assert (GOLDEN / name).read_text() == text, f"{name} differs from its golden copy"


def test_qemu_argv_shape():
    argv = render.qemu_argv(_default(), PATHS, "tcg")
    assert argv[0] == "qemu-system-x86_64"
    joined = " ".join(argv)
    assert "-S" in argv and "q35" in argv and "intel-iommu,intremap=on" in argv
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert argv[argv.index("-icount") + 1] == "shift=0,sleep=off"  # instruction timing is the default
    assert argv[argv.index("-cpu") + 1] == "qemu64,+svm"
    assert "e1000e,netdev=measured,mac=52:54:00:12:34:01,addr=0x04" in argv
    assert "e1000,netdev=load,mac=52:54:00:12:34:02,addr=0x05" in argv
    assert "socket,id=measured,udp=127.0.0.1:40011,localaddr=127.0.0.1:40010" in argv
    initrd = argv[argv.index("-initrd") + 1]
    assert initrd == "/images/kernel/vmlinuz console=hvc0 earlyprintk=xen,/run/testbed/dom0-initrd"


def test_the_vcpu_plugin_follows_icount_in_the_argv():
    plugin = "file=/images/vcpu-plugin/vcpucount.so,out=/results/run/raw/vcpu-counts.bin,vcpu=1"
    argv = render.qemu_argv(_default(), PATHS, "tcg", plugin)
    assert argv[argv.index("-plugin") + 1] == plugin and argv.index("-plugin") == argv.index("-icount") + 2
    assert "-plugin" not in render.qemu_argv(_default(), PATHS, "tcg")
    with pytest.raises(ValueError, match="space"):
        render.qemu_argv(_default(), PATHS, "tcg", plugin + " x")


def test_host_timing_is_multi_threaded_tcg_without_icount():
    s = scenario.load(ROOT / "testbed.yaml", "boot-stock-host")
    argv = render.qemu_argv(s, PATHS, "tcg")
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert "-icount" not in argv


def test_kvm_uses_split_irqchip_for_interrupt_remapping():
    argv = render.qemu_argv(_default(), PATHS, "kvm")
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-machine") + 1] == "q35,kernel-irqchip=split"


def test_xen_cmdline_carries_dom0_sizes_and_options():
    line = render.xen_cmdline(_default())
    assert line.startswith("console=com1 com1=115200,8n1 ")
    assert "dom0_mem=1024M,max:1024M" in line and "dom0_max_vcpus=1" in line
    assert line.endswith("loglvl=all guest_loglvl=all")


def test_xl_configs():
    s = _default()
    rt = render.xl_config(s, "rt")
    assert 'pci = [ "0000:00:04.0" ]' in rt and 'cpus = "1"' in rt and "vif" not in rt
    load = render.xl_config(s, "load")
    assert 'vif = [ "mac=00:16:3e:00:00:02,bridge=xenbr0" ]' in load and "pci" not in load


def test_quoting_filters():
    assert render.shquote("a'b; rm -rf /") == shlex.quote("a'b; rm -rf /")
    assert render.mbmod("/p/vmlinuz a=1,2") == "/p/vmlinuz a=1,,2"
    with pytest.raises(ValueError):
        render.xlquote('x"; evil')


def test_dom0_init_quotes_values_for_the_shell():
    text = render.dom0_init(_default())
    assert text.startswith("#!")
    assert "52:54:00:12:34:02" in text and "xenbr0" in text


def test_paths_with_spaces_are_refused():
    bad = render.RunPaths(**{**PATHS.__dict__, "kernel": "/my images/vmlinuz"})
    with pytest.raises(ValueError, match="contains a space or a comma"):
        render.qemu_argv(_default(), bad, "tcg")


def test_natsume_variant_renders_its_boot_option():
    import dataclasses
    s = _default()
    hv = dataclasses.replace(s.hypervisor, variant="natsume",
                             natsume=dataclasses.replace(s.hypervisor.natsume, preempt_evtchn=False, idle="poll"))
    line = render.xen_cmdline(dataclasses.replace(s, hypervisor=hv))
    assert " natsume=0000:00:04.0,cpu=1,no-preempt,idle=poll" in line
    assert "natsume" not in render.xen_cmdline(s)


def test_rt_guest_extra_carries_driver_and_idle_options():
    import dataclasses
    s = _default()
    rt = render.xl_config(s, "rt")
    assert 'extra = "console=hvc0 testbed.role=rt testbed.e1000e_intmode=2 testbed.e1000e_itr=0"' in rt
    assert 'tsc_mode = "native"' in rt and "tsc_mode" not in render.xl_config(s, "load")
    busy = dataclasses.replace(s, rt_guest=dataclasses.replace(s.rt_guest, busy_loop=True,
                                                               interrupt_throttle_rate=None))
    assert 'testbed.e1000e_intmode=2 testbed.busy_loop=1"' in render.xl_config(busy, "rt")


def test_instruction_pacing_puts_an_arrival_dump_before_a_buffer_on_each_nic():
    import dataclasses
    s = scenario.load(ROOT / "testbed.yaml", "smoke-stock")
    paced = dataclasses.replace(s, measurement=dataclasses.replace(s.measurement, pacing="instructions"))
    paths = dataclasses.replace(PATHS, arrival_logs={"measured": "/run/testbed/a-m.pcap", "load": "/run/testbed/a-l.pcap"})
    argv = render.qemu_argv(paced, paths, "tcg")
    objects = [argv[i + 1] for i, a in enumerate(argv) if a == "-object"]
    assert [o.split(",")[0] for o in objects] == ["filter-dump", "filter-buffer"] * 2
    assert "netdev=measured,queue=tx,file=/run/testbed/a-m.pcap" in objects[0]
    assert objects[1].startswith("filter-buffer,id=pace-measured,")  # the id measure releases over QMP
    assert f"interval={2**32 - 1}" in objects[1]  # its own timer never fires in a run: an idle skip would end at it
    host = dataclasses.replace(s, measurement=dataclasses.replace(s.measurement, pacing="host"))
    assert not [a for a in render.qemu_argv(host, PATHS, "tcg") if a == "-object"]  # host pacing: no filters
    with pytest.raises(ValueError, match="arrival log"):
        render.qemu_argv(paced, PATHS, "tcg")
