# `make test` and `make demo` work on a fresh machine: they build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := setup.cfg pyproject.toml $(shell find rcn datapath hdl_models twisted -name '*.py' \
	-o -name '*.html' -o -name '*.js' -o -name '*.css' 2>/dev/null)

.PHONY: test demo venv clean

venv: $(VENV)/.warm

$(VENV)/.deps: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.[test,hdl]'
	touch $@

# Reinstall the project (not its dependencies) when a source file changes, so
# console scripts and twistd plugins match the checkout (a stale build/ would
# bring back modules that were moved away); then refresh the
# twisted plugin cache.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	rm -rf build
	$(PY) -m pip install -q --no-deps --force-reinstall .
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# Fill numba's cache for the installed copy (daemons, CLIs) and the checkout
# (tests), so no later process pays the compile time.
$(VENV)/.warm: $(VENV)/.installed
	cd / && $(abspath $(PY)) -m datapath.kernels.warmup
	$(PY) -m datapath.kernels.warmup
	touch $@

# The datapath suite runs a second time with the kernels as plain Python.
test: venv
	$(PY) tools/run_tests.py --nojit tests.datapath tests

# A whole RCN on loopback (rcn lab), 256 MiB written through it, the copy compared.
demo: venv
	$(VENV)/bin/rcn demo

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
