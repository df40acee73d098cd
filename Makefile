# Set-up is part of every target: a fresh clone needs nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pytest workers; the suite is sized for 2 cores
WORKERS ?= 2

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	ZOO_DISABLE_PLUGIN_AUTOLOAD=1 $(PY) -m pytest -q -n $(WORKERS) --dist loadgroup tests

demo: $(STAMP)
	$(PY) -m zoo.demo --out demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo .pytest_cache
