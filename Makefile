# Two commands set everything up on a fresh machine:
#   make run   builds .venv and trains the default (digits) config
#   make test  builds .venv and runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.train

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) build *.egg-info
