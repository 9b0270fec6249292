"""Machine launch errors, accelerator choice, and bundle finishing (no QEMU needed)."""

import json
import tarfile

import pytest

from orchestrator import bundle, machine
from orchestrator.errors import MachineError
from orchestrator.stages import StageRunner


def test_failed_launch_carries_argv_and_output(tmp_path):
    argv = ["sh", "-c", "echo 'qemu: could not load kernel' >&2; exit 1"]
    m = machine.Machine(argv, tmp_path / "qmp.sock", tmp_path / "qemu.log")
    with pytest.raises(MachineError) as info:
        m.launch(timeout=5)
    text = str(info.value)
    assert "QEMU exited at start (exit 1)" in text
    assert "could not load kernel" in text and "command: sh -c" in text


def test_missing_binary_is_a_machine_error(tmp_path):
    m = machine.Machine(["/nonexistent/qemu"], tmp_path / "qmp.sock", tmp_path / "qemu.log")
    with pytest.raises(MachineError, match="cannot start QEMU"):
        m.launch(timeout=1)


def test_launch_timeout_kills_the_process(tmp_path):
    m = machine.Machine(["sleep", "30"], tmp_path / "qmp.sock", tmp_path / "qemu.log")
    with pytest.raises(MachineError, match="did not appear within 0.3 s"):
        m.launch(timeout=0.3)
    assert not m.alive()


def test_accelerator_choice(tmp_path, monkeypatch):
    verdicts = machine.KvmVerdicts(tmp_path / "v.json")
    assert machine.choose_accel("tcg", verdicts)[0] == "tcg"
    monkeypatch.setattr(machine, "kvm_usable", lambda: False)
    assert machine.choose_accel("auto", verdicts) == ("tcg", "TCG: /dev/kvm is not usable on this host")
    with pytest.raises(MachineError, match="/dev/kvm is not usable"):
        machine.choose_accel("kvm", verdicts)
    monkeypatch.setattr(machine, "kvm_usable", lambda: True)
    assert machine.choose_accel("auto", verdicts)[0] == "probe"
    verdicts.put(False, "KVM internal error")
    accel, notice = machine.choose_accel("auto", verdicts)
    assert accel == "tcg" and "KVM internal error" in notice
    verdicts.put(True, "dom0 booted")
    assert machine.choose_accel("auto", verdicts)[0] == "kvm"


def test_bundle_is_hidden_until_finished_then_packed(tmp_path):
    b = bundle.Bundle(tmp_path, "boot-stock")
    assert b.dir.name.startswith(".boot-stock-") and b.dir.name.endswith(".partial")
    (b.logs / "console.log").write_text("(XEN) hello\n")
    runner = StageRunner()
    with runner.stage("images"):
        pass
    partial = b.dir
    final, tar = b.finish({"status": "passed"}, runner, "#!/bin/sh\n")
    assert final.exists() and not partial.exists() and b.dir == final and b.logs == final / "logs"
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["run_id"] == final.name and manifest["status"] == "passed"
    assert json.loads((final / "stages.json").read_text())[0]["name"] == "images"
    with tarfile.open(tar) as t:
        names = t.getnames()
    assert f"{final.name}/logs/console.log" in names and f"{final.name}/reproducer.sh" in names


def test_two_bundles_in_one_second_do_not_collide(tmp_path):
    a, b = bundle.Bundle(tmp_path, "x"), bundle.Bundle(tmp_path, "x")
    assert a.dir != b.dir and a.final != b.final
    a.finish({}, StageRunner(), "")
    assert bundle.Bundle(tmp_path, "x").final not in (a.final, b.final)


def test_reproducer_pins_commit_and_scenario():
    text = bundle.reproducer("boot-stock", "boot-stock-1", "abc123")
    assert "git checkout abc123" in text
    assert "make testbed run SCENARIO=boot-stock" in text


def test_console_tail_splits_serial_lines_on_newline_only(tmp_path):
    from orchestrator.console import SerialConsole
    log = tmp_path / "console.log"
    log.write_bytes(b"(XEN) one\r\r\n[ 1.0] two\r\r\nthree")
    assert SerialConsole(tmp_path / "s.sock", log).tail(2) == ["[ 1.0] two", "three"]


def test_udp_port_taken_by_another_run_is_refused():
    import socket
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU's socket netdev does
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        with pytest.raises(MachineError, match=f"UDP port\\(s\\) {port} on 127.0.0.1 are in use"):
            machine.check_udp_ports_free([port])
    finally:
        holder.close()
    machine.check_udp_ports_free([port])


def test_a_second_claim_on_a_port_is_refused_at_once_and_names_the_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "LOCK_DIR", tmp_path)
    monkeypatch.setattr(machine, "check_udp_ports_free", lambda ports: None)
    with machine.claim_udp_ports([40010, 40020], "run A"):
        with pytest.raises(MachineError, match=r"UDP port 40011 is claimed by run A \(pid \d+\)"):
            with machine.claim_udp_ports([40011], "run B"):
                pass
        with machine.claim_udp_ports([40030], "run C"):  # other ports: both run
            pass
    with machine.claim_udp_ports([40010], "run B"):  # released when run A ended
        assert "run B" in (tmp_path / "testbed-udp-40010.lock").read_text()


def test_a_claim_still_refuses_a_port_held_by_a_process_that_is_not_a_run(tmp_path, monkeypatch):
    import socket
    monkeypatch.setattr(machine, "LOCK_DIR", tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(MachineError, match="in use"):
            with machine.claim_udp_ports([port], "run A"):
                pass
