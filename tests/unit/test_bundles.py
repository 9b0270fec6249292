"""Bundle tools: show, reanalyze and compare on bundles as folders and as downloaded tarballs; damaged,
older-layout and hostile archives get a clear error (exit 2, no traceback) and extract nothing."""

import hashlib
import io
import json
import subprocess
import sys
import tarfile

import pytest

from orchestrator import analysis, bundle, bundles, cli
from tests.conftest import ROOT
from tests.unit import bundle_data as data


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two runs as CI would upload them: stock at commit A, a faster natsume at commit B (tarballs too)."""
    results = tmp_path_factory.mktemp("results")
    stock = data.make_run(results)
    fast = data.make_run(results, variant="natsume", commit=data.COMMIT_B, faster=1_000)
    return {"stock": stock, "natsume": fast, "results": results}


def cli_run(capsys, *args):
    code = cli.main(list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def newest(folder, prefix):
    found = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix))
    assert found, f"no {prefix}* in {folder}"
    return found[-1]


# ------------------------------------------------------------------ show

@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_show_summarises_a_run_bundle(made, capsys, form):
    folder, tar = made["stock"]
    code, out, err = cli_run(capsys, "show", folder if form == "folder" else tar)
    assert code == 0, err
    assert "smoke-stock" in out and "Passed: every stage passed" in out
    assert "variant   stock; timing instructions; accelerator tcg" in out
    assert "produced  git " + data.COMMIT_A in out
    assert "latency   (instructions)" in out
    assert "          n    min   mean  median     p90     p99    p999     max  stddev\n" in out
    assert "          4  4,800  8,400   8,400  11,280  11,928  11,993  12,000   3,098\n" in out
    assert "paths     running 3, woken 1, coalesced 0, no_notify 0, unmatched 0; path records 4" in out
    assert "check     trace_complete" in out and "FAILED" not in out
    assert "samples.csv (4 rows)" in out and "raw/: 7 files" in out
    assert ("archive, read from a temporary copy" in out) == (form == "tarball")


def test_show_a_failed_run_names_the_stage(tmp_path, capsys):
    folder, _ = data.make_run(tmp_path, pack=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(exit_code=2, status="failed", failed_stage="rt_guest", error="stage 'rt_guest' failed: no login\n...")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = cli_run(capsys, "show", folder)
    assert code == 0
    assert "Failed at stage `rt_guest` (exit 2): stage 'rt_guest' failed: no login" in out
    assert "failed at stage rt_guest" in out


def test_show_of_an_older_layout_shows_what_is_there(tmp_path, capsys):
    old = data.make_old_layout(tmp_path)
    code, out, err = cli_run(capsys, "show", old)
    assert code == 0, err
    assert "timing host" in out and "latency   (µs, host clock)" in out


# ------------------------------------------------------------------ reanalyze

@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_reanalyze_recomputes_into_a_new_bundle_and_records_both_versions(made, tmp_path, capsys, form):
    folder, tar = made["stock"]
    before = tree_digest(folder), tar.read_bytes()
    code, out, err = cli_run(capsys, "reanalyze", folder if form == "folder" else tar, "--out", tmp_path)
    assert code == 0, err
    new = newest(tmp_path, folder.name + "-reanalyzed-")
    assert (tmp_path / f"{new.name}.tar.gz").exists()
    assert (tree_digest(folder), tar.read_bytes()) == before  # the original is never touched
    # the same raw records through the same code: the same samples
    assert (new / "samples.csv").read_text() == (folder / "samples.csv").read_text()
    for name in ("summary.json", "latency-histogram.png", "latency-cdf.png", "junit.xml", "report.html", "report.md",
                 "reanalysis.json", "raw/xentrace.bin", "logs/console.log", "config/testbed.yaml"):
        assert (new / name).exists(), name
    manifest = json.loads((new / "manifest.json").read_text())
    r = manifest["reanalysis"]
    assert r["producer"] == {"commit": data.COMMIT_A, "dirty": False} and manifest["git"]["commit"] == data.COMMIT_A
    assert r["code"] == bundle.git_state()  # this checkout: commit and dirty flag
    assert r["original"]["run_id"] == folder.name and manifest["run_id"] == new.name
    assert r["inputs"] == {"tsc_khz": "logs/xl-info.txt", "rt_domid": "xl list",
                           "xen_irq_table": "raw/sysinfo-before/xen-irqs.txt",
                           "guest_irq_mode": "logs/guest-rt-console.log", "guest_irqs": "logs/guest-rt-console.log",
                           "calibration": "logs/guest-rt-console.log", "traffic": "raw/traffic.json"}
    assert r["changes"] == {} and manifest["status"] == "passed" and manifest["exit_code"] == 0
    stages = json.loads((new / "stages.json").read_text())
    assert stages[-1]["name"] == "reanalyze" and stages[-1]["status"] == "passed"
    assert "This bundle is a reanalysis of " + folder.name in (new / "reproducer.sh").read_text()
    assert "reanalyzing " in out and folder.name in out and "exit code: 0" in out


def test_reanalysis_reports_what_changed_and_recomputes_the_checks(tmp_path, capsys):
    folder, _ = data.make_run(tmp_path / "in", lost=True)  # the test data's LOST line: trace_complete fails
    summary = json.loads((folder / "summary.json").read_text())
    summary["paired"] = 99  # as if an older analysis had paired differently
    (folder / "summary.json").write_text(json.dumps(summary))
    code, out, _ = cli_run(capsys, "reanalyze", folder, "--out", tmp_path / "out")
    assert code == 1  # the measurement's own checks, recomputed
    manifest = json.loads((newest(tmp_path / "out", "smoke-stock") / "manifest.json").read_text())
    assert manifest["reanalysis"]["changes"]["paired"] == [99, 4]
    assert manifest["failed_checks"] == ["trace_complete"] and manifest["status"] == "measurement failed"
    assert "paired 99 -> 4" in out


def test_reanalyze_a_natsume_run_reads_its_fast_path_counters(made, tmp_path):
    folder, _ = made["natsume"]
    with bundles.opened(folder) as view:
        final, _, code = bundles.reanalyze(view, tmp_path, pack=False)
    summary = json.loads((final / "summary.json").read_text())
    assert code == 0 and summary["natsume_fast_path_irqs"] == 5
    assert json.loads((final / "reanalysis.json").read_text())["inputs"]["natsume_counters"] == "raw/natsume-counters.txt"


def test_a_sysinfo_table_that_disagrees_with_the_measurement_gives_way_to_it(tmp_path):
    """The sysinfo copy of Xen's IRQ table is a later dump cut to 80 lines; summary.json holds the IRQs
    measure found. A disagreement (here: another pirq) means the summary's are used."""
    folder, _ = data.make_run(tmp_path, pack=False)
    table = folder / "raw" / "sysinfo-before" / "xen-irqs.txt"
    table.write_text(table.read_text().replace("d1:151(", "d1:152("))
    with bundles.opened(folder) as view:
        final, _, code = bundles.reanalyze(view, tmp_path / "out", pack=False)
    r = json.loads((final / "reanalysis.json").read_text())
    assert r["inputs"]["xen_irq_table"] == "summary.json (xen_irqs_of_rt_guest)" and code == 0
    assert json.loads((final / "summary.json").read_text())["xen_irqs_of_rt_guest"][0]["pirq"] == 151


