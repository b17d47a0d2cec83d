# Set-up contract: `make demo` and `make test` work on a fresh clone.
# `make test` is the complete suite (what .ci/run calls); `make test-fast` skips the
# tests marked slow; `make lint` also checks the import layers, runs mypy on the
# modules [tool.mypy] lists (pyproject.toml) and vulture for dead code (what is used
# only from outside the package's sight is listed, with its user, in vulture_allowlist.py).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= labelaudit-demo

.PHONY: demo test test-fast lint format screenshots clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(VENV)/bin/labelaudit demo --out $(DEMO_OUT)

test: $(VENV)/.installed-test
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "no chromium: the browser test will be skipped"
	$(PY) -m pytest

# The developer's lane: every test not marked slow (no model trained end to end).
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -m "not slow" -q

screenshots: $(VENV)/.installed-test
	LABELAUDIT_SCREENSHOTS=docs/img $(PY) -m pytest tests/report/test_report_browser.py

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff format --check labelaudit tests benchmarks examples
	$(VENV)/bin/ruff check labelaudit tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/vulture labelaudit vulture_allowlist.py --min-confidence 60 \
		--ignore-decorators "@app.command,@app.callback,@register,@register_policy"

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format labelaudit tests benchmarks examples
	$(VENV)/bin/ruff check --fix labelaudit tests benchmarks examples

clean-venv:
	rm -rf $(VENV)
