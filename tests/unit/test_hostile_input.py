"""Bad input is refused cleanly: exit 2 with a file:line message, no traceback, bounded time and
memory. One test per class of hostile input (issue 8), through the real CLI in a subprocess
with an address-space limit, then a property-based test that mutates the shipped testbed.yaml."""

import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import cli
from tests.conftest import ROOT

DEFAULT = (ROOT / "testbed.yaml").read_text()
MEMORY_LIMIT = 300 << 20  # bytes of address space the CLI may use on bad input
TIME_LIMIT = 10  # seconds


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT + (400 << 20),) * 2)  # + the interpreter and libraries


def run_cli(*args):
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                         timeout=TIME_LIMIT, cwd=ROOT, preexec_fn=_limit, errors="replace")
    res.seconds = time.monotonic() - t0
    return res


def refused(path, *extra, command="validate"):
    res = run_cli("--file", str(path), command, *extra)
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    assert len(res.stderr) < 20_000, f"{len(res.stderr)} bytes of stderr"
    return res.stderr


def with_scenario(tmp_path, body, name="bad", extra=""):
    path = tmp_path / "t.yaml"
    path.write_text(DEFAULT + f"  {name}:\n" + textwrap.indent(textwrap.dedent(body), "    ") + extra)
    return path


def test_billion_laughs_is_refused_in_bounded_time_and_memory(tmp_path):
    """Nine levels of nine aliases: 9**9 strings if anything expands the value."""
    lol = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        name, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lol.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "lol.yaml"
    path.write_text(DEFAULT + "  bad:\n    anchors:\n" + "".join(f"      {x}\n" for x in lol)
                    + "    description: *i\n")
    for command in ("validate", "list"):
        res = run_cli("--file", str(path), command)
        assert res.returncode in (0, 2) and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert len(res.stderr) + len(res.stdout) < 20_000
        if command == "validate":
            assert res.returncode == 2 and "scenarios.bad.anchors: unknown key" in res.stderr


@pytest.mark.parametrize("body, field", [
    ('nics:\n  measured:\n    mac: "52:54:00:12:34:01\\n"\n', "nics.measured.mac"),
    ('rt_guest:\n  name: "rt\\n"\n', "rt_guest.name"),
    ('hypervisor:\n  options: ["loglvl=all\\nconsole=vga"]\n', "hypervisor.options[0]"),
])
def test_values_ending_in_a_newline_fail_their_pattern(tmp_path, body, field):
    assert f"scenarios.bad.{field}" in refused(with_scenario(tmp_path, body))


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "$(touch x)", "a b", "UPPER", "x\n"])
def test_comparison_and_scenario_names_that_could_escape_are_refused(tmp_path, name):
    path = tmp_path / "t.yaml"
    quoted = '"' + name.replace("\n", "\\n") + '"'
    path.write_text(DEFAULT.replace("comparisons:\n", f"comparisons:\n  {quoted}:\n"
                                                      "    scenarios: [iso-stock, iso-natsume]\n", 1))
    assert "names use lower-case letters" in refused(path)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["1", "true", "2.5"])
def test_non_string_comparison_keys_are_refused(tmp_path, key):
    path = tmp_path / "t.yaml"
    path.write_text(DEFAULT.replace("comparisons:\n", f"comparisons:\n  {key}:\n    scenarios: [iso-stock, iso-natsume]\n", 1))
    assert "names use lower-case letters" in refused(path)


def test_a_comparison_may_not_shadow_a_scenario(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(DEFAULT.replace("comparisons:\n", "comparisons:\n  iso-stock:\n    scenarios: [iso-stock, iso-natsume]\n", 1))
    assert "comparisons.iso-stock: a scenario has the same name" in refused(path)


@pytest.mark.parametrize("data, what", [
    ("é: 1\n".encode("latin-1"), "not UTF-8 text"),
    ("a: 1\n".encode("utf-16"), "not UTF-8 text"),
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"a: 1\nb: \x00\n", ":2: (syntax): character '\\x00' is not allowed"),
    (b"[" * 20000, "nested too deeply"),
])
def test_files_that_are_not_yaml_text_are_refused(tmp_path, data, what):
    path = tmp_path / "t.yaml"
    path.write_bytes(data)
    assert what in refused(path)


