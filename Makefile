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
	@echo "== train ALS (the best classic model under defaults, benchmarks/models.md) on all data"
	$(BIN)/lmrec --db $(DEMO_DB) train --model als --out artifacts/demo-als
	@for u in 1 2 3; do $(BIN)/lmrec recommend --model artifacts/demo-als --user $$u -n 10; done
	@echo "== leave-one-out by time, full ranking of the catalogue (history excluded), k=10"
	$(BIN)/lmrec --db $(DEMO_DB) evaluate --models popularity,itemknn,ease,als --protocol loo \
	  --k 10 --metrics ndcg,recall,mrr,coverage,novelty,diversity,personalization \
	  --json artifacts/demo-eval.json --csv artifacts/demo-eval.csv --plots artifacts/demo-plots
	@echo "== the language model at work: hybrid = EASE with the items' MiniLM text vectors as side"
	@echo "   information, blended with a SASRec whose items are text vectors (through a trained adapter)"
	@echo "   plus id vectors gated by popularity; text weight and blend weights chosen on each user's"
	@echo "   held-out last item; a line per epoch on stderr"
	$(BIN)/lmrec --db $(DEMO_DB) train --model hybrid --out artifacts/demo-hybrid
	$(BIN)/lmrec recommend --model artifacts/demo-hybrid --user 1 -n 5 --explain
	@echo "== a brand-new film known only by its text (examples/new_items.csv), added without retraining:"
	@echo "   recommended after a Raiders of the Lost Ark / Indiana Jones / Blade Runner session"
	cp artifacts/demo.db artifacts/demo-new.db
	$(BIN)/lmrec --db sqlite:///artifacts/demo-new.db import --items examples/new_items.csv
	$(BIN)/lmrec --db sqlite:///artifacts/demo-new.db recommend --model artifacts/demo-hybrid \
	  --new-items --items 174,210,89 -n 10

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache .hypothesis
