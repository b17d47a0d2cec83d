"""core/userfiles.py: the one probability check behind every reader of probabilities."""

import numpy as np

from labelaudit.core.userfiles import first_bad_probability


def test_first_bad_probability_reports_nan_before_range():
    assert first_bad_probability(np.array([[0.0, 1.0], [0.5, 0.25]])) is None
    assert first_bad_probability(np.array([[1.5, 0.2], [0.1, np.nan]])) == (1, 1, "nan")
    assert first_bad_probability(np.array([[0.2, -0.1], [1.5, 0.3]])) == (0, 1, "range")
    assert first_bad_probability(np.array([[0.2, np.inf]])) == (0, 1, "nan")
