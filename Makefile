# `make demo` and `make test` each create .venv on first use and install cnnjax into it.
# `make test-min` does the same in $(MIN_VENV) with every direct dependency at the floor
# pyproject.toml declares (.ci/min-versions.txt), then runs the smoke tests of .ci/smoke-tests.
# `make test-tpu` installs libtpu in $(TPU_VENV) and compiles train steps for TPU topologies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cnnjax-installed
MIN_VENV ?= build/venv-min
MIN_BIN := $(MIN_VENV)/bin
MIN_STAMP := $(MIN_VENV)/.cnnjax-installed
TPU_VENV ?= build/venv-tpu
TPU_BIN := $(TPU_VENV)/bin
TPU_STAMP := $(TPU_VENV)/.cnnjax-installed
WORKDIR ?= workdirs/lenet_digits
PYTEST_WORKERS ?= 2

.PHONY: demo test install test-min test-tpu

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnjax train --config=experiments/configs/lenet_digits.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) tests

$(MIN_STAMP): pyproject.toml .ci/min-versions.txt
	test -x $(MIN_BIN)/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_BIN)/python -m pip install -q --upgrade pip
	$(MIN_BIN)/python -m pip install -q -e '.[test]' -c .ci/min-versions.txt
	$(MIN_BIN)/python -m pip check
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_BIN)/python -m pytest -n $(PYTEST_WORKERS) $$(sed -e 's/#.*//' .ci/smoke-tests)

$(TPU_STAMP): pyproject.toml
	test -x $(TPU_BIN)/python || $(PYTHON) -m venv $(TPU_VENV)
	$(TPU_BIN)/python -m pip install -q --upgrade pip
	$(TPU_BIN)/python -m pip install -q -e '.[test,tpu]'
	touch $(TPU_STAMP)

# libtpu compiles for abstract TPU topologies on this CPU (cnnjax plan); no TPU is needed.
test-tpu: $(TPU_STAMP)
	$(TPU_BIN)/python -m pytest -n $(PYTEST_WORKERS) tests/train/test_plan.py
