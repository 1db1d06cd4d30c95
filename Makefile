# gridstress: the two commands of the README quickstart.
#   make run   create .venv, install gridstress, run configs/seed.yaml
#   make test  install the test extras, run the linters (make lint) and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/seed.yaml

.PHONY: run test lint tutorial install install-test bench bench-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

run: install
	$(BIN)/gridstress run $(CONFIG)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gridstress/

test: lint
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python benchmarks/numpy_backend.py --out benchmarks/results/numpy_backend.json
	$(BIN)/python benchmarks/peak_memory.py --out benchmarks/results/peak_memory.json
	$(BIN)/python benchmarks/dask_overhead.py --out benchmarks/results/dask_overhead.json
	$(BIN)/python benchmarks/dask_client_memory.py --out benchmarks/results/dask_client_memory.json
	if command -v nvcc >/dev/null; then $(BIN)/python benchmarks/kernel_resources.py \
		--out benchmarks/results/kernel_resources.json; else echo "no nvcc: kernel_resources skipped"; fi

# On a GPU machine: GPU tests, kernel tuning and the three-engine benchmarks.
bench-gpu: install-test
	$(BIN)/python -m pip install --quiet -e ".[gpu]"
	PATH="$(abspath $(BIN)):$$PATH" bash benchmarks/device_check.sh

tutorial: install-test  # execute docs/tutorial.ipynb in place (tests check its outputs)
	$(BIN)/python tests/test_tutorial.py

clean:
	rm -rf results .pytest_cache .ruff_cache .hypothesis build *.egg-info
