"""Robust location and scale (median and MAD): the detectors' and the ranking's z-scores.

Two questions, one function each, named for what they return:

* :func:`robust_center_scale`: the centre and scale of a sample (median and
  ``MAD_TO_SIGMA`` x MAD), which a caller uses to standardise other values (the
  detectors' reference classes);
* :func:`robust_z`: the z-scores of the values themselves against their own bulk
  (the default order's evidence streams).

Their fallbacks where the MAD is 0 differ on purpose (see each) and are kept as
they were measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The MAD of a normal distribution times this is its standard deviation.
MAD_TO_SIGMA = 1.4826


def robust_center_scale(
    values: np.ndarray, upper_tail: Sequence[tuple[float, float]] = ()
) -> tuple[float, float]:
    """Centre and scale of ``values``: the median and ``MAD_TO_SIGMA`` x MAD.

    Non-finite values are ignored. Where the MAD is 0 (most values alike), each
    ``(q, sigmas)`` of ``upper_tail`` in turn gives the scale as the distance of the
    ``q`` quantile from the median over ``sigmas`` (a normal's spread read from the
    upper tail); then the standard deviation.

    Parameters
    ----------
    values : np.ndarray
        The sample.
    upper_tail : sequence of (float, float)
        Quantiles and their distance from the median in sigmas of a normal, tried
        in order where the MAD is 0 (none by default).

    Returns
    -------
    center, scale : float
        Scale 0 means "cannot standardise" (fewer than two values, or no spread
        above round-off); with one value the centre is that value, with none 0.
    """
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return (float(v[0]) if len(v) else 0.0), 0.0
    center = float(np.median(v))
    # Round-off makes the std of identical values ~1e-17, not 0; treat as 0.
    tiny = 1e-9 * max(float(np.abs(v).max()), 1e-12)
    scale = MAD_TO_SIGMA * float(np.median(np.abs(v - center)))
    for q, sigmas in upper_tail:
        if scale > tiny:
            break
        scale = (float(np.quantile(v, q)) - center) / sigmas
    if scale <= tiny:
        scale = float(v.std())
    return center, (scale if scale > tiny else 0.0)


def robust_z(score: np.ndarray) -> np.ndarray:
    """How far each score lies above the bulk of the detector's own scores.

    (score - median) / (1.4826 MAD): the median and MAD describe the images most
    of which are fine (the detector's null), so the z of a real problem is large
    whatever the detector's scale. Falls back to the IQR, then the standard
    deviation, when the MAD is 0 (a score that is constant for most images);
    a constant score gives 0 everywhere. NaN -> 0.

    Parameters
    ----------
    score : np.ndarray
        One detector's scores (NaN where it has none).

    Returns
    -------
    np.ndarray
        The z-scores, shaped like ``score``.
    """
    s = np.asarray(score, dtype=float)
    ok = ~np.isnan(s)
    out = np.zeros(s.shape)
    if not ok.any():
        return out
    v = s[ok]
    med = float(np.median(v))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(v - med)))
    if spread <= 0:
        q75, q25 = np.percentile(v, [75, 25])
        spread = float(q75 - q25) / 1.349 or float(np.std(v))
    if spread > 0:
        out[ok] = (v - med) / spread
    return out
