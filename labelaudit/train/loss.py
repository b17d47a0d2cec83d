"""The training loss, handed to the training loop (:func:`labelaudit.train.loop.train_fold`).

One small module, :class:`TrainLoss`, covers every loss labelaudit trains with:

* the method's sigmoid head: binary cross-entropy on the logits, optionally with
  per-class ``weight`` (the method's ``w_k = 1 - n_k / N``) and ``pos_weight``
  (up-weighting the positives of rare classes);
* the ReLU and Tanh heads of the activation study: Keras' clipped binary
  cross-entropy on the activated outputs (:func:`~labelaudit.train.backbones.keras_bce`),
  optionally with per-class ``weight``.

The computation is the head's own (:data:`~labelaudit.train.backbones.OUTPUTS`), so
a :class:`TrainLoss` without weights gives exactly ``model.loss(logits, targets)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelaudit.errors import SettingsError
from labelaudit.train.backbones import OUTPUTS

#: ``loss(logits, targets) -> scalar tensor``: what the training loop calls.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_tensor(values: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.as_tensor(values, dtype=torch.float32)


class TrainLoss(nn.Module):
    """The loss of one output head, with optional per-class weights.

    Parameters
    ----------
    activation
        The head's activation (a key of :data:`~labelaudit.train.backbones.OUTPUTS`).
    weight
        Optional per-class weights (K,), multiplied into each class's term.
    pos_weight
        Optional BCE ``pos_weight`` (K,); only for the ``sigmoid`` head (the clipped
        loss of ReLU/Tanh heads has no positive/negative split to weight).

    Raises
    ------
    SettingsError
        Unknown activation, or ``pos_weight`` with a head other than ``sigmoid``.

    Notes
    -----
    The weights are buffers, so ``loss.to(device)`` moves them with the module.
    """

    def __init__(
        self,
        activation: str = "sigmoid",
        weight: np.ndarray | torch.Tensor | None = None,
        pos_weight: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if activation not in OUTPUTS:
            raise SettingsError(
                f"activation must be one of {', '.join(OUTPUTS)}, got {activation!r}"
            )
        if pos_weight is not None and activation != "sigmoid":
            raise SettingsError(
                f"pos_weight (BCE pos_weight) needs the sigmoid head, not {activation!r}"
            )
        self.activation = activation
        self.register_buffer("weight", _as_tensor(weight))
        self.register_buffer("pos_weight", _as_tensor(pos_weight))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch: logits (B, K), 0/1 float targets (B, K) -> scalar."""
        if self.pos_weight is not None:
            return F.binary_cross_entropy_with_logits(
                logits.float(), targets, weight=self.weight, pos_weight=self.pos_weight
            )
        return OUTPUTS[self.activation].loss(logits, targets, self.weight)

    def extra_repr(self) -> str:
        return (
            f"activation={self.activation!r}, weighted={self.weight is not None}, "
            f"pos_weighted={self.pos_weight is not None}"
        )


def training_loss(
    activation: str = "sigmoid",
    weight: np.ndarray | torch.Tensor | None = None,
    pos_weight: np.ndarray | torch.Tensor | None = None,
) -> TrainLoss:
    """The loss :func:`~labelaudit.train.loop.train_fold` trains a head with.

    Parameters
    ----------
    activation
        ``"sigmoid"``, ``"relu"`` or ``"tanh"``.
    weight, pos_weight
        Optional per-class weights (K,); see :class:`TrainLoss`.

    Returns
    -------
    TrainLoss
    """
    return TrainLoss(activation, weight=weight, pos_weight=pos_weight)
