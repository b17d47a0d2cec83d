"""Training one fold and predicting its held-out images.

Early stopping follows the issue: the held-out fold's own loss picks the best
epoch. That leaks one scalar decision per fold (which epoch) into the
out-of-fold predictions; it never lets a model see a held-out image's pixels or
labels in training. An inner validation split would avoid even that, at the
cost of ~10 % less training data; with ``patience=0`` and a fixed number of
epochs (the ``demo`` preset) the choice of epoch is still by held-out loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from labelaudit.core.config import TrainSettings
from labelaudit.train import ddp
from labelaudit.train.backbones import LabelModel, Predictor
from labelaudit.train.batches import TTA_CODES, augment, dihedral, make_loader, set_epoch
from labelaudit.train.ddp import DistInfo
from labelaudit.train.loss import LossFn, training_loss


@dataclass
class Runtime:
    """Where and how tensors are computed (derived from settings and the machine)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    workers: int = 0
    pin_memory: bool = False
    info: DistInfo = field(default_factory=DistInfo)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def pick_device(setting: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` -> CUDA (this process's local rank under DDP) when available, else CPU."""
    info = info or DistInfo()
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank)
        return torch.device("cpu")
    dev = torch.device(setting)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", info.local_rank)
    return dev


def make_runtime(settings: TrainSettings, info: DistInfo | None = None) -> Runtime:
    """Choose device, precision, memory format and loader workers for ``settings``."""
    info = info or DistInfo()
    device = pick_device(settings.device, info)
    if device.type != "cuda":
        # CPU: bf16 autocast is slower than fp32 on most CPUs; no workers needed
        # because a batch is one memcpy out of the cache. channels_last helps here
        # too (oneDNN depthwise convolutions: ~1.3x on EfficientNet-Lite0 at 64 px).
        return Runtime(device=device, channels_last=settings.channels_last, info=info)
    amp = None
    if settings.amp:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(
        device=device,
        amp_dtype=amp,
        channels_last=settings.channels_last,
        workers=settings.num_workers,
        pin_memory=True,
        info=info,
    )


@dataclass
class FoldOutput:
    """What training one fold produced.

    ``probs`` and ``embeddings`` are rows of ``held_idx`` (sorted), predicted by
    the best epoch's model, which was trained on ``train_idx`` only.
    """

    train_idx: np.ndarray
    held_idx: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    best_epoch: int
    best_loss: float
    history: list[dict]
    state_dict: dict[str, torch.Tensor]
    seconds: float


#: Progress callback: ``(event, info)`` with event ``"start"``, ``"step"``,
#: ``"epoch"`` or ``"done"``.
ProgressFn = Callable[[str, dict], None]


@torch.no_grad()
def predict(
    model: Predictor,
    images: np.ndarray,
    indices: np.ndarray,
    batch_size: int,
    runtime: Runtime,
    tta: bool = False,
    labels: np.ndarray | None = None,
    loss_fn: LossFn | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and embeddings of ``images[indices]`` (rows in ``indices`` order).

    Parameters
    ----------
    model
        An unwrapped :class:`LabelModel` (or an ensemble of them) on ``runtime.device``.
    images, indices
        The uint8 cache and the rows to predict (any order; output follows it).
    batch_size
        Inference batch size.
    runtime
        Device and precision.
    tta
        Average probabilities and embeddings over the flip views
        (:data:`~labelaudit.train.batches.TTA_CODES`).
    labels
        When given, the mean loss (without TTA) is returned too.
    loss_fn
        The loss of that mean; by default the head's own unweighted loss
        (:func:`~labelaudit.train.loss.training_loss` of its activation).

    Returns
    -------
    (probs (n, K) float32, embeddings (n, D) float32, mean loss or nan)
    """
    model.eval()
    if labels is not None and loss_fn is None:
        loss_fn = training_loss(model.activation).to(runtime.device)
    indices = np.asarray(indices, dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    lab = labels if labels is not None else np.zeros((images.shape[0], 1), dtype=np.float32)
    loader = make_loader(
        images,
        lab,
        sorted_idx,
        batch_size,
        train=False,
        seed=0,
        info=DistInfo(),
        workers=runtime.workers,
        pin_memory=runtime.pin_memory,
    )
    probs, feats = [], []
    loss_sum, count = 0.0, 0
    views = TTA_CODES if tta else (0,)
    for x, y, _ in loader:
        x = runtime.to_device(x)
        p_acc: torch.Tensor | float = 0.0
        f_acc: torch.Tensor | float = 0.0
        for code in views:
            with runtime.autocast():
                logits, f = model(dihedral(x, code), with_features=True)
            if code == 0 and labels is not None and loss_fn is not None:  # set when labels are
                loss = loss_fn(logits, y.to(runtime.device))
                loss_sum += float(loss) * len(y)
                count += len(y)
            p_acc = p_acc + model.to_probs(logits)
            f_acc = f_acc + f.float()
        # views is never empty, so both sums are tensors here
        assert isinstance(p_acc, torch.Tensor) and isinstance(f_acc, torch.Tensor)
        probs.append((p_acc / len(views)).cpu().numpy())
        feats.append((f_acc / len(views)).cpu().numpy())
    k = model.head.out_features
    p = np.concatenate(probs) if probs else np.zeros((0, k), np.float32)
    e = np.concatenate(feats) if feats else np.zeros((0, model.num_features), np.float32)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    mean_loss = loss_sum / count if count else float("nan")
    return p[inverse].astype(np.float32), e[inverse].astype(np.float32), mean_loss


def _held_out_loss(
    model: LabelModel,
    images: np.ndarray,
    labels: np.ndarray,
    held: np.ndarray,
    batch_size: int,
    runtime: Runtime,
) -> float:
    """Mean loss on the held-out fold; each process evaluates a shard, sums are shared."""
    mine = ddp.shard(held, runtime.info)
    total, n = 0.0, 0.0
    if len(mine):
        _, _, loss = predict(model, images, mine, batch_size, runtime, labels=labels)
        total, n = loss * len(mine), float(len(mine))
    total, n = ddp.all_reduce_sum([total, n], runtime.info, runtime.device)
    return total / n if n else float("nan")


@dataclass
class _Trainer:
    """What one fold's optimisation steps need, built once per fold."""

    net: torch.nn.Module
    optimiser: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: LossFn
    loader: Any
    gen: torch.Generator
    runtime: Runtime
    say: ProgressFn


def _make_trainer(
    model: LabelModel,
    images: np.ndarray,
    labels_f: np.ndarray,
    train_idx: np.ndarray,
    settings: TrainSettings,
    runtime: Runtime,
    seed: int,
    loss: LossFn | None,
    say: ProgressFn,
) -> _Trainer:
    """Wrap the model (DDP), and build its optimiser, loss, loader and schedule."""
    info = runtime.info
    warmup = min(settings.warmup_epochs, settings.epochs)
    net = ddp.wrap(model, info, runtime.device, find_unused=warmup > 0)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scaler = torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16)
    loss_fn = loss if loss is not None else training_loss(model.activation)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(runtime.device)
    loader = make_loader(
        images,
        labels_f,
        train_idx,
        settings.batch_size,
        train=True,
        seed=seed,
        info=info,
        workers=runtime.workers,
        pin_memory=runtime.pin_memory,
    )
    gen = torch.Generator().manual_seed(seed * 1000 + info.rank)
    scheduler = None
    if settings.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=max(settings.epochs * len(loader), 1)
        )
    return _Trainer(net, optimiser, scaler, scheduler, loss_fn, loader, gen, runtime, say)


def _train_epoch(tr: _Trainer, epoch: int, frozen: bool, t0: float) -> tuple[float, int]:
    """One pass over the training images: (mean training loss, images seen)."""
    runtime = tr.runtime
    set_epoch(tr.loader, epoch)
    tr.net.train()
    loss_sum, seen = 0.0, 0
    per_row = getattr(tr.loss_fn, "per_row", False)
    for step, (x, y, rows) in enumerate(tr.loader):
        x = augment(runtime.to_device(x), tr.gen)
        y = y.to(runtime.device, non_blocking=runtime.pin_memory)
        with runtime.autocast():
            logits = tr.net(x, frozen=frozen)
        batch_loss = tr.loss_fn(logits, y, rows) if per_row else tr.loss_fn(logits, y)
        tr.optimiser.zero_grad(set_to_none=True)
        tr.scaler.scale(batch_loss).backward()
        tr.scaler.step(tr.optimiser)
        tr.scaler.update()
        if tr.scheduler is not None:
            tr.scheduler.step()
        loss_sum += float(batch_loss.detach()) * len(y)
        seen += len(y)
        elapsed = time.perf_counter() - t0
        tr.say(
            "step",
            {
                "epoch": epoch + 1,
                "step": step + 1,
                "loss": loss_sum / seen,
                "rate": seen * runtime.info.world / max(elapsed, 1e-9),
            },
        )
    return loss_sum / max(seen, 1), seen


@dataclass
class _BestEpoch:
    """The best epoch so far by held-out loss, its weights, and epochs since."""

    loss: float = math.inf
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None
    stale: int = 0

    def update(self, epoch: int, held_loss: float, model: torch.nn.Module) -> None:
        """Keep ``model``'s weights if ``held_loss`` improved (or nothing is kept yet)."""
        improved = math.isfinite(held_loss) and held_loss < self.loss
        if improved or self.state is None:
            self.loss = held_loss if math.isfinite(held_loss) else self.loss
            self.epoch = epoch
            self.state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            self.stale = 0
        else:
            self.stale += 1


def _predict_held_out(
    model: LabelModel,
    images: np.ndarray,
    held_idx: np.ndarray,
    settings: TrainSettings,
    runtime: Runtime,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and embeddings of the held-out fold, each process predicting a shard."""
    info = runtime.info
    mine = ddp.shard(held_idx, info)
    probs, emb, _ = predict(model, images, mine, settings.batch_size, runtime, tta=settings.tta)
    parts = ddp.all_gather((mine, probs, emb), info)
    rows = np.concatenate([p[0] for p in parts])
    if not np.array_equal(rows, np.asarray(held_idx)):
        raise AssertionError("gathered predictions do not match the held-out fold")
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def train_fold(
    model: LabelModel,
    images: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    settings: TrainSettings,
    runtime: Runtime,
    *,
    seed: int,
    progress: ProgressFn | None = None,
    loss: LossFn | None = None,
) -> FoldOutput:
    """Train on ``train_idx``, keep the best epoch by held-out loss, predict ``held_idx``.

    Parameters
    ----------
    model
        A fresh :class:`LabelModel` (on CPU or the device).
    images, labels
        The whole uint8 cache (N, C, S, S) and bool labels (N, K).
    train_idx, held_idx
        Disjoint row indices (checked).
    settings
        ``lr``, ``epochs``, ``batch_size``, ``patience``, ``warmup_epochs``, ``tta``.
    runtime
        From :func:`make_runtime`.
    seed
        Seeds shuffling and augmentation (the caller mixes in the fold number).
    progress
        Called with progress events (rank 0 only shows them).
    loss
        The training loss, ``loss(logits, targets) -> scalar`` (a
        :class:`~labelaudit.train.loss.TrainLoss` or any callable; a module is moved
        to the device). Default: the head's unweighted loss. Early stopping always
        uses the head's unweighted loss on the held-out fold, whatever the
        training loss weights.

    Returns
    -------
    FoldOutput
    """
    if np.intersect1d(train_idx, held_idx).size:
        raise AssertionError("a held-out image is in its own fold's training set")
    start = time.perf_counter()
    say = progress or (lambda _e, _i: None)
    labels_f = np.asarray(labels, dtype=np.float32)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainer = _make_trainer(model, images, labels_f, train_idx, settings, runtime, seed, loss, say)
    say("start", {"epochs": settings.epochs, "steps": len(trainer.loader)})
    best, history = _fit(trainer, model, images, labels_f, held_idx, settings)
    if best.state is None:  # settings.epochs >= 1 (validated): the first epoch is always kept
        raise AssertionError("no epoch was trained")
    model.load_state_dict(best.state)
    probs, emb = _predict_held_out(model, images, held_idx, settings, runtime)
    say("done", {"best_epoch": best.epoch, "held_out_loss": best.loss})
    return FoldOutput(
        train_idx=np.asarray(train_idx),
        held_idx=np.asarray(held_idx),
        probs=probs,
        embeddings=emb,
        best_epoch=best.epoch,
        best_loss=best.loss,
        history=history,
        state_dict=best.state,
        seconds=time.perf_counter() - start,
    )


def _fit(
    trainer: _Trainer,
    model: LabelModel,
    images: np.ndarray,
    labels_f: np.ndarray,
    held_idx: np.ndarray,
    settings: TrainSettings,
) -> tuple[_BestEpoch, list[dict]]:
    """Train epoch after epoch, stopping early on the held-out loss; the best epoch and history.

    The backbone stays frozen for the warm-up epochs; patience counts only after them.
    """
    runtime, say = trainer.runtime, trainer.say
    warmup = min(settings.warmup_epochs, settings.epochs)
    best = _BestEpoch()
    history: list[dict] = []
    for epoch in range(settings.epochs):
        t0 = time.perf_counter()
        frozen = epoch < warmup
        train_loss, seen = _train_epoch(trainer, epoch, frozen, t0)
        train_seconds = time.perf_counter() - t0
        held_loss = _held_out_loss(model, images, labels_f, held_idx, settings.batch_size, runtime)
        seconds = time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "held_out_loss": held_loss,
                "frozen_backbone": frozen,
                "seconds": round(seconds, 3),
                "train_seconds": round(train_seconds, 3),
                # training throughput only (the held-out evaluation is timed in "seconds")
                "images_per_s": round(seen * runtime.info.world / max(train_seconds, 1e-9), 2),
            }
        )
        best.update(epoch + 1, held_loss, model)
        say(
            "epoch",
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "held_out_loss": held_loss,
                "best_epoch": best.epoch,
            },
        )
        if settings.patience and best.stale >= settings.patience and epoch + 1 > warmup:
            break
    return best, history
