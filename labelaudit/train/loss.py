"""The training loss, handed to the training loop (:func:`labelaudit.train.loop.train_fold`).

One small module, :class:`TrainLoss`, covers every loss labelaudit trains with:

* the method's sigmoid head: binary cross-entropy on the logits, optionally with
  per-class ``weight`` (the method's ``w_k = 1 - n_k / N``) and ``pos_weight``
  (up-weighting the positives of rare classes);
* the ReLU and Tanh heads of the activation study: Keras' clipped binary
  cross-entropy on the activated outputs (:func:`~labelaudit.train.backbones.keras_bce`),
  optionally with per-class ``weight``;
* soft cleaning: per-label weights ``label_weight`` (N, K), one per image of the
  dataset and class, looked up by the batch's row indices and multiplied into each
  (image, class) term (a doubtful label counts less, the rest of its image normally).

The computation is the head's own (:data:`~labelaudit.train.backbones.OUTPUTS`), so
a :class:`TrainLoss` without weights gives exactly ``model.loss(logits, targets)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelaudit.core.errors import SettingsError
from labelaudit.train.backbones import OUTPUTS

#: ``loss(logits, targets) -> scalar tensor``: what the training loop calls. A loss
#: with ``per_row = True`` is called as ``loss(logits, targets, rows)`` instead, with
#: the dataset row index of each batch image.
LossFn = Callable[..., torch.Tensor]


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
    label_weight
        Optional per-label weights (N, K) over all N images of the dataset, indexed by
        the batch's row indices; multiplied with ``weight``.

    Raises
    ------
    SettingsError
        Unknown activation, ``pos_weight`` with a head other than ``sigmoid``, or
        ``label_weight`` that is not a finite non-negative 2-d array.

    Notes
    -----
    The weights are buffers, so ``loss.to(device)`` moves them with the module.
    """

    weight: torch.Tensor | None  # buffers (registered in __init__; None when not given)
    pos_weight: torch.Tensor | None
    label_weight: torch.Tensor | None

    def __init__(
        self,
        activation: str = "sigmoid",
        weight: np.ndarray | torch.Tensor | None = None,
        pos_weight: np.ndarray | torch.Tensor | None = None,
        label_weight: np.ndarray | torch.Tensor | None = None,
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
        if label_weight is not None:
            lw = np.asarray(label_weight, dtype=np.float64)
            if lw.ndim != 2 or not np.isfinite(lw).all() or (lw < 0).any():
                raise SettingsError("label_weight must be a finite, non-negative (N, K) array")
        self.activation = activation
        self.register_buffer("weight", _as_tensor(weight))
        self.register_buffer("pos_weight", _as_tensor(pos_weight))
        self.register_buffer("label_weight", _as_tensor(label_weight))

    @property
    def per_row(self) -> bool:
        """Whether the loop must pass the batch's row indices (per-label weights)."""
        return self.label_weight is not None

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss of a batch: logits (B, K), 0/1 float targets (B, K) -> scalar.

        ``rows`` (B,) are the dataset rows of the batch; needed (and only used) with
        ``label_weight``.
        """
        weight = self.weight
        if self.label_weight is not None:
            if rows is None:
                raise ValueError("TrainLoss with label_weight needs the batch's rows")
            per_label = self.label_weight[rows.to(self.label_weight.device)]
            weight = per_label if weight is None else per_label * weight
        if self.pos_weight is not None:
            return F.binary_cross_entropy_with_logits(
                logits.float(), targets, weight=weight, pos_weight=self.pos_weight
            )
        return OUTPUTS[self.activation].loss(logits, targets, weight)

    def extra_repr(self) -> str:
        return (
            f"activation={self.activation!r}, weighted={self.weight is not None}, "
            f"pos_weighted={self.pos_weight is not None}, "
            f"label_weighted={self.label_weight is not None}"
        )


def training_loss(
    activation: str = "sigmoid",
    weight: np.ndarray | torch.Tensor | None = None,
    pos_weight: np.ndarray | torch.Tensor | None = None,
    label_weight: np.ndarray | torch.Tensor | None = None,
) -> TrainLoss:
    """The loss :func:`~labelaudit.train.loop.train_fold` trains a head with.

    Parameters
    ----------
    activation
        ``"sigmoid"``, ``"relu"`` or ``"tanh"``.
    weight, pos_weight
        Optional per-class weights (K,); see :class:`TrainLoss`.
    label_weight
        Optional per-label weights (N, K) of soft cleaning; see :class:`TrainLoss`.

    Returns
    -------
    TrainLoss
    """
    return TrainLoss(activation, weight=weight, pos_weight=pos_weight, label_weight=label_weight)
