"""labelaudit sweep: planning, the method's scores, the ReLU/Tanh heads, resume, the page."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from labelaudit.core.config import resolve_settings
from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.tools.sweep import (
    Config,
    method_scores,
    plan_configs,
    resolve_split,
    write_sweep_html,
)
from labelaudit.tools.sweep.plan import parse_values
from labelaudit.train.backbones import KERAS_EPSILON, OUTPUTS, LabelModel, keras_bce

# ------------------------------------------------------------------ planning


def test_grid_and_one_at_a_time_plans():
    base = resolve_settings("demo", lr=1e-3)
    axes = {
        "backbone": ["tf_efficientnet_lite0", "resnet18"],
        "lr": [0.1, 0.01, 0.001, 0.0001],
        "activation": ["sigmoid", "relu", "tanh"],
    }
    centre, grid = plan_configs(base, axes, one_at_a_time=False)
    assert len(grid) == 2 * 4 * 3 and len(set(grid)) == len(grid)
    assert centre == Config("tf_efficientnet_lite0", 0.001, "sigmoid")
    centre, configs = plan_configs(base, axes, one_at_a_time=True)
    # the base, then each axis varied alone: 1 + (2-1) + (4-1) + (3-1)
    assert configs[0] == centre and len(configs) == 7
    for c in configs:
        differs = [a for a in ("backbone", "lr", "activation") if c.value(a) != centre.value(a)]
        assert len(differs) <= 1
    # names are unique directory names
    assert len({c.name for c in configs}) == 7 and "resnet18_lr0.001_sigmoid" in {
        c.name for c in configs
    }


def test_a_configuration_of_the_wrong_kinds_is_refused():
    base = resolve_settings("demo")
    assert Config.from_values({"backbone": "resnet18", "lr": 0.01, "activation": "relu"}) == (
        Config("resnet18", 0.01, "relu")
    )
    for bad in ({"backbone": [7]}, {"activation": [None, "relu"]}):
        with pytest.raises(SettingsError, match="not a sweep configuration"):
            plan_configs(base, bad, one_at_a_time=False)
    with pytest.raises(SettingsError, match="not a sweep configuration"):
        Config.from_values({"backbone": "resnet18", "lr": True, "activation": "relu"})


def test_base_value_when_the_preset_value_is_not_listed():
    base = resolve_settings("demo")  # lr 2e-3, tf_efficientnet_lite0, sigmoid
    centre, _ = plan_configs(
        base, {"lr": [0.1, 0.01, 0.001], "backbone": ["resnet18", "resnet10t"]}, True
    )
    assert centre.lr == 0.001  # nearest on a log scale
    assert centre.backbone == "resnet18"  # first listed
    assert centre.activation == "sigmoid"  # not swept: the preset's


def test_split_and_value_parsing():
    base = resolve_settings("demo")
    assert resolve_split(base, None, None).folds == base.folds
    holdout = resolve_split(base, None, 0.2)
    assert holdout.folds == 5 and holdout.evaluated_folds == [0] and holdout.train_fold == 1
    assert resolve_split(base, 3, None).evaluated_folds == [0, 1, 2]
    with pytest.raises(SettingsError, match="either --folds or --holdout"):
        resolve_split(base, 3, 0.2)
    with pytest.raises(SettingsError, match="fraction"):
        resolve_split(base, None, 0.8)
    assert parse_values("lr", "0.1, 0.01,0.1") == [0.1, 0.01]
    assert parse_values("backbone", ["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(SettingsError, match="not a number"):
        parse_values("lr", "0.1,fast")


# ------------------------------------------------------------------ scores


def test_method_scores_micro_and_every_class():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=bool)
    p = np.array([[0.9, 0.1, 0.2], [0.6, 0.7, 0.1], [0.8, 0.2, 0.3], [0.1, 0.1, 0.2]])
    s = method_scores(y, p)
    # tp = 3 (two class 0, one class 1), fp = 1, fn = 2
    assert s["precision"] == pytest.approx(3 / 4) and s["recall"] == pytest.approx(3 / 5)
    assert s["f1"] == pytest.approx(6 / 9) and s["average"] == "micro"
    assert not s["all_classes_hit"] and s["classes_hit"] == 2 and s["missed_classes"] == [2]
    p[2, 2] = 0.6
    assert method_scores(y, p)["all_classes_hit"]


def test_method_scores_undefined_micro_and_diverged():
    y = np.array([[1, 0], [0, 1]], dtype=bool)
    nothing = method_scores(y, np.zeros((2, 2)))
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0
    assert "precision undefined" in nothing["average"] and not nothing["all_classes_hit"]
    diverged = method_scores(y, np.full((2, 2), np.nan))
    assert diverged["diverged"] and diverged["f1"] == 0.0
    everything = method_scores(y, np.ones((2, 2)))  # the degenerate "predict every label"
    assert everything["recall"] == 1.0 and everything["precision"] == 0.5


# ------------------------------------------------------------------ ReLU / Tanh heads


class _Features(torch.nn.Identity):
    """A stand-in backbone: the head's tests need only its feature count."""

    num_features = 3


