# Two commands set everything up on a fresh machine:
#   make run   builds .venv and trains the default (digits) config
#   make test  builds .venv, adds the test dependencies
#              (requirements-test.txt) and runs the test suite
# TORCH_INDEX: where the CPU build of torch comes from; on a machine that
# cannot reach it but has the wheel in a --find-links directory, set
# TORCH_INDEX= (empty) to use pip's configured sources only.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.test-installed
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

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

# torch alone first, with PyTorch's index; then the rest from the default
# index (torch is then already satisfied, so nothing else consults it).
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
	    "$$(grep -E '^torch==' requirements-test.txt)"
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) build *.egg-info
