"""Detector registry: built-ins, custom detectors, clear errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.params import Integral, Interval
from labelaudit.detect import (
    REGISTRY,
    AuditInputs,
    Detector,
    DetectorResult,
    available_detectors,
    get_detector,
    make_findings,
    register,
)


@pytest.fixture
def custom_detector():
    @register("label_count")
    @dataclass(kw_only=True, eq=False, repr=False)
    class LabelCount(Detector):
        """Flags images with more than ``max_labels`` labels."""

        requires = ("labels",)
        parameter_constraints = {"max_labels": [Interval(Integral, 0, None, closed="left")]}

        max_labels: int = 2

        def detect(self, inputs: AuditInputs) -> DetectorResult:
            count = inputs.labels.sum(axis=1).astype(float)
            flagged = count > self.max_labels
            idx = np.arange(inputs.n_images)
            findings = make_findings(inputs, self.name, idx, None, count, flagged, "review")
            return DetectorResult(self.name, findings, count, flagged)

    yield LabelCount
    del REGISTRY["label_count"]


def small_inputs() -> AuditInputs:
    labels = np.array([[1, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    return AuditInputs(["x", "y", "z"], ["a", "b", "c"], ["0", "1", "2"], "|", labels)


def test_builtins_are_registered():
    assert {"confident", "isolation", "intensity"} <= set(available_detectors())


def test_custom_detector_is_picked_up(custom_detector):
    assert "label_count" in available_detectors()
    det = get_detector("label_count", max_labels=1)
    assert isinstance(det, custom_detector) and det.name == "label_count"
    assert det.get_params() == {"max_labels": 1}
    findings = det.find(small_inputs())
    assert list(findings["flagged"]) == [False, True, False]
    assert (findings["class"] == "").all()


def test_unknown_name_and_parameter():
    with pytest.raises(SettingsError, match=r"unknown detector 'nope' \(available: .*confident"):
        get_detector("nope")
    with pytest.raises(SettingsError, match="no parameter 'bogus'"):
        get_detector("intensity", bogus=1)


def test_missing_input_is_a_settings_error():
    with pytest.raises(SettingsError, match="'isolation' needs embeddings"):
        get_detector("isolation").run(small_inputs())


def test_params_sklearn_style():
    det = get_detector("intensity", n_sigma=4)
    assert det.n_sigma == 4 and det.get_params()["n_sigma"] == 4
    det.set_params(method="robust")
    assert det.method == "robust"
    assert "n_sigma=4" in repr(det)


def test_register_rejects_non_detectors():
    with pytest.raises(TypeError):
        register("bad")(object)


def test_inconsistent_inputs_are_rejected():
    with pytest.raises(RunDirError, match="ids"):
        AuditInputs(["x"], ["a"], ["0"], "|", np.zeros((2, 1), dtype=bool))
    with pytest.raises(RunDirError, match="probs"):
        AuditInputs(["x"], ["a"], ["0"], "|", np.zeros((1, 1)), probs=np.full((1, 1), 1.5))


def test_label_lists_and_format():
    inputs = small_inputs()
    assert inputs.label_lists() == [[0], [0, 1, 2], [1]]
    inputs.label_sep = " "
    assert inputs.format_labels(inputs.labels) == ["0", "0 1 2", "1"]


def test_parameters_are_explicit_keyword_arguments():
    import inspect

    from labelaudit.detect import KnnLabelAgreement

    signature = inspect.signature(KnnLabelAgreement)
    assert list(signature.parameters) == ["k", "threshold", "prior_weight", "n_components"]
    assert all(p.kind is p.KEYWORD_ONLY for p in signature.parameters.values())
    assert signature.parameters["k"].default == 20
    assert KnnLabelAgreement(k=5).k == 5
    assert get_detector("exclusive").get_params() == {}


def test_bad_values_are_refused_at_construction_set_params_and_run(custom_detector):
    with pytest.raises(SettingsError, match="label_count: max_labels must be >= 0, got -1"):
        get_detector("label_count", max_labels=-1)
    with pytest.raises(SettingsError, match="knn: k must be >= 1, got 0"):
        get_detector("knn", k=0)
    det = get_detector("label_count")
    with pytest.raises(SettingsError, match="max_labels must be an integer"):
        det.set_params(max_labels="two")
    det.max_labels = -3  # set behind its back: run() checks again
    with pytest.raises(SettingsError, match="got -3"):
        det.run(small_inputs())
    with pytest.raises(SettingsError, match=r"no parameter 'bogus' \(valid: max_labels\)"):
        det.set_params(bogus=1)