def test_keras_bce_matches_the_formula_and_clips_gradients():
    out = torch.tensor([[-0.5, 0.3, 1.7, 0.8]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss = keras_bce(out, y)
    eps = np.float32(KERAS_EPSILON)  # Keras computes in float32 too
    p = np.clip(np.array([-0.5, 0.3, 1.7, 0.8], np.float32), eps, np.float32(1) - eps)
    t = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    expect = -(t * np.log(p + eps) + (1 - t) * np.log(np.float32(1) - p + eps)).mean()
    assert float(loss.detach()) == pytest.approx(float(expect), rel=1e-5)
    loss.backward()
    g = out.grad[0]
    # outside [0, 1] the clip passes no gradient: a wrong output there cannot be corrected
    assert g[0] == 0 and g[2] == 0 and g[1] < 0 and g[3] > 0


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_relu_and_tanh_heads(name):
    head = OUTPUTS[name]
    logits = torch.tensor([[-3.0, -0.1, 0.2, 0.7, 5.0]])
    probs = head.to_probs(logits)
    assert ((probs >= 0) & (probs <= 1)).all()
    raw = torch.relu(logits) if name == "relu" else torch.tanh(logits)
    # the method thresholds the activation's output at 0.5: clipping keeps that decision
    assert torch.equal(probs >= 0.5, raw >= 0.5)
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]])
    assert float(head.loss(logits, y, None)) == pytest.approx(float(keras_bce(raw, y)))
    weight = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0])
    assert torch.isfinite(head.loss(logits, y, weight))
    # the head starts at the class prevalence in its own output scale
    model = LabelModel(_Features(), 2, np.array([[0.5], [0.2]]), activation=name)
    positives = np.array([[1, 0], [0, 0], [0, 0], [1, 0]], dtype=bool)
    model.set_prior(positives)
    rate = (positives.sum(0) + 0.5) / (len(positives) + 1)
    out = model.to_probs(model.head.bias[None])
    assert np.allclose(out.detach().numpy()[0], rate, atol=1e-6)


def test_settings_accept_the_study_activations():
    for name in ("sigmoid", "relu", "tanh"):
        assert resolve_settings("demo", activation=name).activation == name
    with pytest.raises(SettingsError, match="activation must be one of sigmoid, relu, tanh"):
        resolve_settings("demo", activation="softmax")


def test_sigmoid_prior_unchanged():
    model = LabelModel(_Features(), 2, np.array([[0.5], [0.2]]))
    positives = np.array([[1, 0], [0, 0], [0, 1]], dtype=bool)
    model.set_prior(positives)
    rate = (positives.sum(0) + 0.5) / 4
    assert np.allclose(model.head.bias.detach().numpy(), np.log(rate / (1 - rate)), atol=1e-6)


# ------------------------------------------------------------------ end to end

TINY = [
    "--preset",
    "demo",
    "--no-pretrained",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "8",
]

#: The same tiny settings for calls from Python.
TINY_KWARGS = dict(
    preset="demo",
    backbone="test_efficientnet",
    pretrained=False,
    image_size=32,
    epochs=1,
    batch_size=8,
    html=False,
)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from labelaudit.synth.simulate import synthesize

    root = tmp_path_factory.mktemp("sweep")
    synthesize(root / "data", n=48, size=48, noise_rate=0.1, fault_rate=0.0, seed=3)
    return root / "data"


