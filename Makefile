# Pudato: `make demo` runs the sample job end to end; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration bench stack clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pudato demo

test: $(STAMP)
	$(BIN)/python -m pytest

# mypy strict and ruff over the library, the workers and the tests (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check pudato workers tests bench celeryconfig.py
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

bench: $(STAMP)
	$(BIN)/python bench/steps_throughput.py
	$(BIN)/python bench/chain_vs_chord.py
	$(BIN)/python bench/fanout_publish.py
	$(BIN)/python bench/warehouse_scaling.py
	$(BIN)/python bench/lake_vs_file.py
	$(BIN)/python bench/parquet_in_place.py

# The local stack (Procfile): moto, PostgreSQL, infra, a worker per queue, beat, Flower. Ctrl-C stops it.
# The Procfile's commands (pudato, celery, python) come from the venv.
stack: $(STAMP) .env
	PATH="$(abspath $(BIN)):$$PATH" exec $(BIN)/pudato local stack

# .env from .env.example, with a random Flower login and compose's PostgreSQL password; never overwritten.
.env: | $(STAMP)
	$(BIN)/pudato local env

clean:
	rm -rf $(VENV) .pudato
