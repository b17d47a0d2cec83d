"""The layout registry: every layout's knowledge in one place, used by clean and predict."""

from __future__ import annotations

import pytest

from labelaudit.core.errors import DatasetError
from labelaudit.data import layouts as L
from labelaudit.synth.simulate import synthesize


def test_registry_lists_every_layout_and_refuses_unknown_names():
    assert tuple(L.REGISTRY) == ("hpa2021", "hpa2018", "generic")
    assert L.get_layout("hpa2018").label_column == "Target"
    assert L.get_layout("hpa2018").separator == " "
    with pytest.raises(DatasetError, match="unknown layout 'nope'; choose one of hpa2021"):
        L.get_layout("nope")
    with pytest.raises(DatasetError, match="unknown layout 'nope'"):
        L.load_dataset(".", "nope")


def test_write_label_file_keeps_other_columns_and_rewrites_labels(tmp_path):
    synthesize(tmp_path / "d", n=6, size=32, seed=1)
    ds = L.load_dataset(tmp_path / "d")
    text = ds.label_file.read_text().splitlines()
    lines = sorted(ds.rows)
    n = L.write_label_file(ds, tmp_path / "out.csv", {lines[0]: None, lines[2]: "3|4"})
    out = (tmp_path / "out.csv").read_text().splitlines()
    assert n == 2 and out[0] == text[0]
    assert out[1] == text[lines[0] - 1]  # unchanged row, as written
    first, *_ = text[lines[2] - 1].split(",")
    assert out[2] == f"{first},3|4"


def test_find_fields_names_channels_and_refuses_incomplete_fields(tmp_path):
    synthesize(tmp_path / "d", n=4, size=32, seed=1)
    channels, fields = L.find_fields(tmp_path / "d" / "train")
    assert channels == ("red", "green", "blue", "yellow") and len(fields) == 4
    assert all(p.name.startswith(i) for i, paths in fields.items() for p in paths)
    assert L.find_fields(tmp_path) is None  # no field files there
    victim = next(iter(fields.values()))[2]
    victim.unlink()
    with pytest.raises(DatasetError, match="incomplete field: missing"):
        L.find_fields(tmp_path / "d" / "train")
