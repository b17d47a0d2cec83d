"""Model checkpoints: one file format for cross-validation folds, ``retrain`` and ``predict``.

A checkpoint is a ``torch.save`` of plain data, loadable with
``torch.load(weights_only=True)``::

    {"format": "labelaudit-model",
     "state_dict": {name: tensor},            # the model (an ensemble's first member)
     "extra_state_dicts": [{name: tensor}],   # an ensemble's other members, if any
     "meta": {...}}                           # JSON-able: see below

``meta`` always has ``format``, ``version``, ``backbone``, ``in_chans``,
``num_classes``, ``class_names``, ``activation`` and ``image_size``; a retrained
model adds its ``thresholds``, ``members``, the dataset notation (``class_tokens``,
``label_sep``, ``layout``, ``channels``) and how it was trained; a fold adds
``fold`` and ``key``.

Fold files (``RUN/folds/fold_K/model.pt``) also repeat the descriptive keys at the
top level, as earlier versions wrote them (``{"state_dict": ..., "backbone": ...}``),
so scripts that read those keys keep working; :func:`read_checkpoint` reads both
that earlier layout and this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labelaudit.core.config import ACTIVATIONS
from labelaudit.core.errors import SettingsError
from labelaudit.core.io import atomic_path
from labelaudit.core.userfiles import MAX_ARRAY_BYTES, check_user_file
from labelaudit.train.backbones import LabelModel, build_model

MODEL_FORMAT = "labelaudit-model"
MODEL_VERSION = 1
#: What every checkpoint's metadata must say to rebuild its model.
REQUIRED_META = ("backbone", "in_chans", "num_classes")
#: The keys a fold file of earlier versions carried next to its state dict.
FOLD_META = ("backbone", "in_chans", "num_classes", "class_names", "activation", "image_size")


@dataclass
class Checkpoint:
    """A checkpoint's contents: one state dict per ensemble member, and its metadata."""

    states: list[dict[str, torch.Tensor]]
    meta: dict


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
    meta: dict,
    *,
    flat_keys: tuple[str, ...] = (),
) -> None:
    """Write ``{"format", "state_dict", "meta"}`` (+ ``extra_state_dicts``) atomically.

    Parameters
    ----------
    path
        The file to write (replaced atomically).
    state_dict
        One model's tensors, or a list (an ensemble): the first is stored as
        ``state_dict`` (so a reader that knows only single models still gets a
        working member), the rest as ``extra_state_dicts``.
    meta
        Plain metadata; round-tripped through JSON first, so the file always loads
        with ``torch.load(weights_only=True)``. ``format`` and ``version`` are added
        when absent.
    flat_keys
        Metadata keys repeated at the top level (the fold files' earlier layout).
    """
    plain = json.loads(json.dumps(meta, default=str))
    plain.setdefault("format", MODEL_FORMAT)
    plain.setdefault("version", MODEL_VERSION)
    states = state_dict if isinstance(state_dict, list) else [state_dict]
    tensors = [{k: v.detach().cpu().contiguous() for k, v in s.items()} for s in states]
    payload = {"format": MODEL_FORMAT, "state_dict": tensors[0], "meta": plain}
    if len(tensors) > 1:
        payload["extra_state_dicts"] = tensors[1:]
    payload.update({k: plain[k] for k in flat_keys if k in plain})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _is_old_fold(raw: dict) -> bool:
    """A fold file of earlier versions: a state dict next to flat metadata, no format."""
    return "format" not in raw and "state_dict" in raw and all(k in raw for k in REQUIRED_META)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint's tensors and metadata (no model is built).

    Raises
    ------
    SettingsError
        Missing file, a file that is not a labelaudit model (or not loadable with
        ``weights_only=True``), a newer format, or metadata without what is needed
        to rebuild the model.
    """
    path = Path(path)
    check_user_file(path, "the model file", max_bytes=MAX_ARRAY_BYTES)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # pickle/zip errors come in many types
        # PyTorch's own text advises weights_only=False, which would run the file's
        # code: never shown. labelaudit models hold tensors and plain metadata only.
        raise SettingsError(
            f"model file {path} is not a labelaudit model (not a checkpoint of tensors that "
            "loads safely; write one with `labelaudit retrain`)"
        ) from None
    if isinstance(raw, dict) and _is_old_fold(raw):
        meta = {k: v for k, v in raw.items() if k != "state_dict"}
        meta.update({"format": MODEL_FORMAT, "version": MODEL_VERSION})
        return Checkpoint([raw["state_dict"]], meta)
    if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT or "meta" not in raw:
        raise SettingsError(
            f"model file {path} is not a labelaudit model (write one with `labelaudit retrain`)"
        )
    meta = raw["meta"]
    if not isinstance(meta, dict):
        raise SettingsError(f"model file {path}: its metadata is not a mapping")
    if int(meta.get("version", 0)) > MODEL_VERSION:
        raise SettingsError(
            f"model file {path} is from a newer labelaudit (format {meta['version']})"
        )
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise SettingsError(f"model file {path}: its metadata lacks {', '.join(missing)}")
    return Checkpoint([raw["state_dict"], *raw.get("extra_state_dicts", [])], meta)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[LabelModel | EnsembleModel, dict]:
    """Load a saved model: ``(model in eval mode on device, metadata)``.

    A fold file gives its :class:`LabelModel`, a retrained ensemble an
    :class:`EnsembleModel`.

    Raises
    ------
    SettingsError
        See :func:`read_checkpoint`; also weights that do not fit the metadata.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt.meta
    activation = meta.get("activation", "sigmoid")
    if activation not in ACTIVATIONS:  # read back: a forged name is refused before use
        raise SettingsError(
            f"model file {path}: invalid metadata: activation {activation!r} is not one of "
            f"{', '.join(ACTIVATIONS)}"
        )
    try:
        model = ensemble_from_states(
            ckpt.states,
            meta["backbone"],
            int(meta["in_chans"]),
            int(meta["num_classes"]),
            meta.get("activation", "sigmoid"),
        )
    except RuntimeError as exc:  # PyTorch lists every key: the first line says enough
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingsError(
            f"model file {path}: weights do not fit its metadata ({first})"
        ) from None
    model.eval()
    return model.to(device), meta


