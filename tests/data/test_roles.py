"""Class and stain roles: one place, built into HPA, declared in classes.txt (issue 23)."""

from __future__ import annotations

import numpy as np
import pytest
from la_testutils import write_image

from labelaudit.core.errors import DatasetError
from labelaudit.data.layouts import load_dataset
from labelaudit.data.roles import (
    Roles,
    conflicting_rows,
    describe_conflict,
    exclusive_classes,
    exclusive_indices,
    resolve_exclusive,
    roles_from_info,
)


def test_hpa2021_has_negative_exclusive_and_green_as_the_target(make_hpa):
    ds = load_dataset(make_hpa(n=4))
    roles = ds.roles
    assert roles.exclusive == ("Negative",)
    assert roles.target_channel == "green"
    assert roles.reference_channels == ("red", "blue", "yellow")


def test_roles_from_run_info_recorded_and_for_older_runs():
    info = {
        "layout": "hpa2021",
        "class_names": ["Cytosol", "Negative"],
        "channels": ["red", "green", "blue", "yellow"],
        "protein_channel": "green",
    }
    assert exclusive_classes(info) == ["Negative"]  # an older run: the layout's built-in
    recorded = {**info, "roles": Roles((), "green", ("red",)).to_info()}
    assert exclusive_classes(recorded) == []  # what the run recorded wins
    generic = {"layout": "generic", "class_names": ["a", "bg"], "channels": ["gray"]}
    assert roles_from_info(generic) == Roles((), None, ("gray",))
    assert "exclusive classes (never combined with another): none" in Roles().describe()


def _generic(tmp_path, classes_txt: str, labels: list[str]):
    root = tmp_path / "gen"
    for i in range(len(labels)):
        write_image(root / "img" / f"{i}.png", np.full((8, 8, 3), i, dtype=np.uint8))
    (root / "classes.txt").write_text(classes_txt)
    rows = [f"img/{i}.png,{lab}" for i, lab in enumerate(labels)]
    (root / "labels.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")
    return root


def test_generic_dataset_declares_exclusive_classes_in_classes_txt(tmp_path):
    root = _generic(tmp_path, "cat\ndog\nbackground *exclusive\n", ["cat", "background"])
    ds = load_dataset(root)
    assert ds.class_names == ["cat", "dog", "background"]
    assert ds.exclusive_classes == ("background",)
    assert ds.roles.target_channel == "green"  # RGB: green, as before


def test_a_marker_without_a_name_is_a_dataset_error(tmp_path):
    root = _generic(tmp_path, "cat\n*exclusive\n", ["cat"])
    with pytest.raises(DatasetError, match=r"classes.txt.*line 2"):
        load_dataset(root)


def test_conflicts_are_found_and_resolved_to_the_side_the_scores_support():
    labels = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=bool)
    scores = np.array([[0.9, 0.1, 0.2], [0.9, 0.8, 0.1], [0.1, 0.1, 0.9], [0.1, 0.0, 0.7]])
    idx = exclusive_indices(["Cytosol", "Nucleoplasm", "Negative"], ["Negative"])
    assert idx.tolist() == [2]
    assert conflicting_rows(labels, idx).tolist() == [True, False, False, True]
    out = resolve_exclusive(labels, scores, idx)
    assert out.tolist() == [
        [True, False, False],  # Cytosol 0.9 beats Negative 0.2
        [True, True, False],  # no conflict: untouched
        [False, False, True],
        [False, False, True],  # Negative 0.7 beats Cytosol 0.1
    ]
    assert not conflicting_rows(out, idx).any()
    assert labels[0].tolist() == [True, False, True]  # a copy
    text = describe_conflict(["Cytosol", "Nucleoplasm", "Negative"], labels[0], idx)
    assert text == "Negative given with Cytosol (Negative is never combined with another class)"
    assert not conflicting_rows(labels, []).any()
