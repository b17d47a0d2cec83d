"""Units of the report: thumbnails, the analysis helpers, the template loader."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelaudit.report import analysis as an
from labelaudit.report.figures import esc
from labelaudit.report.loader import template_loader
from labelaudit.report.sections import bench_table, bench_tables
from labelaudit.report.thumbnails import composite, field_images, stretch


def decode(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    assert header in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_stretch_makes_dim_fields_visible() -> None:
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 12, (64, 64)).astype(np.uint8)
    dim[20:30, 20:30] = 40
    out = stretch(dim)
    assert out.max() == 255 and out.dtype == np.uint8
    flat = np.full((8, 8), 3, np.uint8)
    assert stretch(flat).max() == 0  # a constant channel stays dark, noise is not amplified


def test_composite_is_hpa_coloured() -> None:
    field = np.zeros((4, 16, 16), np.uint8)
    field[3, :8] = 200  # yellow only, left half
    field[3, 8:] = 10
    rgb = composite(field, ["red", "green", "blue", "yellow"])
    r, g, b = rgb[0, 0]
    assert r == g > 0 and b == 0  # yellow = red + green


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_data_uris(fmt: str) -> None:
    field = np.random.default_rng(1).integers(0, 255, (4, 48, 48)).astype(np.uint8)
    thumb_uri, tile_uri = field_images(
        field, ["red", "green", "blue", "yellow"], thumb_size=32, detail_size=40, fmt=fmt
    )
    thumb = decode(thumb_uri)
    assert thumb.size == (32, 32) and thumb.mode == "RGB"
    tile = decode(tile_uri)
    assert tile.size == (160, 40) and tile.mode == "L"


def test_class_table_weights() -> None:
    from labelaudit.report.artifacts import RunArtifacts

    given = np.array([[1, 0], [1, 1], [1, 0], [0, 0]], bool)
    art = RunArtifacts(run_dir=None, run={}, ids=list("abcd"), given=given)  # type: ignore[arg-type]
    art.class_names, art.class_tokens = ["A", "B"], ["0", "1"]
    table = an.class_table(art)
    assert table["images"].tolist() == [3, 1]
    assert table["weight"].tolist() == pytest.approx([1 - 3 / 4, 1 - 1 / 4])
    assert an.labels_per_image(given) == {0: 1, 1: 2, 2: 1}
    assert an.cooccurrence(given).tolist() == [[3, 1], [1, 1]]


def test_oof_report_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.random((50, 4)) < 0.4
    p = np.clip(y * 0.6 + rng.random((50, 4)) * 0.5, 0, 1)
    rep = an.oof_report(y, p, ["a", "b", "c", "d"])
    assert rep["averages"]["micro"]["f1"] == pytest.approx(f1_score(y, p >= 0.5, average="micro"))
    assert rep["averages"]["macro"]["f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    assert list(rep["per_class"]["class"]) == ["a", "b", "c", "d"]
    assert "weighted avg" in rep["text"]


def test_learning_curves_found_in_any_nesting() -> None:
    train = {
        "folds": [
            {"fold": 1, "history": [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]},
            {"fold": 2, "history": [{"epoch": 1, "val_loss": 0.6}]},
        ],
        "other": {"history": {"3": [{"epoch": 1, "loss": 1.0}]}},
    }
    curves = an.learning_curves(train)
    assert list(curves)[:2] == ["fold 1", "fold 2"]
    assert curves["fold 1"]["val_loss"].tolist() == [0.5, 0.4]
    assert "other/history/3" in curves
    assert an.learning_curves({}) == {}


def agreement_of(flags: dict[str, np.ndarray]) -> dict:
    """The comparison's agreement counts and Jaccard indices for ``flags``."""
    from labelaudit.pipeline.compare import _jaccard, _pairwise, combination_counts

    n = len(next(iter(flags.values())))
    return {
        "combinations": combination_counts(flags, n),
        "jaccard": _pairwise(list(flags), _jaccard, flags),
    }


def test_combinations_and_jaccard() -> None:
    flags = {
        "a": np.array([1, 1, 0, 0, 1], bool),
        "b": np.array([1, 0, 0, 1, 1], bool),
    }
    agree = agreement_of(flags)  # the report reads what the comparison recorded
    combos = dict(an.combinations(agree["combinations"], ["a", "b"]))
    assert combos == {("a", "b"): 2, ("a",): 1, ("b",): 1}
    jac = an.pairwise_matrix(agree["jaccard"], ["a", "b"])
    assert jac[0, 1] == pytest.approx(2 / 4) and jac[0, 0] == 1


def test_method_flags_and_order() -> None:
    issues = pd.DataFrame(
        {
            "id": ["x", "y", "z"],
            "flagged_by": ["a;b", "", "b"],
            "consensus_score": [0.1, 0.9, 0.5],
            "n_flags": [2, 0, 1],
        }
    )
    flags = an.method_flags(issues, ["a", "b"])
    assert flags["a"].tolist() == [True, False, False]
    assert flags["b"].tolist() == [True, False, True]
    assert an.consensus_order(issues)["id"].tolist() == ["y", "z", "x"]


def test_review_list_score_columns_leave_out_what_label_score_shows() -> None:
    issues = pd.DataFrame(
        {
            "id": ["a", "b"],
            "label_quality": [0.9, 0.1],
            "knn_disagreement": [0.2, 0.8],
            "combined_score": [0.1, 0.9],
            "label_score": [0.1, 0.9],
            "duplicate_group": [1, 1],
        }
    )
    keys = [c.key for c in an.score_columns(issues)]
    assert keys == ["label_quality", "knn_disagreement", "label_score"]


def test_project_2d_falls_back_to_pca() -> None:
    emb = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    xy, how = an.project_2d(emb)
    assert xy.shape == (30, 2) and how in ("UMAP", "PCA")
    assert an.project_2d(emb[:2])[1] == "raw"


def test_bench_table_is_generic() -> None:
    bench = {
        "detectors": {
            "confident": {"auroc": 0.9, "per_noise": {"swap": {"auroc": 0.8}}},
            "isolation": {"auroc": 0.7, "note": "text is ignored"},
        }
    }
    table = bench_table(bench)
    assert table.loc["confident", "auroc"] == 0.9
    assert table.loc["confident", "per_noise.swap.auroc"] == 0.8
    assert list(table.columns)[0] == "auroc"
    assert bench_table({"confident": {"ap": 0.5}}).loc["confident", "ap"] == 0.5


def test_bench_tables_read_the_bench_stage_format() -> None:
    any_ = {"n_pos": 3, "n_neg": 7, "auroc": 0.9, "ap": 0.6, "precision_at_t": 0.5}
    bench = {
        "scores": {"confident": "1 - label_quality"},
        "metrics": {
            "confident": {"any": any_, "dim": {"n_pos": 0, "auroc": None}, "swap": any_},
            "isolation": {"any": {**any_, "auroc": None}},
        },
    }
    table, groups = bench_tables(bench)
    assert table.loc["confident", "auroc"] == 0.9 and pd.isna(table.loc["isolation", "auroc"])
    assert list(groups.columns) == ["any", "swap"]  # groups without positives are left out
    assert groups.loc["confident", "swap"] == 0.9


def test_plotly_text_is_escaped() -> None:
    assert esc("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert esc("Rods & rings") == "Rods &amp; rings"


def test_templates_are_found() -> None:
    import jinja2

    env = jinja2.Environment(loader=template_loader(), autoescape=True)
    for name in ("report.html.j2", "macros.html.j2", "report.js", "report.css"):
        assert env.loader.get_source(env, name)[0]
