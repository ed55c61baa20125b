# Two commands do all set-up on a fresh clone:
#   make demo   install, generate demo data, train all four models briefly, compare, predict, evaluate, report
#   make test   install, then ruff + pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check medseg tests benchmarks datasets docs

test: install lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/medseg demo --out runs/demo

bench: install
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/models.py

clean:
	rm -rf runs build *.egg-info .pytest_cache .ruff_cache
