"""`testbed matrix`: the GitHub Actions job matrix, from testbed.yaml, and the sweep expansion."""

import json
import subprocess
import sys

import pytest

from orchestrator import cli, matrix, scenario
from orchestrator.errors import ScenarioError
from tests.conftest import ROOT

TESTBED = ROOT / "testbed.yaml"
KEYS = {"name", "scenario", "variant", "images", "repeat", "sets"}


def run_matrix(capsys, *args):
    code = cli.main(["--file", str(args[0]), "matrix", *args[1:]])
    out = capsys.readouterr()
    return code, out


def with_comparison(tmp_path, text):
    """testbed.yaml with one more comparison, `text` indented under `comparisons:`."""
    src = TESTBED.read_text()
    assert src.count("\ncomparisons:\n") == 1
    path = tmp_path / "testbed.yaml"
    path.write_text(src.replace("\ncomparisons:\n", "\ncomparisons:\n" + text))
    return path


def test_default_comparison_one_entry_per_scheduled_run(capsys):
    code, out = run_matrix(capsys, TESTBED)
    assert code == 0, out.err
    assert out.out.count("\n") == 1  # one line: fit for $GITHUB_OUTPUT
    got = json.loads(out.out)["include"]
    comp = scenario.load_target(TESTBED)
    assert isinstance(comp, scenario.Comparison)  # the file's default_scenario is a comparison
    assert [(e["repeat"], e["scenario"]) for e in got] == [(r, s.name) for r, s in comp.schedule()]
    assert len(got) == comp.repeats * len(comp.scenarios)
    for e, (_, s) in zip(got, comp.schedule()):
        assert set(e) == KEYS
        assert e["variant"] == e["images"] == s.hypervisor.variant
    assert len({e["name"] for e in got}) == len(got)


def test_comparison_with_repeats_2(capsys, tmp_path):
    path = with_comparison(tmp_path, "  ci-two:\n    scenarios: [iso-stock, iso-natsume]\n    repeats: 2\n")
    code, out = run_matrix(capsys, path, "ci-two")
    assert code == 0, out.err
    assert json.loads(out.out) == {"include": [
        {"name": "iso-stock-r1", "scenario": "iso-stock", "variant": "stock", "images": "stock", "repeat": 1, "sets": []},
        {"name": "iso-natsume-r1", "scenario": "iso-natsume", "variant": "natsume", "images": "natsume", "repeat": 1, "sets": []},
        {"name": "iso-stock-r2", "scenario": "iso-stock", "variant": "stock", "images": "stock", "repeat": 2, "sets": []},
        {"name": "iso-natsume-r2", "scenario": "iso-natsume", "variant": "natsume", "images": "natsume", "repeat": 2, "sets": []},
    ]}


def test_same_scenario_twice_gets_distinct_names(tmp_path):
    path = with_comparison(tmp_path, "  ci-twice:\n    scenarios: [iso-stock, iso-stock]\n")
    names = [e["name"] for e in matrix.entries(scenario.load_target(path, "ci-twice"))]
    assert names == ["iso-stock-r1", "iso-stock-r1-2"]


def test_plain_scenario_is_one_entry(capsys):
    code, out = run_matrix(capsys, TESTBED, "boot-stock")
    assert code == 0, out.err
    assert json.loads(out.out) == {"include": [
        {"name": "boot-stock-r1", "scenario": "boot-stock", "variant": "stock", "images": "stock", "repeat": 1, "sets": []}]}
    code, out = run_matrix(capsys, TESTBED, "iso-natsume")
    assert [(e["variant"], e["images"]) for e in json.loads(out.out)["include"]] == [("natsume", "natsume")]


def test_github_output_lines(capsys, tmp_path):
    gh = tmp_path / "github_output"
    gh.write_text("earlier=1\n")
    code, out = run_matrix(capsys, TESTBED, "isolated", "--github-output", str(gh))
    assert code == 0, out.err
    lines = gh.read_text().splitlines()
    baseline = scenario.load_target(TESTBED, "isolated").scenarios[0].name
    assert lines == ["earlier=1", f"matrix={out.out.strip()}", "target=isolated", "kind=comparison",
                     f"baseline={baseline}", 'points=[""]']
    code, out = run_matrix(capsys, TESTBED, "boot-stock", "--github-output", str(gh))
    assert gh.read_text().splitlines()[-4:] == ["target=boot-stock", "kind=scenario", "baseline=boot-stock",
                                                'points=[""]']


