# lmrec: `make demo` runs the main job on the embedded defaults, `make test` runs the tests.
# Both bootstrap .venv from nothing: torch==2.13.0 (the CPU build) first, then the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lmrec-installed
DEMO_DB ?= sqlite:///artifacts/demo.db
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p artifacts
	$(BIN)/lmrec --db $(DEMO_DB) sample ml-100k
	$(BIN)/lmrec --db $(DEMO_DB) stats

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache .hypothesis