def _statuses(out) -> dict[str, str]:
    runs = pd.read_csv(out / "sweep_runs.csv", dtype={"config": str, "status": str})
    return dict(zip(runs["config"], runs["status"], strict=True))


@pytest.mark.slow
def test_grid_sweep_tables_resume_and_page(synth_data, tmp_path, run_cli):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        synth_data,
        "--out",
        out,
        "--backbones",
        "test_efficientnet,resnet10t",
        "--lrs",
        "0.01,0.001",
        "--folds",
        "2",
        *TINY,
    ]
    code, stdout, stderr = run_cli(*args)
    assert code == 0, stderr
    # the method's tables: one per varied axis, with its columns
    assert "| Backbone | F1 | Recall | Precision | Average | Every class correct |" in stdout
    assert "| Learning rate | F1 | Recall | Precision |" in stdout
    assert "sweep page:" in stdout
    runs = pd.read_csv(out / "sweep_runs.csv")
    assert len(runs) == 4 and set(runs["status"]) == {"trained"}
    for col in ("f1", "recall", "precision", "all_classes_hit", "macro_f1", "train_seconds"):
        assert col in runs.columns
    assert runs[["f1", "recall", "precision"]].apply(lambda c: c.between(0, 1)).all().all()
    curves = pd.read_csv(out / "sweep_curves.csv")
    assert len(curves) == 4 * 2 and {"train_loss", "held_out_loss"} <= set(curves.columns)
    tables = (out / "sweep_tables.md").read_text()
    assert tables.count("| test_efficientnet |") == 1 and "| 0.001 |" in tables
    plan = json.loads((out / "sweep.json").read_text())
    assert plan["complete"] and plan["mode"] == "grid" and plan["varied"] == ["backbone", "lr"]
    # fold checkpoints are pruned after scoring; the predictions stay for resuming
    fold = out / "runs" / "resnet10t_lr0.01_sigmoid" / "folds" / "fold_2"
    assert (fold / "oof.npz").is_file() and not (fold / "model.pt").exists()

    # the page: self-contained, nothing fetched, one table per axis
    from plotly.offline import get_plotlyjs

    page = (out / "sweep.html").read_text()
    assert "default-src 'none'" in page and page.count("Plotly.newPlot") >= 1
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    assert page.count(plotly_js) == 1  # inlined once
    own = page.replace(plotly_js, "")  # the page's own markup, styles and script
    assert not re.search(r"""(src|href)=["']?https?:|url\(http|@import""", own)
    assert 'id="axis-backbone"' in page and 'id="axis-lr"' in page and "fig-grid" in page

    # a second run reuses every configuration: nothing is trained
    code, stdout, _ = run_cli(*args)
    assert code == 0
    assert set(_statuses(out).values()) == {"reused"}
    assert "trained in" not in stdout

    # a killed run: one configuration lost its last fold and its result
    victim = out / "runs" / "test_efficientnet_lr0.001_sigmoid"
    (victim / "folds" / "fold_2" / "state.json").unlink()
    (victim / "sweep_result.json").unlink()
    code, _, _ = run_cli(*args)
    assert code == 0
    statuses = _statuses(out)
    assert statuses.pop("test_efficientnet_lr0.001_sigmoid") == "resumed"
    assert set(statuses.values()) == {"reused"}
    # the page can be rewritten without training
    (out / "sweep.html").unlink()
    assert write_sweep_html(out).is_file()


