"""Boots the real stack: Debian's Xen 4.17 in QEMU, dom0, the RT guest with the
e1000e passed through and the load guest on dom0's bridge. Builds the images
first if the cache is cold (~10 min); the boot itself takes a few minutes under TCG."""

import json
import re

import pytest

from orchestrator import run, scenario
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def s_boot():
    return scenario.load(ROOT / "testbed.yaml", "boot-stock")


@pytest.fixture(scope="module")
def booted():
    s = s_boot()
    outcome = run.run(ROOT / "testbed.yaml", s, ROOT / "results", print)
    print(outcome.runner.table())
    return outcome.code, outcome.bundle, outcome.archive, outcome.runner, outcome.error


def test_run_passes_every_stage(booted):
    code, final, tar, runner, error = booted
    assert error is None, str(error)
    assert code == 0
    assert [r.status for r in runner.results] == ["passed"] * len(run.stage_names(s_boot()))
    assert tar.exists() and final.exists()


def test_xen_reports_iommu_and_interrupt_remapping(booted):
    console = (booted[1] / "logs" / "console.log").read_text(errors="replace")
    assert re.search(r"Xen version 4\.17\.5", console)
    assert "I/O virtualisation enabled" in console
    assert "Interrupt remapping enabled" in console


def test_both_guests_listed_by_xl(booted):
    xl_list = (booted[1] / "logs" / "xl-list.txt").read_text()
    names = [line.split()[0] for line in xl_list.splitlines()[1:] if line.strip()]
    assert names[:1] == ["Domain-0"] and "rt" in names and "load" in names


def test_rt_guest_has_the_e1000e_by_passthrough(booted):
    logs = booted[1] / "logs"
    assert "0000:00:04.0" in (logs / "xl-pci-list-rt.txt").read_text()
    rt_console = (logs / "guest-rt-console.log").read_text()
    assert re.search(r"TESTBED-PCI \S+ 8086:10d3 driver=e1000e", rt_console)
    assert "TESTBED-NET" in (logs / "guest-load-console.log").read_text()


def test_manifest_records_versions_and_accelerator(booted):
    manifest = json.loads((booted[1] / "manifest.json").read_text())
    assert manifest["status"] == "passed" and manifest["exit_code"] == 0
    assert manifest["accelerator"]["used"] in ("tcg", "kvm")
    xen_versions = "\n".join(next(v for k, v in manifest["images"].items() if k.startswith("xen-"))["versions"])
    assert "4.17.5+72-g01140da4e8-1" in xen_versions
    dom0 = "\n".join(manifest["images"]["dom0-rootfs"]["versions"])
    assert re.search(r"xen-utils-4\.17\s+4\.17\.5\+72-g01140da4e8-1", dom0)
    for name in ("qemu-cmdline.sh", "xen-cmdline.txt", "dom0-init.sh", "xl-rt.cfg", "xl-load.cfg", "testbed.yaml"):
        assert (booted[1] / "config" / name).exists(), name
