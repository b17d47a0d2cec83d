"""benchmarks/two_rounds.py: the F1 it reports and the settings round 2 repeats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from la_testutils import load_benchmark


@pytest.fixture(scope="module")
def two_rounds():
    return load_benchmark("two_rounds")


def test_micro_f1_against_the_truth(two_rounds):
    true = np.array([[1, 0], [0, 1]], dtype=bool)
    assert two_rounds.micro_f1(np.array([[0.9, 0.1], [0.2, 0.8]]), true) == 1.0
    # one right, one wrong positive, one missed: 2 * 1 / (2 + 2)
    assert two_rounds.micro_f1(np.array([[0.9, 0.6], [0.2, 0.3]]), true) == 0.5
    assert two_rounds.micro_f1(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 0.0


def test_round_two_repeats_round_ones_settings(two_rounds, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    settings = {"epochs": 3, "image_size": 48, "lr": 0.01, "threads": 2, "device": "cpu"}
    (run / "run.json").write_text(json.dumps({"train": {"settings": settings}}))
    assert two_rounds.round_one_settings(run) == {"epochs": 3, "image_size": 48, "lr": 0.01}
    (run / "run.json").write_text(json.dumps({"predictions": {"supplied": True}}))
    assert two_rounds.round_one_settings(run) == {}
