"""A results folder that cannot take a bundle is refused before anything is written or booted."""

import os
from types import SimpleNamespace

import pytest

from orchestrator import bundle
from orchestrator.errors import ResultsFolderError


def test_a_full_folder_is_refused_with_its_free_space(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda _p: SimpleNamespace(f_bavail=10, f_frsize=4096))
    with pytest.raises(ResultsFolderError, match=r"0\.0 MB free, a run needs 200 MB"):
        bundle.check_results_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsFolderError, match="results folder .*file/results"):
        bundle.check_results_folder(tmp_path / "file" / "results")


def test_a_folder_with_room_passes_and_is_created(tmp_path):
    bundle.check_results_folder(tmp_path / "new", need_mb=1)
    assert (tmp_path / "new").is_dir()
