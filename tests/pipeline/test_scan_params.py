"""The scan's own parameters are checked before anything is read or written."""

from __future__ import annotations

import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.pipeline.scan import check_scan_params


def test_good_level_options_pass(tmp_path):
    check_scan_params("field", None, None)
    check_scan_params("cell", tmp_path, 64)


@pytest.mark.parametrize(
    ("level", "masks", "cell_size", "message"),
    [
        ("nuclei", None, None, "level must be one of field, cell, got 'nuclei'"),
        ("field", None, 64, "--masks and --cell-size need --level cell"),
        ("cell", "/nonexistent/masks", None, "the masks directory /nonexistent/masks does not"),
        ("cell", None, 8, "cell_size must be between 16 and 4096 pixels, got 8"),
        ("cell", None, "64", "cell_size must be an integer, got '64'"),
    ],
)
def test_bad_level_options_are_one_line_errors(level, masks, cell_size, message):
    with pytest.raises(SettingsError) as err:
        check_scan_params(level, masks, cell_size)
    assert str(err.value).startswith(message)


def test_cell_level_is_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SettingsError, match="does not run under torchrun"):
        check_scan_params("cell", None, None)
    check_scan_params("field", None, None)
