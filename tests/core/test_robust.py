"""Robust centre/scale and z-scores (labelaudit.core.robust)."""

import numpy as np
import pytest

from labelaudit.core.robust import MAD_TO_SIGMA, robust_center_scale, robust_z


def test_center_scale_of_a_normal_sample_is_its_mean_and_sigma():
    x = np.random.default_rng(0).normal(3.0, 2.0, 20_000)
    center, scale = robust_center_scale(x)
    assert center == pytest.approx(3.0, abs=0.05)
    assert scale == pytest.approx(2.0, rel=0.03)
    assert MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))) == pytest.approx(scale)


def test_center_scale_falls_back_to_the_upper_tail_then_the_std():
    x = np.r_[np.zeros(80), np.linspace(1.0, 2.0, 20)]  # MAD 0: most values alike
    tail = (0.9, 1.2816)
    center, scale = robust_center_scale(x, [tail])
    assert center == 0.0 and scale == pytest.approx(np.quantile(x, 0.9) / 1.2816)
    assert robust_center_scale(x) == (0.0, pytest.approx(float(x.std())))
    assert robust_center_scale(np.full(5, 7.0)) == (7.0, 0.0)  # no spread: cannot standardise
    assert robust_center_scale(np.array([np.nan, 4.0])) == (4.0, 0.0)
    assert robust_center_scale(np.array([])) == (0.0, 0.0)


def test_robust_z_against_the_bulk_with_its_fallbacks():
    x = np.r_[np.random.default_rng(1).normal(size=999), 50.0]
    z = robust_z(x)
    assert z.shape == x.shape and z[-1] > 30 and abs(np.median(z)) < 1e-12
    iqr = np.r_[np.zeros(60), np.ones(40)]  # MAD 0, IQR 1: the IQR's sigma
    assert robust_z(iqr)[-1] == pytest.approx(1.349)
    assert (robust_z(np.full(4, 2.0)) == 0).all()
    assert robust_z(np.array([np.nan, 1.0, 2.0, 3.0]))[0] == 0.0
