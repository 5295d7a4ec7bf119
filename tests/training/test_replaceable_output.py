"""The checks commands make before any work: an existing output file may be replaced, a folder in its place
may not."""

from __future__ import annotations

import os

import pytest

from glassformer.training.checks import check_replaceable


def test_an_existing_analysis_file_can_be_replaced(tmp_path):
    # A second analysis of a model directory adds to its analysis.json: the file existing must not stop it.
    target = tmp_path / "analysis.json"
    target.write_text("{}")
    check_replaceable(target, "analysis.json")
    check_replaceable(tmp_path / "new.json", "new.json")


def test_a_folder_in_place_of_the_file_is_refused(tmp_path):
    (tmp_path / "analysis.json").mkdir()
    with pytest.raises(IsADirectoryError, match="analysis.json .* is a folder, not a file"):
        check_replaceable(tmp_path / "analysis.json", "analysis.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_refused(tmp_path):
    target = tmp_path / "analysis.json"
    target.write_text("{}")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            check_replaceable(target, "analysis.json")
    finally:
        tmp_path.chmod(0o700)
