"""The GitHub Actions workflow: valid against GitHub's workflow schema, and fed by `testbed matrix`.

The workflow itself only runs on GitHub; these checks are what can be known offline.
"""

import fnmatch
import glob
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from orchestrator import cli, images, scenario
from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "testbed.yml"


@pytest.fixture(scope="module")
def wf():
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def default_matrix():
    res = subprocess.run([sys.executable, "-m", "orchestrator", "matrix"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_workflow_is_valid_against_githubs_schema():
    # check-jsonschema ships GitHub's workflow schema (SchemaStore's) vendored: no network needed
    res = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                          str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_actionlint_if_installed():
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not on PATH (optional: its PyPI wrapper downloads the binary at install)")
    res = subprocess.run([exe, "-no-color", str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_jobs_and_their_order(wf):
    jobs = wf["jobs"]
    assert set(jobs) == {"plan", "run", "compare", "test"}
    assert jobs["run"]["needs"] == "plan"
    assert set(jobs["compare"]["needs"]) == {"plan", "run"}
    assert jobs["compare"]["if"].startswith("always()")
    for name, job in jobs.items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout"
        assert job["container"]["image"] == "debian:bookworm"
    for name in ("run", "test"):  # they build images: mmdebstrap mounts in its chroot
        assert "--privileged" in jobs[name]["container"]["options"]


def test_plan_output_is_what_run_takes(wf):
    plan, run = wf["jobs"]["plan"], wf["jobs"]["run"]
    step = next(s for s in plan["steps"] if s.get("id") == "matrix")
    assert ".venv/bin/python -m orchestrator matrix" in step["run"] and '--github-output "$GITHUB_OUTPUT"' in step["run"]
    for key in ("matrix", "target", "kind", "baseline"):  # the lines `testbed matrix --github-output` writes
        assert plan["outputs"][key] == f"${{{{ steps.matrix.outputs.{key} }}}}"
    assert run["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert run["strategy"]["fail-fast"] is False


def test_every_matrix_key_the_workflow_uses_is_in_every_entry(wf, default_matrix):
    expressions = re.findall(r"\$\{\{(.*?)\}\}", json.dumps(wf), flags=re.S)  # the parsed file: no comments
    used = {k for e in expressions for k in re.findall(r"(?<![\w.-])matrix\.(\w+)", e)}  # not steps.matrix.x
    assert {"name", "scenario", "variant", "images", "repeat"} <= used
    entries = default_matrix["include"]
    assert entries
    for entry in entries:
        assert used <= set(entry), f"{entry} lacks {sorted(used - set(entry))}"


def test_run_builds_its_variant_runs_its_scenario_and_keeps_its_bundle(wf, default_matrix):
    steps = wf["jobs"]["run"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "make testbed" in runs
    assert '.venv/bin/python -m orchestrator images --variant "$IMAGES"' in runs
    assert '.venv/bin/python -m orchestrator run "$SCENARIO"' in runs
    envs = {k: v for s in steps for k, v in (s.get("env") or {}).items()}
    assert envs["IMAGES"] == "${{ matrix.images }}" and envs["SCENARIO"] == "${{ matrix.scenario }}"
    # every value `images` takes is one `testbed images --variant` accepts
    for value in {e["images"] for e in default_matrix["include"]}:
        assert cli.build_parser().parse_args(["images", "--variant", value]).variant == value
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")
                  and s["with"]["name"].startswith("bundle-"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "results/*/*.tar.gz"
    download = next(s for s in wf["jobs"]["compare"]["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    assert download["with"]["merge-multiple"] is True
    names = [upload["with"]["name"].replace("${{ matrix.name }}", e["name"]) for e in default_matrix["include"]]
    assert len(set(names)) == len(names)  # artifact names are unique in a workflow run
    assert all(fnmatch.fnmatch(n, download["with"]["pattern"]) for n in names)


def hash_patterns(expr):
    return re.findall(r"'([^']+)'", expr.split("hashFiles(", 1)[1]) if "hashFiles(" in expr else []


def matched(patterns):
    return {p for pat in patterns for p in glob.glob(str(ROOT / pat), recursive=True) if not p.endswith("/")}


def test_cache_keys_hash_the_inputs_of_their_variant(wf):
    cache = next(s for s in wf["jobs"]["run"]["steps"] if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == "images/cache"
    key = cache["with"]["key"]
    natsume_expr, stock_expr = key.split("||")
    natsume, stock = hash_patterns(natsume_expr), hash_patterns(stock_expr)
    for pat in natsume + stock:
        assert glob.glob(str(ROOT / pat), recursive=True), f"hashFiles('{pat}') matches no file"
    patches = ROOT / "hypervisor_patch"
    stock_patches = {str(p) for p in matched(stock) if p.startswith(str(patches))}
    assert stock_patches == {str(p) for p in (*images.xen_patches("stock"), patches / "xen.config",
                                              patches / "series-stock")}
    natsume_patches = {str(p) for p in matched(natsume) if p.startswith(str(patches))}
    assert {str(p) for p in images.xen_patches("natsume")} <= natsume_patches
    for pats in (natsume, stock):  # what every variant's images are made of
        got = matched(pats)
        assert str(ROOT / "images" / "pins.env") in got and str(ROOT / "images" / "lib.sh") in got
        assert all(str(ROOT / "guest_agents" / n) in got for n in ("guest-init.sh", "rtagent.sh", "tsccal.c"))


def test_compare_writes_the_report_to_the_summary_and_keeps_it(wf):
    steps = wf["jobs"]["compare"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "-m orchestrator compare" in runs and '--baseline "$BASELINE"' in runs and '--out "comparison/' in runs
    env = next(s["env"] for s in steps if "-m orchestrator compare" in s.get("run", ""))
    assert env["BASELINE"] == "${{ needs.plan.outputs.baseline }}"
    assert '"$GITHUB_STEP_SUMMARY"' in runs and "comparison/*/*/report.md" in runs
    assert any(s.get("uses", "").startswith("actions/upload-artifact") and s["with"]["path"] == "comparison/*/*.tar.gz"
               for s in steps)


def test_compare_step_matches_the_compare_command():
    """The options the compare step passes are those `testbed compare` takes."""
    parser = cli.build_parser()
    try:
        parser.parse_args(["compare", "a.tar.gz"])
    except SystemExit:
        pytest.skip("`testbed compare` (orchestrator/bundles.py) is not in yet")
    args = parser.parse_args(["compare", "a.tar.gz", "b.tar.gz", "--baseline", "paper-stock",
                                          "--name", "stock-vs-natsume", "--out", "comparison"])
    assert args.bundles == ["a.tar.gz", "b.tar.gz"] and args.out == "comparison" and args.baseline == "paper-stock"


def test_test_job_runs_make_test(wf):
    assert any(s.get("run") == "make test" for s in wf["jobs"]["test"]["steps"])


def test_default_target_of_the_workflow_is_a_comparison():
    """Without an input the workflow plans the file's default_scenario: a comparison, so `compare` runs."""
    assert isinstance(scenario.load_target(ROOT / "testbed.yaml"), scenario.Comparison)