def test_reanalyze_upgrades_an_older_layout(tmp_path, capsys):
    old = data.make_old_layout(tmp_path / "in")
    code, _, err = cli_run(capsys, "compare", old, old, "--out", tmp_path / "out")
    assert code == 2 and "the layout before instruction timing" in err and "testbed reanalyze" in err
    assert "samples.csv" in err and str(old) in err
    code, _, err = cli_run(capsys, "reanalyze", old, "--out", tmp_path / "out")
    assert code == 0, err
    new = newest(tmp_path / "out", old.name)
    rows = analysis.read_samples_csv(new / "samples.csv")  # the current layout
    assert len(rows) == 4 and {b.path for _, b in rows} == {"running", "woken"}
    r = json.loads((new / "reanalysis.json").read_text())
    assert r["scenario_fields_filled"] == ["machine.timing", "measurement.guest_upcall_stamp", "measurement.stamping"]
    assert json.loads((new / "summary.json").read_text())["timing"] == "host"  # what no timing field meant


def test_reanalyze_needs_raw_records(tmp_path, capsys):
    folder, _ = data.make_run(tmp_path, pack=False)
    (folder / "raw" / "xentrace.bin").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(failed_stage="measure", exit_code=2)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli_run(capsys, "reanalyze", folder, "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in err
    assert f"{folder}: raw/xentrace.bin missing (the run stopped at stage measure): nothing to reanalyze" in " ".join(
        err.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no partial bundle left


def test_reanalyze_a_damaged_trace_is_a_clear_error(tmp_path, capsys):
    folder, _ = data.make_run(tmp_path, pack=False)
    (folder / "raw" / "xentrace.bin").write_bytes(b"\x00" * 7 + b"not a trace")
    code, _, err = cli_run(capsys, "reanalyze", folder, "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in err and "xentrace.bin" in err
    assert not any((tmp_path / "out").iterdir())


def test_reanalyze_a_scenario_the_current_code_cannot_evaluate(tmp_path, capsys):
    folder, _ = data.make_run(tmp_path, pack=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["scenario"]["measurement"]["min_samples"]
    manifest["scenario"]["hypervisor"]["variant"] = 3
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli_run(capsys, "reanalyze", folder, "--out", tmp_path / "out")
    assert code == 2
    text = " ".join(err.split())
    assert "manifest.json: the scenario cannot be evaluated by the current code" in text
    assert "hypervisor.variant is '3', not a str" in text and "measurement.min_samples is missing" in text


# ------------------------------------------------------------------ compare

def test_compare_two_ci_tarballs(made, tmp_path, capsys):
    (stock, stock_tar), (nat, nat_tar) = made["stock"], made["natsume"]
    code, out, err = cli_run(capsys, "compare", stock_tar, nat_tar, "--out", tmp_path)
    assert code == 0, err
    cmp = newest(tmp_path, "compare-")
    assert (tmp_path / f"{cmp.name}.tar.gz").exists()
    assert sorted(p.name for p in (cmp / "runs").iterdir()) == sorted([stock.name, nat.name])
    text = (cmp / "report.md").read_text()
    assert "## Verdict" in text and "## Figure 2 as a table" in text and "## Sources" in text
    assert "| median | 8,400 | 7,400 | +1,000 | +11.9 % |" in text
    assert "not from one interleaved invocation" in text and "in this one invocation" not in text
    assert "Reproduce: `sh reproducer.sh`" in text and "make testbed run SCENARIO=compare" not in text
    assert f"| smoke-natsume | runs/{nat.name} | smoke-natsume | {data.COMMIT_B} | – | 0 |" in text
    for png in ("latency-cdf.png", "latency-box.png", "breakdown.png", "report.html"):
        assert (cmp / png).exists(), png
    comp = json.loads((cmp / "comparison.json").read_text())
    assert comp["baseline"] == "smoke-stock" and set(comp["verdicts"]) == {"smoke-natsume"}
    manifest = json.loads((cmp / "manifest.json").read_text())
    assert manifest["comparison"] == "compare" and manifest["compared_by"] == bundle.git_state()
    assert [s["sha256"] for s in manifest["sources"]] == [hashlib.sha256(t.read_bytes()).hexdigest()
                                                          for t in (stock_tar, nat_tar)]
    assert [r["scenario"] for r in manifest["runs"]] == ["smoke-stock", "smoke-natsume"]
    assert "--baseline smoke-stock --group scenario --name compare" in (cmp / "reproducer.sh").read_text()
    assert "verdict: no difference detectable between smoke-natsume and smoke-stock" in out
    assert not (cmp / "raw").exists() and not (cmp / "logs").exists()  # no empty run folders in a comparison
    for run in (cmp / "runs").iterdir():
        assert (run / "report.html").exists()  # the links of the comparison's page lead somewhere


def test_compare_baseline_and_a_comparison_bundle_as_input(made, tmp_path, capsys):
    (stock, stock_tar), (nat, _) = made["stock"], made["natsume"]
    code, _, err = cli_run(capsys, "compare", stock, nat, "--baseline", "smoke-natsume", "--name", "ci-pair",
                           "--out", tmp_path / "a")
    assert code == 0, err
    first = newest(tmp_path / "a", "ci-pair-")
    assert json.loads((first / "comparison.json").read_text())["baseline"] == "smoke-natsume"
    # the comparison's archive contributes its runs/: the same two runs again, and the stock one once more
    code, _, err = cli_run(capsys, "compare", tmp_path / "a" / f"{first.name}.tar.gz", stock_tar, "--out", tmp_path / "b")
    assert code == 0, err
    again = newest(tmp_path / "b", "compare-")
    assert len(list((again / "runs").iterdir())) == 3
    assert "| smoke-stock | 2 |" in (again / "report.md").read_text()  # pooled: same scenario, same commit


def test_compare_one_scenario_from_two_commits_labels_the_commits(tmp_path, capsys):
    a, _ = data.make_run(tmp_path, pack=False)
    b, _ = data.make_run(tmp_path, commit=data.COMMIT_B, faster=500, pack=False)
    code, _, err = cli_run(capsys, "compare", a, b, "--out", tmp_path / "out")
    assert code == 0, err
    comp = json.loads((newest(tmp_path / "out", "compare-") / "comparison.json").read_text())
    assert comp["baseline"] == "smoke-stock@0123456789" and set(comp["verdicts"]) == {"smoke-stock@fedcba9876"}
    code, _, err = cli_run(capsys, "compare", a, b, "--baseline", "smoke-stock", "--out", tmp_path / "out")
    assert code == 2 and "matches smoke-stock@0123456789, smoke-stock@fedcba9876; name one" in err


def test_compare_one_scenario_from_one_commit(tmp_path, capsys):
    a, _ = data.make_run(tmp_path, pack=False)
    b, _ = data.make_run(tmp_path, faster=500, pack=False)
    code, _, err = cli_run(capsys, "compare", a, b, "--out", tmp_path / "out")
    assert code == 2 and "nothing to compare" in err and "--group input" in err
    code, _, err = cli_run(capsys, "compare", a, b, "--group", "input", "--out", tmp_path / "out")
    assert code == 0, err
    comp = json.loads((newest(tmp_path / "out", "compare-") / "comparison.json").read_text())
    assert comp["baseline"] == "smoke-stock@0123456789#input1"
    code, _, err = cli_run(capsys, "compare", a, b, "--group", "input", "--baseline", "nope", "--out", tmp_path / "o")
    assert code == 2 and "the groups are smoke-stock@0123456789#input1, smoke-stock@0123456789#input2" in err


def test_reanalyze_a_comparison_bundle_rebuilds_its_report(made, tmp_path, capsys):
    code, _, _ = cli_run(capsys, "compare", made["stock"][0], made["natsume"][0], "--name", "pair", "--out", tmp_path)
    cmp = newest(tmp_path, "pair-")
    code, _, err = cli_run(capsys, "reanalyze", cmp, "--out", tmp_path / "re")
    assert code == 0, err
    new = newest(tmp_path / "re", "pair-")
    assert len(list((new / "runs").iterdir())) == 2
    assert all("reanalysis" in json.loads((r / "manifest.json").read_text()) for r in (new / "runs").iterdir())
    comp = json.loads((new / "comparison.json").read_text())
    assert comp["baseline"] == "smoke-stock" and set(comp["verdicts"]) == {"smoke-natsume"}
    assert json.loads((new / "manifest.json").read_text())["reanalysis"]["from"] == cmp.name


# ------------------------------------------------------------------ damaged, older and hostile bundles

def _tar_with(path, members):
    """members: [(TarInfo, bytes or None)] -> a .tar.gz at path."""
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


def _info(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def _good_members(top="smoke-stock-20261201T000000Z"):
    manifest = json.dumps({"scenario": {"name": "smoke-stock"}, "exit_code": 0}).encode()
    return [(_info(top, tarfile.DIRTYPE), None), (_info(f"{top}/manifest.json"), manifest)]


@pytest.mark.parametrize("member, why", [
    ((_info("smoke-stock-20261201T000000Z/../../evil"), b"x"), "a path that leaves the bundle (`..`)"),
    ((_info("/tmp/evil-absolute"), b"x"), "an absolute path"),
    ((_info("smoke-stock-20261201T000000Z/passwd", tarfile.SYMTYPE, "/etc/passwd"), None), "a link to an absolute path"),
    ((_info("smoke-stock-20261201T000000Z/up", tarfile.SYMTYPE, "../../../etc"), None), "a link pointing outside"),
    ((_info("smoke-stock-20261201T000000Z/hard", tarfile.LNKTYPE, "etc/passwd"), None), "a link pointing outside"),
    ((_info("smoke-stock-20261201T000000Z/null", tarfile.CHRTYPE), None), "a device, fifo or other special file"),
    ((_info("smoke-stock-20261201T000000Z/fifo", tarfile.FIFOTYPE), None), "a device, fifo or other special file"),
    ((_info("other-folder/x"), b"x"), "more than one top folder"),
])
def test_hostile_archives_are_refused_before_anything_is_extracted(tmp_path, capsys, monkeypatch, member, why):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(bundles.tempfile, "mkdtemp", lambda prefix="": str(scratch))
    tar = _tar_with(tmp_path / "hostile.tar.gz", _good_members() + [member])
    code, _, err = cli_run(capsys, "show", tar)
    assert code == 2 and "Traceback" not in err
    assert str(tar) in err and why in " ".join(err.split())
    assert not scratch.exists() or not any(scratch.iterdir())  # refused before extraction, cleaned up
    assert not (tmp_path / "evil").exists() and not __import__("pathlib").Path("/tmp/evil-absolute").exists()


def test_a_link_inside_the_bundle_is_fine(tmp_path, capsys):
    top = "smoke-stock-20261201T000000Z"
    tar = _tar_with(tmp_path / "ok.tar.gz", _good_members(top) + [
        (_info(f"{top}/logs", tarfile.DIRTYPE), None), (_info(f"{top}/logs/a.txt"), b"x"),
        (_info(f"{top}/logs/b.txt", tarfile.SYMTYPE, "a.txt"), None)])
    code, out, err = cli_run(capsys, "show", tar)
    assert code == 0, err
    assert "logs/: 2 files" in out


def test_an_archive_that_unpacks_too_large_is_refused(made, capsys, monkeypatch):
    monkeypatch.setattr(bundles, "MAX_ARCHIVE_BYTES", 10_000)
    code, _, err = cli_run(capsys, "show", made["stock"][1])
    assert code == 2 and "unpacks to more than 10000 bytes: refused" in err


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
def test_a_damaged_tarball_is_a_clear_error(made, tmp_path, damage):
    data_ = made["stock"][1].read_bytes()
    bad = tmp_path / f"{damage}.tar.gz"
    if damage == "truncated":
        bad.write_bytes(data_[: len(data_) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"this is not an archive\n" * 100)
    else:
        bad.write_bytes(data_[:200] + bytes(b ^ 0xFF for b in data_[200:400]) + data_[400:])
    res = subprocess.run([sys.executable, "-m", "orchestrator", "show", str(bad)], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(bad) in " ".join(res.stderr.split()) and "damaged or not a bundle archive" in res.stderr


def test_an_archive_without_a_manifest_names_the_missing_file(tmp_path, capsys):
    top = "smoke-stock-20261201T000000Z"
    tar = _tar_with(tmp_path / "x.tar.gz", [(_info(top, tarfile.DIRTYPE), None), (_info(f"{top}/summary.json"), b"{}")])
    code, _, err = cli_run(capsys, "show", tar)
    assert code == 2 and f"{tar}:{top}/manifest.json: missing: not a testbed result bundle" in " ".join(err.split())


@pytest.mark.parametrize("manifest, why", [
    ("{not json", "manifest.json: not valid JSON"),
    ("[1, 2]", "manifest.json: not a JSON object"),
    (json.dumps({"status": "passed"}), "has neither a scenario nor a comparison"),
    (json.dumps({"scenario": {"name": "<script>"}}), "scenario name '<script>' is not a testbed name"),
    (json.dumps({"scenario": {"name": "x"}, "git": {"commit": "$(rm -rf /)"}}), "is not a commit id"),
    (json.dumps({"comparison": "pair"}), "runs: missing: a comparison bundle keeps each run's bundle in runs/"),
])
def test_foreign_or_damaged_manifests(tmp_path, capsys, manifest, why):
    folder = tmp_path / "x-20261201T000000Z"
    folder.mkdir()
    (folder / "manifest.json").write_text(manifest)
    code, _, err = cli_run(capsys, "show", folder)
    assert code == 2 and why in " ".join(err.split()) and "Traceback" not in err


def test_compare_refuses_a_bundle_with_a_foreign_samples_header(made, tmp_path, capsys):
    folder, _ = data.make_run(tmp_path, pack=False)
    (folder / "samples.csv").write_text("a,b,c\n1,2,3\n")
    code, _, err = cli_run(capsys, "compare", folder, made["natsume"][0], "--out", tmp_path / "out")
    assert code == 2 and "samples.csv:1: header 'a,b,c' is not sequence,cpu" in err


def test_missing_bundle_and_bad_name(made, tmp_path, capsys):
    code, _, err = cli_run(capsys, "show", tmp_path / "nope.tar.gz")
    assert code == 2 and "no such bundle" in err
    code, _, err = cli_run(capsys, "compare", made["stock"][0], made["natsume"][0], "--name", "Bad Name!",
                           "--out", tmp_path)
    assert code == 2 and "--name 'Bad Name!': a name is lower-case letters" in err
    assert not any(tmp_path.iterdir())