@pytest.mark.slow
def test_activation_study_holdout(synth_data, tmp_path):
    from labelaudit.tools.sweep import sweep

    result = sweep(
        synth_data,
        tmp_path / "act",
        activations="sigmoid,relu,tanh",
        lrs=[0.01, 0.001],
        one_at_a_time=True,
        holdout=0.5,
        **TINY_KWARGS,
    )
    assert result.split.holdout == 0.5 and result.split.folds == 2
    assert len(result.configs) == 4  # base (lr 0.001 nearest the preset's 2e-3), 1 lr, 2 heads
    table = result.tables["activation"]
    assert table["Output activation"].tolist() == ["sigmoid", "relu", "tanh"]
    # hold-out: only fold 1 trained, every configuration scored on the same held-out half
    scored = set(result.runs["n_scored"])
    assert len(scored) == 1 and 18 <= scored.pop() <= 30
    for name in result.runs["config"]:
        folds = tmp_path / "act" / "runs" / name / "folds"
        assert (folds / "fold_1" / "state.json").is_file()
        assert not (folds / "fold_2").exists()
    assert not (tmp_path / "act" / "sweep.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("folds_saved", [False, True])
def test_a_diverged_configuration_is_a_result_not_a_crash(
    synth_data, tmp_path, monkeypatch, folds_saved
):
    from labelaudit.tools.sweep import sweep
    from labelaudit.train import cv
    from labelaudit.train.backbones import OutputActivation

    if folds_saved:  # fold metrics that tolerate NaN: the folds are saved, the merge refuses
        metrics = cv.multilabel_metrics
        monkeypatch.setattr(
            cv, "multilabel_metrics", lambda y, p, names: metrics(y, np.nan_to_num(p), names)
        )

    sigmoid = OUTPUTS["sigmoid"]
    broken = OutputActivation(
        to_probs=lambda logits: logits * math.nan, loss=sigmoid.loss, prior=sigmoid.prior
    )
    monkeypatch.setitem(OUTPUTS, "sigmoid", broken)
    kwargs = dict(
        dataset=synth_data,
        out=tmp_path / "nan",
        folds=2,
        **TINY_KWARGS,
    )
    result = sweep(**kwargs)
    row = result.runs.iloc[0]
    assert bool(row["diverged"]) and row["f1"] == 0.0 and row["status"] == "trained"
    assert not row["all_classes_hit"] and row["n_scored"] > 0
    # it is not retrained by the next call
    again = sweep(**kwargs)
    assert again.runs.iloc[0]["status"] == "reused" and bool(again.runs.iloc[0]["diverged"])


def test_user_errors_exit_2(synth_data, tmp_path, run_cli):
    code, _, err = run_cli(
        "sweep", synth_data, "--out", tmp_path / "x", "--folds", "2", "--holdout", "0.2"
    )
    assert code == 2 and "either --folds or --holdout" in err
    code, _, err = run_cli(
        "sweep", synth_data, "--out", tmp_path / "x", "--activations", "sigmoid,softmax"
    )
    assert code == 2 and "activation must be one of" in err and "Traceback" not in err
    code, _, err = run_cli("sweep", synth_data, "--out", synth_data / "inside", *TINY)
    assert code == 2 and "inside the dataset" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(RunDirError, match="not a sweep directory"):
        write_sweep_html(tmp_path)


@pytest.mark.slow
def test_sweep_prints_label_warnings_once_and_scores_from_cv_data(
    synth_data, tmp_path, monkeypatch
):
    """Cross-validation hands its warnings and fold records to the sweep as data: the
    sweep prints each warning once for all configurations, a hold-out prints no
    "re-run to merge" note, and the scores come from the records cross_validate returns."""
    from rich.console import Console

    from labelaudit.data.layouts import load_dataset
    from labelaudit.tools.sweep import sweep
    from labelaudit.train import cv

    returned = []
    real = cv.cross_validate

    def spy(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(cv, "cross_validate", spy)
    console = Console(record=True, width=100_000)
    out = tmp_path / "warn"
    result = sweep(synth_data, out, lrs="0.01,0.001", holdout=0.5, console=console, **TINY_KWARGS)
    text = console.export_text()
    assert len(returned) == 2 and returned[0].warnings  # rare classes at 2 folds
    for note in returned[0].warnings:
        assert text.count(note) == 1, note
    assert "folds finished" not in text and "re-run without --fold" not in text
    labels = load_dataset(synth_data).labels
    for res, (_, row) in zip(returned, result.runs.iterrows(), strict=True):
        assert [rec.fold for rec in res.records] == [0]  # the hold-out's one fold
        rec = res.records[0]
        assert row["n_scored"] == len(rec.held_idx)
        assert row["f1"] == pytest.approx(method_scores(labels[rec.held_idx], rec.probs)["f1"])


def test_no_function_in_sweep_is_over_80_lines():
    import ast
    from pathlib import Path

    import labelaudit.tools.sweep

    long = []
    for path in sorted(Path(labelaudit.tools.sweep.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{path.name}:{node.name}")
    assert not long
