# `make demo` and `make test` each create .venv on first use and install cnnjax into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cnnjax-installed
WORKDIR ?= workdirs/lenet_digits
PYTEST_WORKERS ?= 2

.PHONY: demo test install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnjax train --config=experiments/configs/lenet_digits.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) tests
