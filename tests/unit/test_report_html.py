"""report.html: self-contained (no script, nothing loaded from outside, plots as data: URIs), the verdict
first; rendered in a real browser (headless Chromium): not blank, no console message."""

import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from orchestrator import bundles, cli, report_html
from tests.unit import bundle_data as data


@pytest.fixture(scope="module")
def run_bundle(tmp_path_factory):
    folder, _ = data.make_run(tmp_path_factory.mktemp("r"), pack=False)  # Bundle.finish writes report.html
    return folder


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    results = tmp_path_factory.mktemp("c")
    a, _ = data.make_run(results, pack=False)
    b, _ = data.make_run(results, variant="natsume", commit=data.COMMIT_B, faster=1_000, pack=False)
    with bundles.opened(a) as va, bundles.opened(b) as vb:
        final, _, _ = bundles.compare([va, vb], results / "out", pack=False)
    return final


def _external_references(page):
    """Every src/href that is neither a data: URI, an in-page anchor nor a relative bundle file."""
    refs = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    return [r for r in refs if not (r.startswith("data:image/png;base64,") or r.startswith("#")
                                    or re.match(r"^runs/[\w.+@-]+/report\.html$", r))]


def test_run_report_is_self_contained_with_the_verdict_first(run_bundle):
    page = (run_bundle / "report.html").read_text()
    assert f'content="{report_html.CSP}"' in page and "<script" not in page
    assert _external_references(page) == []
    assert page.count("data:image/png;base64,") == 3  # histogram, CDF, breakdown bars
    order = [page.index(x) for x in ('class="verdict passed"', "<h2>Checks</h2>", "<h2>Interrupt latency",
                                     "<h2>Breakdown of the path</h2>", "<h2>Traffic</h2>", "<h2>Stages</h2>",
                                     "<h2>Manifest</h2>", "<h2>Reproducer</h2>")]
    assert order == sorted(order)
    assert f"<td>produced by (git)</td><td>{data.COMMIT_A}</td>" in page
    assert "git checkout " + data.COMMIT_A in page  # the reproducer, inline
    md = (run_bundle / "report.md").read_text()
    assert md.startswith("# smoke-stock: run ") and "![breakdown](breakdown.png)" in md
    assert (run_bundle / "breakdown.png").exists()


def test_comparison_report_puts_the_verdicts_in_the_box_and_links_its_runs(comparison):
    page = (comparison / "report.html").read_text()
    box = page[page.index('class="verdict'):page.index("</div>")]
    assert "no difference detectable between smoke-natsume and smoke-stock" in box
    assert "running path only:" in box
    assert _external_references(page) == []
    assert page.count("data:image/png;base64,") == 3  # CDF, box plot, breakdown
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Figure 2 as a table</h2>") < page.index(
        "<h2>Breakdown of the path") < page.index("<h2>Runs</h2>") < page.index("<h2>Manifest</h2>") < page.index(
        "<h2>Reproducer</h2>")
    for run in (comparison / "runs").iterdir():
        assert f'href="runs/{run.name}/report.html"' in page


