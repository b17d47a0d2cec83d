"""True label sets drawn from the HPA 2021 statistics, and label noise.

The GIVEN labels of a noisy field are its true ones corrupted by :func:`inject_label_noise`
(``missing``, ``extra``, ``swap``; the partners of a swap are :data:`CONFUSIONS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labelaudit.data.hpa_stats import (
    HPA2021_CLASS_COUNTS,
    HPA2021_LABELS_PER_FIELD,
    HPA2021_N_FIELDS,
    NEGATIVE,
)

LABEL_NOISE_TYPES: tuple[str, ...] = ("missing", "extra", "swap")

#: Minimum share of fields carrying each class. The real data has classes at 0.2 %
#: (Mitotic spindle, Negative) and 1-4 % (Aggresome, Vesicles, ER, Microtubules); at
#: 5 % a 400-field dataset has ~20 examples of every class, ~16 per training split of
#: 5-fold cross-validation, the least a small CNN needs to learn a pattern (at 3 %,
#: rare classes were barely learned and their clean fields looked mislabelled).
#: The other classes keep their real order and roughly their real frequency.
CLASS_FLOOR: float = 0.05

#: Plausible confusions between HPA 2021 classes (similar-looking patterns), used for
#: ``swap`` (replace a label by a partner) and half of the ``extra`` labels.
#: Negative (18) is never a partner: it is never combined with another class.
CONFUSIONS: dict[int, tuple[int, ...]] = {
    0: (4, 5, 16),  # nucleoplasm <-> nuclear speckles, nuclear bodies, cytosol
    1: (0, 6),  # nuclear membrane <-> nucleoplasm, ER
    2: (3, 5),  # nucleoli <-> fibrillar center, nuclear bodies
    3: (2, 5),  # fibrillar center <-> nucleoli, nuclear bodies
    4: (0, 5),  # speckles <-> nucleoplasm, nuclear bodies
    5: (4, 0, 3),  # nuclear bodies <-> speckles, nucleoplasm, fibrillar center
    6: (14, 16, 1),  # ER <-> mitochondria, cytosol, nuclear membrane
    7: (17, 15, 12),  # Golgi <-> vesicles, aggresome, centrosome
    8: (10, 9),  # intermediate filaments <-> microtubules, actin
    9: (8, 13),  # actin <-> intermediate filaments, plasma membrane
    10: (8, 11),  # microtubules <-> intermediate filaments, mitotic spindle
    11: (10, 12),  # mitotic spindle <-> microtubules, centrosome
    12: (7, 5),  # centrosome <-> Golgi, nuclear bodies
    13: (9, 16),  # plasma membrane <-> actin, cytosol
    14: (6, 17),  # mitochondria <-> ER, vesicles
    15: (7, 17),  # aggresome <-> Golgi, vesicles
    16: (0, 17, 6),  # cytosol <-> nucleoplasm, vesicles, ER
    17: (16, 7, 14),  # vesicles <-> cytosol, Golgi, mitochondria
    18: (16, 0),  # negative (faint) <-> cytosol, nucleoplasm
}


def class_probabilities(floor: float = CLASS_FLOOR) -> np.ndarray:
    """Per-label draw weights of the 18 non-negative classes, with a frequency floor.

    The real per-class share of label slots is raised to ``floor / mean labels per
    field`` (then renormalised, a few rounds) so that every class is carried by roughly
    at least ``floor`` of the fields.

    Parameters
    ----------
    floor
        Minimum share of fields per class, 0 for the raw HPA 2021 frequencies.

    Returns
    -------
    numpy.ndarray
        Probabilities of classes 0..17 (float64, sums to 1).
    """
    counts = np.asarray(HPA2021_CLASS_COUNTS[:NEGATIVE], dtype=np.float64)
    p = counts / counts.sum()
    per_field = np.asarray(HPA2021_LABELS_PER_FIELD, dtype=np.float64)
    per_field[0] -= HPA2021_CLASS_COUNTS[NEGATIVE]  # negatives are single-label
    mean_k = float((np.arange(1, len(per_field) + 1) * per_field).sum() / per_field.sum())
    w_min = floor / mean_k
    for _ in range(5):
        p = np.maximum(p, w_min)
        p = p / p.sum()
    return p


def sample_label_sets(
    n: int, rng: np.random.Generator, floor: float = CLASS_FLOOR
) -> list[tuple[int, ...]]:
    """Draw ``n`` true label sets following the HPA 2021 label statistics.

    A field is Negative (18, alone: the real data never combines it) with probability
    ``max(34 / 21806, floor)``. Otherwise its number of labels follows the real
    distribution of 1..5 labels per field, and the classes are drawn without replacement
    with :func:`class_probabilities` (real frequencies, rare classes raised to
    ``floor``).

    Parameters
    ----------
    n
        Number of fields.
    rng
        Random generator.
    floor
        Minimum share of fields per class (see :data:`CLASS_FLOOR`).

    Returns
    -------
    list of tuple of int
        Sorted class ids of each field.
    """
    p_neg = max(HPA2021_CLASS_COUNTS[NEGATIVE] / HPA2021_N_FIELDS, floor)
    per_field = np.asarray(HPA2021_LABELS_PER_FIELD, dtype=np.float64)
    per_field[0] -= HPA2021_CLASS_COUNTS[NEGATIVE]
    k_prob = per_field / per_field.sum()
    p = class_probabilities(floor)
    negative = rng.random(n) < p_neg
    ks = rng.choice(np.arange(1, len(k_prob) + 1), size=n, p=k_prob)
    out: list[tuple[int, ...]] = []
    for is_neg, k in zip(negative, ks, strict=True):
        if is_neg:
            out.append((NEGATIVE,))
        else:
            picked = rng.choice(NEGATIVE, size=int(k), replace=False, p=p)
            out.append(tuple(sorted(int(c) for c in picked)))
    return out


def inject_label_noise(
    labels: Sequence[int], rng: np.random.Generator, kind: str | None = None
) -> tuple[tuple[int, ...], str]:
    """Corrupt one field's labels.

    Parameters
    ----------
    labels
        The true class ids.
    rng
        Random generator.
    kind
        ``missing``, ``extra`` or ``swap``; ``None`` draws one among those possible.
        ``missing`` needs two or more labels and ``extra`` a non-Negative field; an
        impossible request falls back to another kind.

    Returns
    -------
    given, kind
        The sorted, never empty, corrupted labels (always different from ``labels``) and
        the kind of noise actually injected.
    """
    true = sorted(set(int(c) for c in labels))
    possible = ["swap"]
    if len(true) >= 2:
        possible.insert(0, "missing")
    if NEGATIVE not in true and len(true) < NEGATIVE:
        possible.insert(-1, "extra")
    if kind not in possible:
        kind = str(rng.choice(possible))
    given = set(true)
    if kind == "missing":
        given.remove(int(rng.choice(true)))
    elif kind == "extra":
        partners = sorted({q for c in true for q in CONFUSIONS[c]} - given)
        if partners and rng.random() < 0.5:
            given.add(int(rng.choice(partners)))
        else:
            free = np.array([c for c in range(NEGATIVE) if c not in given])
            w = class_probabilities()[free]
            given.add(int(rng.choice(free, p=w / w.sum())))
    else:  # swap
        options = [(c, q) for c in true for q in CONFUSIONS[c] if q not in given]
        if options:
            c, q = options[int(rng.integers(len(options)))]
        else:  # every partner already present: any other non-negative class
            c = int(rng.choice(true))
            others = [q for q in range(NEGATIVE) if q not in given]
            q = int(rng.choice(others))
        given.remove(c)
        given.add(q)
    return tuple(sorted(given)), kind


def format_label_set(labels: Sequence[int]) -> str:
    """Class ids joined by ``|``, as in ``truth.csv`` and ``train.csv``."""
    return "|".join(str(c) for c in labels)