class EnsembleModel(torch.nn.Module):
    """Several :class:`LabelModel` members that answer as one: averaged logits.

    Averaging logits (rather than probabilities) keeps one forward signature, so
    the ensemble goes everywhere a single model does (prediction with flip TTA,
    the loss of its activation); the embedding is the members' mean embedding.
    """

    def __init__(self, members: list[LabelModel]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def _first(self) -> LabelModel:
        """The first member: its head, activation and loss stand for the ensemble's."""
        first = self.members[0]
        if not isinstance(first, LabelModel):
            raise TypeError(f"an ensemble member is a {type(first).__name__}, not a LabelModel")
        return first

    @property
    def head(self) -> torch.nn.Linear:
        return self._first().head

    @property
    def num_features(self) -> int:
        return self._first().num_features

    @property
    def activation(self) -> str:
        return self._first().activation

    def forward(
        self, x: torch.Tensor, frozen: bool = False, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x, frozen=frozen, with_features=True) for m in self.members]
        logits = torch.stack([o[0].float() for o in outs]).mean(0)
        feats = torch.stack([o[1].float() for o in outs]).mean(0)
        return (logits, feats) if with_features else logits

    def to_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return self._first().to_probs(logits)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._first().loss(logits, targets, weight)


def ensemble_from_states(
    states: list[dict[str, torch.Tensor]],
    backbone: str,
    in_chans: int,
    num_classes: int,
    activation: str = "sigmoid",
) -> LabelModel | EnsembleModel:
    """Rebuild a saved model (one state dict) or ensemble (several), strictly.

    Raises
    ------
    RuntimeError
        A state dict does not fit the architecture.
    """
    stats = np.zeros((2, in_chans), dtype=np.float32)
    stats[1] = 1.0  # placeholders; the real statistics are buffers in the state dict
    models = []
    for state in states:
        model = build_model(backbone, in_chans, num_classes, stats, activation=activation)
        model.load_state_dict(state, strict=True)
        models.append(model)
    return models[0] if len(models) == 1 else EnsembleModel(models)