def test_markup_in_a_bundle_is_shown_as_text_and_files_outside_are_not_embedded(tmp_path):
    folder = tmp_path / "pair-20261201T000000Z"
    folder.mkdir()
    (folder / "comparison.json").write_text("{}")
    (folder / "manifest.json").write_text(json.dumps({"comparison": "pair", "exit_code": 0}))
    (tmp_path / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n secret")
    (folder / "report.md").write_text("# t\n\n<script>alert(1)</script> <img src=x onerror=alert(2)>\n\n"
                                      "![a](../secret.png) ![b](/etc/passwd) [c](javascript:alert(3)) [d](https://x.example/)\n")
    page = report_html.build_html(folder)
    assert "<script" not in page and "<img src=x" not in page and "&lt;script&gt;alert(1)" in page
    assert "secret" not in page.split("<h2>Manifest")[0].replace("[plot ../secret.png is not in the bundle]", "")
    assert "javascript:" not in page and "https://x.example" not in page.split('href="')[-1]
    assert _external_references(page) == []


def test_a_failing_report_writes_an_error_page_instead_of_raising(tmp_path, monkeypatch):
    folder, _ = data.make_run(tmp_path, pack=False)
    monkeypatch.setattr(report_html, "run_report_markdown", lambda f: 1 / 0)
    page = report_html.write(folder).read_text()
    assert "The report could not be built" in page and "ZeroDivisionError" in page
    with pytest.raises(ZeroDivisionError):
        report_html.write(folder, strict=True)


def test_bundle_finish_packs_report_html_into_a_run_bundle(tmp_path):
    folder, tar = data.make_run(tmp_path)
    assert (folder / "report.html").is_file() and (folder / "report.md").is_file()
    assert not (folder / "logs" / "report-html-error.txt").exists()
    with tarfile.open(tar) as packed:
        assert f"{folder.name}/report.html" in packed.getnames()


def test_a_failing_report_writer_still_leaves_a_finished_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(report_html, "write", lambda folder, strict=False: 1 / 0)
    folder, tar = data.make_run(tmp_path)
    assert tar.exists() and not list(tmp_path.glob(".*.partial"))
    assert json.loads((folder / "manifest.json").read_text())["run_id"] == folder.name
    assert "ZeroDivisionError" in (folder / "logs" / "report-html-error.txt").read_text()
    assert not (folder / "report.html").exists()  # no page rather than a stale one


# ------------------------------------------------------------------ a real browser

def _chromium():
    """Debian's chromium; installed here if missing (images/install-host-deps.sh lists it). Skipped only
    when it cannot be installed."""
    if report_html.chromium_binary():
        return report_html.chromium_binary()
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            subprocess.run(cmd, capture_output=True, env=env, timeout=900)
            if report_html.chromium_binary():
                return report_html.chromium_binary()
    pytest.skip("chromium is not installed and cannot be installed here (apt-get install chromium)")


browser = pytest.mark.browser


@browser
@pytest.mark.parametrize("which", ["run", "comparison"])
def test_report_renders_in_chromium_not_blank_without_console_messages(run_bundle, comparison, tmp_path, which):
    _chromium()
    folder = run_bundle if which == "run" else comparison
    check = report_html.check_in_browser(folder / "report.html", tmp_path / "shot.png", size=(1200, 1600))
    assert (check.width, check.height) == (1200, 1600)
    assert check.console == [] and not check.blank and check.ok, check.problems()
    assert check.variance > 100  # text, tables and plots, not a flat page


@browser
def test_the_browser_check_sees_a_blank_page_and_console_errors(tmp_path):
    _chromium()
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body style='background:#fff'></body></html>")
    check = report_html.check_in_browser(blank, tmp_path / "blank.png", size=(400, 300))
    assert check.blank and not check.ok and "blank" in check.problems()[0]
    noisy = tmp_path / "noisy.html"
    noisy.write_text("<!doctype html><html><head><script>console.error('boom'); missing();</script></head>"
                     "<body><h1>text</h1></body></html>")
    check = report_html.check_in_browser(noisy, tmp_path / "noisy.png", size=(400, 300))
    assert not check.blank and not check.ok
    assert any("boom" in line for line in check.console) and any("Uncaught" in line for line in check.console)
    blocked = tmp_path / "blocked.html"  # our CSP turns any outside load into a console message
    blocked.write_text(f"<!doctype html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                       f"content=\"{report_html.CSP}\"></head><body><h1>x</h1>"
                       "<img src=\"http://127.0.0.1:9/x.png\"></body></html>")
    check = report_html.check_in_browser(blocked, tmp_path / "blocked.png", size=(400, 300))
    assert any("Content Security Policy" in line for line in check.console)


@browser
def test_show_screenshot_keeps_report_png_in_the_bundle_or_beside_the_archive(tmp_path, capsys):
    _chromium()
    folder, tar = data.make_run(tmp_path)
    assert cli.main(["show", str(folder), "--screenshot"]) == 0
    out = capsys.readouterr().out
    assert (folder / "report.html").exists() and (folder / "report.png").exists()
    assert "no console messages" in out and "wrote report.html" not in out  # Bundle.finish wrote it
    assert cli.main(["show", str(tar), "--screenshot"]) == 0
    stem = tar.name.removesuffix(".tar.gz")
    assert (tar.parent / f"{stem}.report.png").exists() and (tar.parent / f"{stem}.report.html").exists()
