"""``labelaudit sweep``: the method's model-selection studies on a new dataset.

The method chose its model by experiment: backbones, learning rates and output
activations, each compared in a small table (average F1, recall, precision, and
whether every class got a correct prediction). :func:`sweep` trains those
configurations on any dataset, resumably, and writes the same tables, a CSV of
every run, learning curves and ``RUN/sweep.html``.

>>> from labelaudit.tools.sweep import sweep
>>> result = sweep("data", "sweep-out", lrs="0.01,0.001", holdout=0.2)  # doctest: +SKIP
>>> print(result.markdown)  # doctest: +SKIP
"""

from __future__ import annotations

from labelaudit.tools.sweep.page import write_sweep_html
from labelaudit.tools.sweep.plan import AXES, Config, EvaluationScheme, plan_configs, resolve_split
from labelaudit.tools.sweep.run import DEFAULT_SWEEP, ConfigResult, SweepResult, run_config, sweep
from labelaudit.tools.sweep.scores import axis_table, method_scores

__all__ = [
    "AXES",
    "DEFAULT_SWEEP",
    "Config",
    "ConfigResult",
    "EvaluationScheme",
    "SweepResult",
    "axis_table",
    "method_scores",
    "plan_configs",
    "resolve_split",
    "run_config",
    "sweep",
    "write_sweep_html",
]
