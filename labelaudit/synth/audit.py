"""Structured random audit inputs with known problems, for tests and benchmarks.

Not images: the arrays a scan would produce. True labels come from class priors;
given labels are the true ones with some images' labels corrupted (``missing``,
``extra``, ``swap``); probabilities are a noisy function of the *true* labels (a
model that learned the task despite the noise); embeddings are the sum of the true
classes' centroids plus noise; the protein channel's mean intensity is lognormal
around a per-class level. Image faults (``dim``, ``saturated``, ``artifact``) move
intensities and embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelaudit.detect.base import AuditInputs


@dataclass
class SyntheticAudit:
    """Inputs plus the truth behind them."""

    inputs: AuditInputs
    true_labels: np.ndarray
    noise: list[str]  # per image: "none" or ";"-joined noise types

    def truth_frame(self) -> pd.DataFrame:
        """The truth table in ``labelaudit synth``'s ``truth.csv`` layout."""
        fmt = self.inputs.format_labels
        return pd.DataFrame(
            {
                "ID": self.inputs.ids,
                "true_label": fmt(self.true_labels),
                "given_label": fmt(self.inputs.labels),
                "noise": self.noise,
            }
        )


def make_audit(
    n: int = 2000,
    k: int = 19,
    d: int = 64,
    *,
    label_noise: float = 0.05,
    image_noise: float = 0.02,
    seed: int = 0,
) -> SyntheticAudit:
    """Generate audit inputs with ``label_noise`` and ``image_noise`` fractions of problems.

    Parameters
    ----------
    n, k, d
        Images, classes, embedding dimensions.
    label_noise
        Fraction of images whose given labels are corrupted.
    image_noise
        Fraction of images with an imaging fault.
    seed
        Random seed.
    """
    rng = np.random.default_rng(seed)
    prior = np.sort(rng.uniform(0.02, 0.3, k))[::-1]
    true = rng.random((n, k)) < prior
    empty = ~true.any(axis=1)
    true[np.flatnonzero(empty), rng.choice(k, int(empty.sum()), p=prior / prior.sum())] = True

    given = true.copy()
    noise = _corrupt_labels(given, label_noise, rng)

    # A model that learned the true labels: confident but imperfect sigmoid outputs.
    logits = np.where(true, 2.5, -3.0) + rng.normal(0.0, 1.2, (n, k))
    probs = 1.0 / (1.0 + np.exp(-logits))

    centroids = rng.normal(0.0, 1.0, (k, d)).astype(np.float32)
    emb = true.astype(np.float32) @ centroids
    emb += rng.standard_normal((n, d), dtype=np.float32)
    level = rng.normal(np.log(0.02), 0.5, k)  # per-class mean green intensity (log)
    log_x = (true * level).sum(axis=1) / true.sum(axis=1) + rng.normal(0.0, 0.25, n)

    n_image = int(round(image_noise * n))
    for i in rng.choice(n, n_image, replace=False):
        kind = ("dim", "saturated", "artifact")[rng.integers(3)]
        if kind == "dim":
            log_x[i] -= 3.0
        elif kind == "saturated":
            log_x[i] += 2.0
        emb[i] += rng.normal(0.0, 6.0, d).astype(np.float32)  # off the data manifold
        noise[i].append(kind)

    green = np.clip(np.exp(log_x), 0.0, 1.0)
    stats = pd.DataFrame(
        {
            "green_mean": green,
            "green_std": green * 0.8,
            "red_mean": rng.lognormal(np.log(0.05), 0.3, n),
        }
    )
    inputs = AuditInputs(
        ids=[f"img{i:06d}" for i in range(n)],
        class_names=[f"class{c}" for c in range(k)],
        class_tokens=[str(c) for c in range(k)],
        label_sep="|",
        labels=given,
        probs=probs,
        embeddings=emb,
        stats=stats,
    )
    return SyntheticAudit(inputs, true, [";".join(s) or "none" for s in noise])


def _corrupt_labels(
    given: np.ndarray, label_noise: float, rng: np.random.Generator
) -> list[list[str]]:
    """Corrupt ``round(label_noise * n)`` rows of ``given`` in place (``missing``,
    ``extra`` or ``swap``); returns each image's list of injected noise kinds."""
    n = len(given)
    noise: list[list[str]] = [[] for _ in range(n)]
    n_label = int(round(label_noise * n))
    for i in rng.choice(n, n_label, replace=False):
        kind = ("missing", "extra", "swap")[rng.integers(3)]
        on, off = np.flatnonzero(given[i]), np.flatnonzero(~given[i])
        if kind == "missing" and len(on) < 2:
            kind = "swap"  # never leave an image with no label at all
        if kind in ("missing", "swap") and len(on):
            given[i, rng.choice(on)] = False
        if kind in ("extra", "swap") and len(off):
            given[i, rng.choice(off)] = True
        noise[i].append(kind)
    return noise
