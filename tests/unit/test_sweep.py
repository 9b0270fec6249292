"""A comparison's `sweep:` in testbed.yaml: validated with file:line, expanded into the CI matrix
(each entry's --set texts, which the workflow passes on), run locally as one comparison per point,
and each point's bundle reproducible with --point."""

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from orchestrator import bundle, cli, compare, matrix, scenario
from orchestrator.errors import ScenarioError
from tests.conftest import ROOT
from tests.unit.test_matrix import with_comparison

SWEEP = """  rates:
    description: two rates
    scenarios: [iso-stock, iso-natsume-busy]
    repeats: 2
    sweep:
      measurement.load_rate_pps: [2000, 20000]
"""


def test_the_shipped_sweep_validates_and_lists_its_points():
    comp = scenario.load_target(ROOT / "testbed.yaml", "load-sweep")
    assert [p["label"] for p in comp.points()] == ["load-rate-pps-2000", "load-rate-pps-5000", "load-rate-pps-20000"]
    assert comp.points()[0]["sets"] == ["measurement.load_rate_pps=2000"]


def test_a_bad_sweep_names_file_line_and_field(tmp_path):
    path = with_comparison(tmp_path, SWEEP.replace("measurement.load_rate_pps: [2000, 20000]",
                                                   "measurement.load_rate_pps: [2000, -5]\n      machine.nope: [1]"))
    with pytest.raises(ScenarioError) as exc:
        scenario.load_target(path, "rates")
    text = str(exc.value)
    assert re.search(r"testbed\.yaml:\d+: comparisons\.rates\.sweep\.measurement\.load_rate_pps\[1\]: -5", text), text
    assert "comparisons.rates.sweep.machine.nope: names no single setting" in text


def test_matrix_entries_carry_the_points_sets_and_the_compare_glob_takes_one_point(tmp_path, capsys):
    path = with_comparison(tmp_path, SWEEP)
    gh = tmp_path / "gh"
    assert cli.main(["--file", str(path), "matrix", "rates", "--github-output", str(gh)]) == 0
    entries = json.loads(capsys.readouterr().out)["include"]
    assert len(entries) == 2 * 2 * 2  # points x scenarios x repeats
    assert {tuple(e["sets"]) for e in entries} == {("measurement.load_rate_pps=2000",),
                                                   ("measurement.load_rate_pps=20000",)}
    points = json.loads(gh.read_text().splitlines()[-1].removeprefix("points="))
    assert points == ["load-rate-pps-2000", "load-rate-pps-20000"]
    import fnmatch
    for point in points:  # the compare job's glob: results/*-<point>-r*/ (entries are result folders)
        picked = [e["name"] for e in entries if fnmatch.fnmatch(e["name"], f"*-{point}-r*")]
        assert picked == [e["name"] for e in entries if e["point"] == point] and len(picked) == 4


def test_the_workflow_turns_an_entrys_sets_into_set_arguments():
    wf = yaml.safe_load((ROOT / ".github/workflows/testbed.yml").read_text())
    step = next(s for s in wf["jobs"]["run"]["steps"] if s.get("env", {}).get("SETS"))
    script = step["run"].split("\n.venv/bin/python -m orchestrator run")[0]
    for sets, expected in ((["measurement.load_rate_pps=2000", 'hypervisor.variant="natsume"'],
                            ["--set", "measurement.load_rate_pps=2000", "--set", 'hypervisor.variant="natsume"']),
                           (None, [])):
        res = subprocess.run(["bash", "-c", script + '\nprintf "%s\\n" "${set_args[@]}"'],
                             env={"SETS": json.dumps(sets), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert [x for x in res.stdout.splitlines() if x] == expected


def _fake_comparisons(monkeypatch):
    calls = []

    def fake(scenario_file, comp, results_dir, say, sets=(), user_sets=()):
        calls.append(SimpleNamespace(comp=comp, sets=list(sets), user_sets=list(user_sets)))
        return SimpleNamespace(code=0, runs=[], report="", bundle=results_dir, archive=None, interrupted=False)

    monkeypatch.setattr(compare, "run_comparison", fake)
    monkeypatch.setattr(cli, "_handle_signals", lambda: None)
    return calls


def test_a_swept_comparison_runs_once_per_point_with_its_overrides(tmp_path, monkeypatch):
    calls = _fake_comparisons(monkeypatch)
    path = with_comparison(tmp_path, SWEEP)
    code = cli.main(["--file", str(path), "run", "rates", "--results", str(tmp_path / "r"),
                     "--set", "measurement.bursts=30"])
    assert code == 0
    assert [c.comp.name for c in calls] == ["rates-load-rate-pps-2000", "rates-load-rate-pps-20000"]
    assert [c.comp.scenarios[0].measurement.load_rate_pps for c in calls] == [2000, 20000]
    assert all(c.comp.scenarios[1].measurement.bursts == 30 for c in calls)
    assert calls[1].sets == ["measurement.bursts=30", "measurement.load_rate_pps=20000"]
    assert calls[1].user_sets == ["measurement.bursts=30"] and calls[1].comp.point == "load-rate-pps-20000"


def test_point_runs_one_point_and_is_in_its_reproducer(tmp_path, monkeypatch):
    calls = _fake_comparisons(monkeypatch)
    path = with_comparison(tmp_path, SWEEP)
    assert cli.main(["--file", str(path), "run", "rates", "--point", "load-rate-pps-2000",
                     "--results", str(tmp_path / "r")]) == 0
    assert [c.comp.name for c in calls] == ["rates-load-rate-pps-2000"]
    text = bundle.reproducer("rates", "id", "abc", ["measurement.bursts=30"], point="load-rate-pps-2000")
    assert "run rates --set measurement.bursts=30 --point load-rate-pps-2000" in text
