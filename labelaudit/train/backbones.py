"""The method's model: a timm backbone, global average pooling, one linear layer.

The model takes the cache's uint8 images directly and normalises them itself
(per-channel mean and standard deviation stored as buffers), so the data path is
a plain uint8 copy and a checkpoint carries its own preprocessing. The pooled
backbone features are the embedding the detectors use.

The output activation is pluggable (:data:`OUTPUTS`): the method's sigmoid with
binary cross-entropy today; the poster's ReLU/Tanh comparison adds entries here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
        logits (B, K) -> probabilities in [0, 1].
    loss
        ``loss(logits, targets, weight)`` -> scalar; ``weight`` is an optional
        per-class weight tensor (K,) broadcast over the batch.
    """

    to_probs: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), targets, weight=weight)


#: Output activations by name; ``TrainSettings.activation`` picks one.
OUTPUTS: dict[str, OutputActivation] = {
    "sigmoid": OutputActivation(to_probs=torch.sigmoid, loss=_bce_with_logits),
}


def channel_stats(images: np.ndarray, max_images: int = 512, seed: int = 0) -> np.ndarray:
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

    def __init__(
        self, backbone: nn.Module, num_classes: int, stats: np.ndarray, activation: str = "sigmoid"
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        stats = torch.as_tensor(np.asarray(stats, dtype=np.float32))
        self.register_buffer("mean", (stats[0] * 255.0).view(1, -1, 1, 1))
        self.register_buffer("std", (stats[1] * 255.0).view(1, -1, 1, 1))
        self.activation = activation

    def set_prior(self, positives: np.ndarray) -> None:
        """Start the head's biases at the classes' training prevalence (logit scale).

        With sigmoid + BCE a zero bias predicts 0.5 for every class; starting at the
        prior removes the first epochs' work of learning that most labels are 0.
        """
        if self.activation != "sigmoid":
            return
        rate = (np.asarray(positives, dtype=np.float64).sum(axis=0) + 0.5) / (len(positives) + 1)
        with torch.no_grad():
            self.head.bias.copy_(torch.as_tensor(np.log(rate / (1 - rate)), dtype=torch.float32))

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

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
        (2, C) channel statistics (see :func:`channel_stats`).
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
