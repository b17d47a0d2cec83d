"""What vulture (``make lint``) must not report as dead: code that is used, by a caller
vulture cannot see, on purpose. Every entry says who uses it. Vulture only parses this
file (``_`` stands for "an attribute of some object"); it is never imported.

Typer commands and callbacks (``@app.command``/``@app.callback``) and the registries'
entries (``@register``: detectors, report sections) are skipped by the Makefile's
``--ignore-decorators`` instead of being listed here.

An entry for code that goes away is deleted with it; nothing is added here to
silence a finding without a reason.
"""

# ------------------------------------------------------------------ public API
# Called by users (documented), tests and benchmarks, not by the package itself.
__getattr__  # labelaudit/__init__.py: the lazy map behind labelaudit.scan, .find_issues, ...
find_issues  # labelaudit.find_issues (reached through the lazy map's strings)
macro_f1  # core/stats.py: the interval metrics the module docstring documents
bootstrap_delta  # core/stats.py: the paired bootstrap for any metric (documented)
_.n_kept  # pipeline/clean.py: CleanResult's count beside n_removed and n_relabelled
_.set_params  # detect/base.py: Detector.set_params, scikit-learn's convention (documented)
ISSUES_COLUMNS  # pipeline/compare.py: the issues.csv columns, for readers of the table (tests, docs)
make_audit  # synth/audit.py: synthetic detector inputs for tests and benchmarks/detectors.py
_.truth_frame  # synth/audit.py: the same audit's truth as a table (benchmarks, tests)
_.label_tokens  # data/dataset.py: Dataset.label_tokens, an image's labels as its tokens
RETRAIN_TABLE  # rundir.py: the contract's name of retrain/table.csv (retrain writes it)

# ------------------------------------------------------------------ dataclass fields
# Written for the reader of a result (a run.json section, the report's table rows).
_.separator  # data/layouts.py: Layout.separator, the label file's token separator
_.n_a  # pipeline/leaks.py: LeakResult's image count of dataset A (beside n_b)
_.n_flags  # report/table.py: a table row's field, read by reports/templates/report.js
_.consensus_flag  # report/table.py: the same
_.duplicate  # report/table.py: the same
_.weight_source  # train/cv.py: CVResult's record of where the weights came from

# ------------------------------------------------------------------ framework hooks
# Names another library calls.
_.forward  # torch.nn.Module: train/backbones.py, train/checkpoint.py, train/loss.py
_.extra_repr  # torch.nn.Module's repr hook: train/loss.py
_._launch  # multiprocessing's Popen hook: data/parallel.py
_.sentinel  # multiprocessing's Popen attribute, set by _launch
_.finalizer  # multiprocessing's Popen attribute, set by _launch
_.Process  # multiprocessing context's process class: data/parallel.py
_.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit: data/readers.py
_.nprobe  # faiss IVF index setting: detect/pixelmatch.py
_.find  # detect/base.py: Detector.find, the one-call findings table (docs/report.md, tests)
_.posteriors  # detect/combined.py: the label evidence's posteriors (docs/design.md, tests)
_.__signature__  # pipeline/scan.py: what inspect.signature (help, editors) shows for scan

MAX_ZOOM  # detect/pixelmatch.py: the largest zoom searched, named in detect/duplicates.py's docstring