def test_fifo_and_devices_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo)
    assert "not a regular file" in refused("/dev/zero")


def test_a_huge_file_or_value_is_not_echoed(tmp_path):
    path = with_scenario(tmp_path, "description: " + "x" * 5_000_000 + "\n")
    assert "too large for a scenario file" in refused(path)
    path = with_scenario(tmp_path, "rt_guest:\n  name: " + "y" * 500_000 + "\n")
    assert "scenarios.bad.rt_guest.name" in refused(path)


@pytest.mark.parametrize("body, message", [
    ("measurement:\n  max_unpaired_pct: .nan\n", "is not a finite number"),
    ("dom0:\n  pcpus: [0, 0]\n", "pCPU listed twice"),
    ("hypervisor:\n  options: [dom0_mem=512M]\n", "'dom0_mem' is set by the testbed from dom0.memory_mb"),
    ("hypervisor:\n  options: [natsume=0000:00:04.0]\n", "'natsume' is set by the testbed"),
    ("machine:\n  accel: kvm\n", "instruction-count timing needs TCG"),
])
def test_values_the_testbed_cannot_honour_are_refused(tmp_path, body, message):
    assert message in refused(with_scenario(tmp_path, body))


def test_empty_scenarios_are_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("defaults: {}\nscenarios: {}\n")
    assert "scenarios: defines no scenario" in refused(path)
    assert "defines no scenario" in refused(path, command="list")


def test_markup_in_a_description_is_printed_as_text(tmp_path):
    path = with_scenario(tmp_path, 'description: "see [/bold] and [red]this[/red]"\n')
    res = run_cli("--file", str(path), "list")
    assert res.returncode == 0, res.stderr
    assert "see [/bold] and [red]this[/red]" in res.stdout


def test_unknown_names_get_a_suggestion_and_every_name(tmp_path):
    res = run_cli("qemu-cmdline", "iso-stok")
    assert res.returncode == 2 and "did you mean 'iso-stock'?" in res.stderr
    assert "comparisons: stock-vs-natsume" in res.stderr


def test_render_and_cmdline_without_a_name_use_the_default_comparisons_first_scenario(tmp_path):
    res = run_cli("qemu-cmdline")
    assert res.returncode == 0, res.stderr
    assert "testbed-paper-stock" in res.stdout


def test_render_into_an_unusable_folder_or_a_too_long_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = run_cli("render", "iso-stock", str(blocker / "sub"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    long = tmp_path / ("d" * 100)
    res = run_cli("render", "iso-stock", str(long))
    assert res.returncode == 2 and "longer than a unix socket path may be (107)" in res.stderr


# ---------------------------------------------------------------- property: mutate the shipped file

HOSTILE = ["", "~", "null", "[]", "{}", "-1", "0", "1e309", ".nan", ".inf", "true", "'x\\n'", '"a\\nb"',
           "*nope", "&a x", "[/bold]", "'../../x'", "$(id)", "9" * 40, "'" + "z" * 300 + "'", "{a: [1, {b: 2}]}",
           "'52:54:00:12:34:01\\n'", "!!python/object:os.system x", "'\\u0000'", "[0, 0]", "é", "\t"]
LINES = DEFAULT.splitlines()


@st.composite
def mutated(draw):
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["value", "delete", "duplicate", "indent", "text"]))
        line = lines[i]
        if kind == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[i] = f"{key}: {draw(st.sampled_from(HOSTILE))}"
        elif kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 7)) + line.lstrip()
        else:
            lines[i] = line + draw(st.text(max_size=12))
    return "\n".join(lines) + "\n"


@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "2000")), deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=mutated(), command=st.sampled_from(["validate", "list", "qemu-cmdline"]))
def test_mutated_files_exit_0_or_2_without_a_traceback(tmp_path, text, command, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(text, errors="surrogatepass")
    t0 = time.monotonic()
    code = cli.main(["--file", str(path), command])
    assert code in (0, 2)
    assert time.monotonic() - t0 < TIME_LIMIT
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and len(err) < 20_000
