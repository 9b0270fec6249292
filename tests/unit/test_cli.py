"""The CLI: clear errors and exit codes, never a traceback."""

import subprocess
import sys

from tests.conftest import ROOT


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_default_file():
    res = run_cli("validate")
    assert res.returncode == 0 and "valid" in res.stdout


def test_validate_bad_file_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "testbed.yaml").read_text().replace("cpus: 2 ", "cpus: 9 "))
    res = run_cli("validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert f"{bad}:" in res.stderr and "machine.cpus: 9 is out of range 2..8" in res.stderr


def test_run_with_unknown_scenario_writes_no_bundle(tmp_path):
    res = run_cli("run", "no-such-scenario", "--results", str(tmp_path))
    assert res.returncode == 2 and "no scenario or comparison named 'no-such-scenario'" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_render_and_qemu_cmdline(tmp_path):
    res = run_cli("render", "boot-stock", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "xl-rt.cfg").exists() and (tmp_path / "dom0-init.sh").exists()
    res = run_cli("qemu-cmdline", "boot-stock", str(tmp_path))
    assert res.returncode == 0 and res.stdout.startswith("qemu-system-x86_64 -name testbed-boot-stock")


def test_list_marks_the_default():
    res = run_cli("list")
    assert "* comparison stock-vs-natsume" in res.stdout and "  scenario   iso-natsume" in res.stdout
