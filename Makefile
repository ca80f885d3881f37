# `make test` and `make demo` work on a fresh machine: they build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := setup.cfg pyproject.toml $(shell find rcn datapath hdl_models twisted -name '*.py' 2>/dev/null)

.PHONY: test venv clean

venv: $(VENV)/.installed

$(VENV)/.deps: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.[test]'
	touch $@

# Reinstall the project (not its dependencies) when a source file changes, so
# console scripts and twistd plugins match the checkout; then refresh the
# twisted plugin cache.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install -q --no-deps --force-reinstall .
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

test: venv
	$(PY) tools/run_tests.py tests

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
