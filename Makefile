# Two commands set everything up on a fresh machine:
#   make run   builds .venv and trains the default (digits) config
#   make test  builds .venv, adds the test dependencies
#              (requirements-test.txt) and runs the test suite, one
#              pytest-xdist worker per core
# TORCH_INDEX: where the CPU build of torch comes from when pip's configured
# sources (e.g. a --find-links directory) do not have it.
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

# torch alone first: from pip's configured sources (a local wheel directory
# given to pip with find-links, where there is one), else from PyTorch's CPU
# index; then the rest from the default index (torch is then already
# satisfied, so nothing else consults PyTorch's index).
$(TEST_STAMP): $(STAMP) requirements-test.txt
	torch="$$(grep -E '^torch==' requirements-test.txt)"; \
	$(PY) -m pip install --quiet "$$torch" 2>/dev/null || \
	    $(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$$torch"
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal --durations=15 tests

clean:
	rm -rf $(VENV) build *.egg-info
