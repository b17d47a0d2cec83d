"""The cleaning-policy registry: a policy written outside the package, with public names
only (``register_policy``, ``Plan``, ``RunView``, ``flagged_by``, ``relabel_trusted``),
runs through ``clean`` like a built-in one."""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.core.io import read_json
from labelaudit.pipeline.clean import POLICIES, clean, read_changes
from labelaudit.pipeline.policies import (
    Plan,
    RunView,
    flagged_by,
    get_policy,
    register_policy,
    relabel_trusted,
    unregister_policy,
)

NAME = "test-relabel-drop-intensity"


def relabel_and_drop_intensity(
    view: RunView, *, confidence: float, min_class_ap: float, **_: float
) -> Plan:
    """The trusted relabels, then every image the intensity detector flagged removed;
    the labels of removed images weighted 0.5 to show a soft part reaches clean."""
    plan = Plan.unchanged(view)
    relabel_trusted(view, plan, confidence, min_class_ap)
    dim = flagged_by(view, "intensity")
    plan.kept[dim] = False
    for i in np.flatnonzero(dim):
        plan.reasons[i] = "intensity (plugin)"
    plan.weights = np.where(dim[:, None], 0.5, 1.0) * np.ones(view.given.shape)
    return plan


@pytest.fixture
def plugin_policy():
    register_policy(NAME, uses_suggestions=True)(relabel_and_drop_intensity)
    yield NAME
    unregister_policy(NAME)


def test_builtin_policies_register_in_their_documented_order():
    assert tuple(POLICIES) == (
        "relabel",
        "consensus-drop",
        "intensity",
        "soft",
        "relabel-soft",
        "relabel-only",
        "drop-labels",
        "none",
    )
    assert [n for n in POLICIES if get_policy(n).uses_suggestions] == [
        "relabel",
        "relabel-soft",
        "relabel-only",
    ]


def test_a_policy_registered_outside_the_package_runs_through_clean(hpa_run, plugin_policy):
    _, run = hpa_run
    assert plugin_policy in POLICIES  # the live view of the registry
    result = clean(run, policy=plugin_policy)
    changes = read_changes(run)
    got = {r.id: (r.action, r.new_labels, r.reason) for r in changes.itertuples()}
    # relabel-only's trusted changes (test_clean.EXPECTED) and intensity's removals
    assert got == {
        "field001": ("relabel", "2", "confident learning"),
        "field003": ("remove", "", "intensity (plugin)"),
        "field004": ("remove", "", "intensity (plugin)"),
        "field005": ("relabel", "5|6", "confident learning"),
        "field006": ("remove", "", "intensity (plugin)"),
    }
    assert result.policy == plugin_policy
    assert result.n_kept == 7
    assert result.weights is not None and (run / "label_weights.csv").is_file()
    section = read_json(run / "run.json")["clean"]
    assert section["policy"] == plugin_policy
    assert set(section["params"]) == {"confidence", "min_class_ap", "class_ap"}


def test_an_unregistered_policy_is_refused_naming_the_registered_ones(hpa_run, plugin_policy):
    _, run = hpa_run
    unregister_policy(plugin_policy)
    assert plugin_policy not in POLICIES
    with pytest.raises(SettingsError, match="unknown cleaning policy") as exc:
        clean(run, policy=plugin_policy)
    assert "relabel-soft" in str(exc.value) and plugin_policy not in str(exc.value).split(";")[1]
    assert not (run / "changes.csv").exists()


def test_a_name_registers_once(plugin_policy):
    with pytest.raises(ValueError, match="already registered"):
        register_policy(plugin_policy)(relabel_and_drop_intensity)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("relabel")(relabel_and_drop_intensity)
    assert get_policy("relabel").func is not relabel_and_drop_intensity
