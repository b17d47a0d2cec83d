"""``mode="probe"``: frozen pretrained embeddings + K-fold logistic regression.

Each image is embedded once by the frozen backbone; for every fold a one-vs-rest
logistic regression is fitted on the standardised embeddings of the other folds
and predicts the held-out fold. The quick audit confident-learning practitioners
use: seconds instead of minutes, at the price of features that were never
adapted to microscopy.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from labelaudit.data.parallel import available_cores
from labelaudit.train.backbones import LabelModel
from labelaudit.train.folds import fold_indices
from labelaudit.train.loop import Runtime, predict


def embed_all(
    model: LabelModel, images: np.ndarray, batch_size: int, runtime: Runtime, tta: bool = False
) -> np.ndarray:
    """Pooled backbone features of every image, (N, D) float32 (frozen, eval mode)."""
    model = model.to(runtime.device)
    _, emb, _ = predict(model, images, np.arange(images.shape[0]), batch_size, runtime, tta=tta)
    return emb


def fit_predict_fold(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    c: float = 1.0,
    seed: int = 0,
    n_jobs: int | None = None,
) -> np.ndarray:
    """One-vs-rest logistic regression on standardised features; (n_test, K) probabilities.

    A class with a single label value in the training part gets that constant
    (smoothed) rate instead of a fitted model. The K classes are fitted on
    ``n_jobs`` threads (default: the usable cores), each with a single-threaded
    BLAS: the solver's products on a tall, narrow matrix gain nothing from BLAS
    threads, and classes side by side use the cores fully (``benchmarks/
    probe_parallel.py``). Every class's model is the same as fitted alone.
    """
    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    out = np.empty((len(test_x), train_y.shape[1]), dtype=np.float32)

    def one_class(k: int) -> np.ndarray:
        y = train_y[:, k].astype(int)
        if y.min() == y.max():
            return np.full(len(test_x), (y.sum() + 0.5) / (len(y) + 1.0))
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        return clf.fit(a, y).predict_proba(b)[:, 1]

    workers = max(1, min(n_jobs or available_cores(), train_y.shape[1]))
    # The filter is set once here: warnings.catch_warnings is not thread-safe.
    with (
        warnings.catch_warnings(),
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(workers) as pool,
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k, column in enumerate(pool.map(one_class, range(train_y.shape[1]))):
            out[:, k] = column
    return out


def probe_oof(
    embeddings: np.ndarray, labels: np.ndarray, fold_of: np.ndarray, c: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold probabilities from K-fold logistic regression on fixed embeddings.

    Parameters
    ----------
    embeddings
        (N, D) features.
    labels
        Bool (N, K).
    fold_of
        (N,) fold of each image (0-based).
    c
        Inverse regularisation strength.
    seed
        Random state of the solver.

    Returns
    -------
    (probs (N, K) float32, per-fold provenance dicts ``{fold, train_idx, held_idx}``)
    """
    y = np.asarray(labels, dtype=bool)
    probs = np.full(y.shape, np.nan, dtype=np.float32)
    provenance = []
    for k in range(int(fold_of.max()) + 1):
        train, held = fold_indices(fold_of, k)
        probs[held] = fit_predict_fold(embeddings[train], y[train], embeddings[held], c, seed)
        provenance.append({"fold": k, "train_idx": train, "held_idx": held})
    return probs, provenance
