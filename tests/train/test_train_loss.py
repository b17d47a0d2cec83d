"""The training loop takes its loss: weights, pos_weight, clipped ReLU/Tanh loss, bit-for-bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelaudit.core.config import resolve_settings
from labelaudit.core.errors import SettingsError
from labelaudit.train.backbones import KERAS_EPSILON, build_model, channel_mean_std
from labelaudit.train.loop import make_runtime, train_fold
from labelaudit.train.loss import TrainLoss, training_loss


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 3, generator=g) * 2.0
    targets = (torch.rand(6, 3, generator=g) < 0.4).float()
    return logits, targets


def tiny(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.random((n, 3)) < 0.4
    labels[np.arange(n), rng.integers(0, 3, n)] = True
    images = rng.integers(0, 100, (n, 4, 32, 32), dtype=np.uint8)
    images[:, 1] += (labels[:, 0] * 120).astype(np.uint8)[:, None, None]
    return images, labels


def settings(activation: str = "sigmoid"):
    return resolve_settings(
        "demo",
        backbone="test_efficientnet",
        pretrained=False,
        image_size=32,
        epochs=1,
        batch_size=8,
        warmup_epochs=0,
        patience=0,
        tta=False,
        progress=False,
        threads=1,
        activation=activation,
    )


def train(loss, activation: str = "sigmoid", model_seed: int = 3):
    """One tiny fold from a fixed start; returns (FoldOutput, starting state dict)."""
    images, labels = tiny()
    s = settings(activation)
    torch.manual_seed(model_seed)
    model = build_model(s.backbone, 4, 3, channel_mean_std(images), None, activation)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    held = np.arange(18, 24)
    out = train_fold(
        model, images, labels, np.arange(18), held, s, make_runtime(s), seed=5, loss=loss
    )
    return out, start


# ------------------------------------------------------------------ the loss itself


def test_pos_weight_equals_bce_with_logits_on_a_hand_made_batch():
    logits, targets = batch()
    pos = torch.tensor([1.0, 4.0, 9.5])
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=pos)(logits, targets)
    assert torch.equal(training_loss("sigmoid", pos_weight=pos.numpy())(logits, targets), expected)
    weight = torch.tensor([0.2, 1.0, 0.5])
    both = torch.nn.BCEWithLogitsLoss(weight=weight, pos_weight=pos)(logits, targets)
    assert torch.equal(TrainLoss("sigmoid", weight=weight, pos_weight=pos)(logits, targets), both)
    # pos_weight really weighs the positives: the loss differs from the unweighted one.
    assert not torch.isclose(expected, F.binary_cross_entropy_with_logits(logits, targets))


def test_default_loss_is_the_heads_own_loss():
    logits, targets = batch(1)
    weight = torch.tensor([0.3, 0.6, 0.9])
    stats = np.array([[0.2] * 4, [0.1] * 4], dtype=np.float32)
    for activation in ("sigmoid", "relu", "tanh"):
        model = build_model("test_efficientnet", 4, 3, stats, activation=activation)
        assert torch.equal(training_loss(activation)(logits, targets), model.loss(logits, targets))
        assert torch.equal(
            training_loss(activation, weight=weight)(logits, targets),
            model.loss(logits, targets, weight),
        )


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_clipped_loss_of_relu_and_tanh_heads(activation):
    act = torch.relu if activation == "relu" else torch.tanh
    logits = torch.tensor([[0.3, 2.5, -1.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    loss = training_loss(activation)(logits, targets)
    eps = KERAS_EPSILON
    p = act(logits.detach()).clamp(eps, 1 - eps)
    by_hand = -(targets * torch.log(p + eps) + (1 - targets) * torch.log(1 - p + eps)).mean()
    assert torch.allclose(loss, by_hand)
    loss.backward()
    # Outside [eps, 1 - eps] the clip passes no gradient: an output stuck above 1
    # (relu) or below 0 gets no training signal, as in the method's Keras code.
    assert logits.grad[0, 0] != 0
    assert logits.grad[0, 2] == 0
    if activation == "relu":
        assert logits.grad[0, 1] == 0
    with pytest.raises(SettingsError, match="sigmoid head"):
        training_loss(activation, pos_weight=np.ones(3, np.float32))


def test_unknown_activation_is_refused():
    with pytest.raises(SettingsError, match="activation"):
        TrainLoss("softmax")


# ------------------------------------------------------------------ the loss reaches training


@pytest.mark.slow
def test_class_weights_change_the_gradient():
    # A zero weight on class 2 gives its head row no gradient: Adam leaves it where it
    # started, while the other rows (and the unweighted run's row 2) move.
    out, start = train(training_loss("sigmoid", weight=np.array([1.0, 1.0, 0.0], np.float32)))
    w0, w = start["head.weight"], out.state_dict["head.weight"]
    assert torch.equal(w[2], w0[2]) and torch.equal(
        out.state_dict["head.bias"][2], start["head.bias"][2]
    )
    assert not torch.equal(w[0], w0[0])
    plain, _ = train(None)
    assert not torch.equal(plain.state_dict["head.weight"][2], w0[2])


@pytest.mark.slow
def test_a_callable_loss_is_called_on_training_batches():
    calls = []

    def spy(logits, targets):
        calls.append(tuple(targets.shape))
        return F.binary_cross_entropy_with_logits(logits.float(), targets)

    train(spy)
    # 18 training images, batches of 8, the last partial batch dropped: 2 full batches.
    assert calls == [(8, 3), (8, 3)]


# ------------------------------------------------------------------ bit-for-bit with the old code


def _reference(activation: str, weight=None, pos_weight=None):
    """The training loss as the loop computed it before it took a loss argument.

    ``model.loss(logits, y, class_weight)`` (``OUTPUTS``: BCE on logits, Keras' clipped
    BCE on ReLU/Tanh outputs) and ``PosWeightedModel.loss`` in training mode.
    """
    act = {"relu": torch.relu, "tanh": torch.tanh}.get(activation)
    w = None if weight is None else torch.as_tensor(weight)
    pw = None if pos_weight is None else torch.as_tensor(pos_weight)

    def loss(logits, targets):
        if pw is not None:
            return F.binary_cross_entropy_with_logits(
                logits.float(), targets, weight=w, pos_weight=pw
            )
        if act is None:
            return F.binary_cross_entropy_with_logits(logits.float(), targets, weight=w)
        eps = KERAS_EPSILON
        p = act(logits.float()).float().clamp(eps, 1.0 - eps)
        out = -(targets * torch.log(p + eps) + (1.0 - targets) * torch.log(1.0 - p + eps))
        return (out * w if w is not None else out).mean()

    return loss


@pytest.mark.parametrize(
    ("activation", "kind"),
    # (sigmoid with ``weight`` goes through the same loop call as relu's; the loss
    # functions themselves are compared for every head in test_default_loss_...)
    [("sigmoid", None), ("sigmoid", "pos_weight"), ("relu", "weight")],
)
@pytest.mark.slow
def test_training_is_bit_for_bit_the_old_computation(activation, kind):
    values = np.array([0.4, 2.0, 1.5], np.float32)
    kw = {kind: values} if kind else {}
    new, _ = train(training_loss(activation, **kw) if kind else None, activation)
    old, _ = train(_reference(activation, **kw), activation)
    assert np.array_equal(new.probs, old.probs)
    assert [h["held_out_loss"] for h in new.history] == [h["held_out_loss"] for h in old.history]
    for name, tensor in old.state_dict.items():
        assert torch.equal(new.state_dict[name], tensor), name


# ------------------------------------------------------------------ per-label weights


def test_label_weights_are_looked_up_by_row_and_multiplied_in():
    logits, targets = batch(2)
    lw = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    rows = torch.tensor([9, 0, 4, 4, 7, 2])
    cls = np.array([1.0, 0.5, 2.0], np.float32)
    loss = training_loss("sigmoid", weight=cls, label_weight=lw)
    assert loss.per_row and not training_loss("sigmoid").per_row
    expected = F.binary_cross_entropy_with_logits(
        logits, targets, weight=torch.from_numpy(lw[rows.numpy()] * cls)
    )
    assert torch.allclose(loss(logits, targets, rows), expected)
    # A label of weight 0 gives its logit no gradient; the others still learn.
    zero = lw.copy()
    zero[9, 2] = 0.0
    x = logits.clone().requires_grad_(True)
    training_loss("sigmoid", label_weight=zero)(x, targets, rows).backward()
    assert x.grad[0, 2] == 0 and x.grad[0, 1] != 0
    with pytest.raises(ValueError, match="rows"):
        loss(logits, targets)
    for bad in (np.ones(3), -np.ones((2, 3)), np.full((2, 3), np.nan)):
        with pytest.raises(SettingsError, match="label_weight"):
            TrainLoss("sigmoid", label_weight=bad)


@pytest.mark.slow
def test_label_weights_reach_the_training_loop():
    # Zero weight for class 2 on every training row: its head row gets no gradient,
    # while the rows of classes with weight 1 move (the loop passes the batch rows).
    lw = np.ones((24, 3), np.float32)
    lw[:, 2] = 0.0
    out, start = train(training_loss("sigmoid", label_weight=lw))
    assert torch.equal(out.state_dict["head.weight"][2], start["head.weight"][2])
    assert not torch.equal(out.state_dict["head.weight"][0], start["head.weight"][0])
