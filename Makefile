# cxr-transfer: every entry point creates .venv (Python 3.11) when missing and installs the
# project into it once; a second call finds the stamp newer than pyproject.toml and installs nothing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1
# DVC stage commands call `python`: make it the project's.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test bench report clean help

help:
	@echo "make run    - create .venv if needed, install, run the DVC pipeline on data/demo (dvc repro)"
	@echo "make test   - create .venv if needed, install, run the test suite"
	@echo "make bench  - throughput benchmarks (results: BENCHMARKS.md, reports/bench/*.json)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc repro
	@echo "Report: reports/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.models

clean:
	rm -rf data/processed data/features models predictions reports
