"""The method's model: a timm backbone, global average pooling, one linear layer.

The model takes the cache's uint8 images directly and normalises them itself
(per-channel mean and standard deviation stored as buffers), so the data path is
a plain uint8 copy and a checkpoint carries its own preprocessing. The pooled
backbone features are the embedding the detectors use.

The output activation is pluggable (:data:`OUTPUTS`): the method's sigmoid with
binary cross-entropy, and the ReLU and Tanh heads of the poster's activation study,
trained as the method's Keras code would have trained them (see :func:`keras_bce`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelaudit.train.weights import ResolvedWeights, create_backbone


@dataclass(frozen=True)
class OutputActivation:
    """How logits become probabilities, and the matching training loss.

    Attributes
    ----------
    to_probs
        logits (B, K) -> probabilities in [0, 1] (thresholded at 0.5).
    loss
        ``loss(logits, targets, weight)`` -> scalar; ``weight`` is an optional
        per-class weight tensor (K,) broadcast over the batch.
    prior
        Class prevalence (K,) in (0, 1) -> the head bias whose output is that
        prevalence (the activation's inverse); ``None`` leaves the bias as initialised.
    """

    to_probs: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    prior: Callable[[np.ndarray], np.ndarray] | None = None


def _bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), targets, weight=weight)


#: Keras' ``backend.epsilon()``: the clipping margin of its binary cross-entropy.
KERAS_EPSILON = 1e-7


def keras_bce(
    outputs: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Keras' ``binary_crossentropy`` on outputs that are not probabilities.

    What the method's Keras code computed for a ReLU or Tanh head
    (``keras.backend.binary_crossentropy`` with ``from_logits=False`` on an output
    that is not a sigmoid): clip the outputs to ``[eps, 1 - eps]``, then
    ``-(y log(p + eps) + (1 - y) log(1 - p + eps))``, averaged, with ``eps = 1e-7``.
    The clip has zero gradient outside the interval, so an output below 0 or above
    1 gets no training signal from that image: a ReLU unit stuck above 1 keeps
    predicting "positive", one below 0 keeps predicting "negative" (and ReLU itself
    has no gradient there), a Tanh output below 0 is stuck likewise.

    Parameters
    ----------
    outputs
        The head's activated outputs (B, K), e.g. ``relu(logits)``.
    targets
        0/1 targets (B, K).
    weight
        Optional per-class weights (K,), multiplied in before the mean.
    """
    eps = KERAS_EPSILON
    p = outputs.float().clamp(eps, 1.0 - eps)
    loss = -(targets * torch.log(p + eps) + (1.0 - targets) * torch.log(1.0 - p + eps))
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def _clipped(activation: Callable[[torch.Tensor], torch.Tensor]):
    """The activation's output clipped to [0, 1]: 0.5 thresholds it as the method did."""

    def to_probs(logits: torch.Tensor) -> torch.Tensor:
        return activation(logits.float()).clamp(0.0, 1.0)

    return to_probs


def _keras_loss(activation: Callable[[torch.Tensor], torch.Tensor]):
    def loss(
        logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return keras_bce(activation(logits.float()), targets, weight)

    return loss


def _logit(rate: np.ndarray) -> np.ndarray:
    return np.log(rate / (1 - rate))


#: Output activations by name; ``TrainSettings.activation`` picks one.
#:
#: ``sigmoid`` is the method's head: binary cross-entropy on the logits.
#: ``relu`` and ``tanh`` are the heads of its activation study, reproduced as the
#: method's Keras code trained them: the activation's output goes through Keras'
#: clipped binary cross-entropy (:func:`keras_bce`) and is thresholded at 0.5.
#: Their outputs are not probabilities; :attr:`OutputActivation.to_probs` clips them
#: to [0, 1] only so that the rest of the pipeline can read them.
OUTPUTS: dict[str, OutputActivation] = {
    "sigmoid": OutputActivation(to_probs=torch.sigmoid, loss=_bce_with_logits, prior=_logit),
    "relu": OutputActivation(
        to_probs=_clipped(torch.relu), loss=_keras_loss(torch.relu), prior=lambda r: r
    ),
    "tanh": OutputActivation(
        to_probs=_clipped(torch.tanh), loss=_keras_loss(torch.tanh), prior=np.arctanh
    ),
}


def channel_mean_std(images: np.ndarray, max_images: int = 512, seed: int = 0) -> np.ndarray:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    Computed on at most ``max_images`` images (a fixed random subset) so it stays
    cheap on large memory-mapped caches. Labels are not used, so computing it on
    the whole dataset leaks nothing into the out-of-fold predictions.

    Returns
    -------
    np.ndarray
        Shape (2, C): row 0 the means, row 1 the standard deviations (>= 1e-3).
    """
    n = images.shape[0]
    idx = np.arange(n)
    if n > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for start in range(0, len(idx), 32):  # chunks: a 512 px sample would not fit in memory
        chunk = np.asarray(images[idx[start : start + 32]], dtype=np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = len(idx) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return np.stack([mean, np.maximum(std, 1e-3)]).astype(np.float32)


def _feature_width(backbone: nn.Module) -> int:
    """The pooled feature count a timm backbone built with ``num_classes=0`` reports."""
    width = backbone.num_features
    if not isinstance(width, int):
        raise TypeError(f"{type(backbone).__name__}.num_features is not an int: {width!r}")
    return width


class LabelModel(nn.Module):
    """Backbone + pooled features + one linear head, on uint8 input.

    Parameters
    ----------
    backbone
        A timm model built with ``num_classes=0`` (returns pooled features).
    num_classes
        Outputs of the head (K).
    stats
        (2, C) channel means and standard deviations in [0, 1] units.
    activation
        A key of :data:`OUTPUTS`.
    """

    mean: torch.Tensor  # buffers (registered in __init__), in uint8 units
    std: torch.Tensor

    def __init__(
        self, backbone: nn.Module, num_classes: int, stats: np.ndarray, activation: str = "sigmoid"
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(_feature_width(backbone), num_classes)
        table = torch.as_tensor(np.asarray(stats, dtype=np.float32))
        self.register_buffer("mean", (table[0] * 255.0).view(1, -1, 1, 1))
        self.register_buffer("std", (table[1] * 255.0).view(1, -1, 1, 1))
        self.activation = activation

    def set_prior(self, positives: np.ndarray) -> None:
        """Start the head's biases at the classes' training prevalence.

        With sigmoid + BCE a zero bias predicts 0.5 for every class; starting at the
        prior (logit scale) removes the first epochs' work of learning that most
        labels are 0. The ReLU and Tanh heads start at the same prevalence in their
        own output scale (bias ``r`` and ``atanh(r)``), so an activation comparison
        differs only in the activation and its loss.
        """
        prior = OUTPUTS[self.activation].prior
        if prior is None:
            return
        rate = (np.asarray(positives, dtype=np.float64).sum(axis=0) + 0.5) / (len(positives) + 1)
        with torch.no_grad():
            self.head.bias.copy_(torch.as_tensor(prior(rate), dtype=torch.float32))

    @property
    def num_features(self) -> int:
        return _feature_width(self.backbone)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or raw float) images -> standardised float images."""
        return (x.float() - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, D): the embedding."""
        return self.backbone(self.normalise(x))

    def forward(
        self, x: torch.Tensor, frozen: bool = False, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K); with ``frozen`` the backbone runs without gradients."""
        if frozen:
            with torch.no_grad():
                feats = self.embed(x)
        else:
            feats = self.embed(x)
        logits = self.head(feats)
        return (logits, feats) if with_features else logits

    def to_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return OUTPUTS[self.activation].to_probs(logits.float())

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return OUTPUTS[self.activation].loss(logits, targets, weight)


class Predictor(Protocol):
    """What prediction reads of a model.

    :class:`LabelModel` and an ensemble of them
    (:class:`~labelaudit.train.checkpoint.EnsembleModel`) both provide it.
    """

    @property
    def head(self) -> nn.Linear: ...

    @property
    def num_features(self) -> int: ...

    @property
    def activation(self) -> str: ...

    def eval(self) -> Any: ...

    def __call__(
        self, x: torch.Tensor, frozen: bool = False, with_features: bool = False
    ) -> Any: ...

    def to_probs(self, logits: torch.Tensor) -> torch.Tensor: ...


def build_model(
    backbone: str,
    in_chans: int,
    num_classes: int,
    stats: np.ndarray,
    weights: ResolvedWeights | None = None,
    activation: str = "sigmoid",
) -> LabelModel:
    """Create a :class:`LabelModel` and load the resolved backbone weights strictly.

    Parameters
    ----------
    backbone
        timm model name.
    in_chans
        Input channels.
    num_classes
        K.
    stats
        (2, C) channel statistics (see :func:`channel_mean_std`).
    weights
        From :func:`labelaudit.train.weights.resolve_weights`; ``None`` or a
        random source keeps timm's initialisation.
    activation
        Output activation name.
    """
    net = create_backbone(backbone, in_chans)
    if weights is not None and weights.state_dict is not None:
        net.load_state_dict(weights.state_dict, strict=True)
    return LabelModel(net, num_classes, stats, activation)
