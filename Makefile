# Two entry points, each creating or reusing the local virtualenv .venv:
#   make demo   start a demo server and call it through the zrpc CLI
#   make test   run the whole test suite
#   make fuzz   the full fault and fuzz run (tests/fuzz; ~2 minutes)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test fuzz bench bench-quick clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh examples/demo.sh

test: $(STAMP)
	$(PY) -m pytest

fuzz: $(STAMP)
	$(PY) -m tests.fuzz $(FUZZ_ARGS)

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