def test_unknown_name_exit_2_clear_message():
    res = subprocess.run([sys.executable, "-m", "orchestrator", "matrix", "no-such-comparison"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert res.stdout == ""  # nothing a workflow could mistake for a matrix
    assert "no scenario or comparison named 'no-such-comparison'" in res.stderr
    assert "comparisons: stock-vs-natsume" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------- sweeps (a plain dict: testbed.yaml has none yet)


def test_sweep_expands_to_the_product_of_its_axes_in_order():
    points = matrix.expand_sweep({"measurement.load_rate_pps": [5000, 20000, None],
                                  "rt_guest.busy_loop": [False, True]})
    assert [p["label"] for p in points] == [
        "load-rate-pps-5000-busy-loop-false", "load-rate-pps-5000-busy-loop-true",
        "load-rate-pps-20000-busy-loop-false", "load-rate-pps-20000-busy-loop-true",
        "load-rate-pps-null-busy-loop-false", "load-rate-pps-null-busy-loop-true"]
    assert points[3]["overrides"] == {"measurement.load_rate_pps": 20000, "rt_guest.busy_loop": True}
    assert points[4]["sets"] == ["measurement.load_rate_pps=null", "rt_guest.busy_loop=false"]


def test_no_sweep_is_one_point():
    assert matrix.expand_sweep(None) == matrix.expand_sweep({}) == [{"label": "", "overrides": {}, "sets": []}]


def test_sweep_entries_load_rate_times_variant():
    comp = scenario.load_target(TESTBED, "isolated")
    got = matrix.entries(comp, sweep={"measurement.load_rate_pps": [5000, 20000],
                                      "hypervisor.variant": ["stock", "natsume"]})
    assert len(got) == 2 * 2 * len(comp.schedule())
    first = got[0]
    assert first == {"name": f"{comp.scenarios[0].name}-load-rate-pps-5000-variant-stock-r1",
                     "scenario": comp.scenarios[0].name, "variant": "stock", "images": "stock", "repeat": 1,
                     "point": "load-rate-pps-5000-variant-stock",
                     "overrides": {"measurement.load_rate_pps": 5000, "hypervisor.variant": "stock"},
                     "sets": ["measurement.load_rate_pps=5000", 'hypervisor.variant="stock"']}
    # a swept variant decides which images the entry builds, whatever the scenario says
    assert {e["images"] for e in got if e["point"].endswith("variant-natsume")} == {"natsume"}
    assert len({e["name"] for e in got}) == len(got)


@pytest.mark.parametrize("sweep, message", [
    ({"measurement": [1]}, "sweep.measurement: names no single setting"),
    ({"measurement.no_such": [1]}, "sweep.measurement.no_such: names no single setting"),
    ({"name": ["a"]}, "sweep.name: names no single setting"),
    ({"dom0.pcpus": [[0]]}, "sweep.dom0.pcpus: a list setting cannot be swept"),
    ({"measurement.load_rate_pps": []}, "expected a list of 1..20 values"),
    ({"measurement.load_rate_pps": 5000}, "expected a list of 1..20 values"),
    ({"measurement.load_rate_pps": [5000, 5000]}, "values repeat"),
    ({"measurement.load_rate_pps": [0]}, "sweep.measurement.load_rate_pps[0]: 0: out of range 1..10000000"),
    ({"machine.cpus": ["4"]}, "sweep.machine.cpus[0]: '4': expected int"),
    ({"machine.cpus": [None]}, "null is not allowed"),
    ({"rt_guest.busy_loop": [1]}, "expected true or false"),
    ({"hypervisor.variant": ["stock", "xen"]}, "choose one of: stock, natsume"),
    ({"rt_guest.name": ["a b"]}, "a swept string must match"),
    ({"measurement.load_rate_pps": [{"x": 1}]}, "expected a single value"),
    ({"machine.cpus": [2], "dom0.vcpus": [1], "rt_guest.pcpu": [1], "machine.memory_mb": [2048]}, "4 axes: at most 3"),
    (["measurement.load_rate_pps"], "expected a mapping"),
])
def test_bad_sweeps_are_refused_with_the_field(sweep, message):
    with pytest.raises(ScenarioError) as exc:
        matrix.expand_sweep(sweep, where="testbed.yaml:12")
    assert message in str(exc.value)
    assert str(exc.value).startswith("testbed.yaml:12: ")


def test_more_jobs_than_a_github_matrix_takes():
    comp = scenario.load_target(TESTBED, "isolated")
    values = list(range(1000, 1020))
    with pytest.raises(ScenarioError, match="more than the 256 jobs"):
        matrix.entries(comp, sweep={"measurement.load_rate_pps": values, "rt_guest.busy_loop": [False, True],
                                    "hypervisor.variant": ["stock", "natsume"]})
