# The two commands of the README:
#   make main   render the dataset (and, once the trainer lands, train / evaluate / predict)
#   make test   the test suite (what CI runs)
# Each creates .venv and installs the pinned dependencies first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/poem
PYTHON ?= python3

.PHONY: main test data bench-datagen venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e ".[test]"
	touch $@

data: $(VENV)/.installed
	$(VENV)/bin/datagen build --out $(DATA)

main: data

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 tests

bench-datagen: $(VENV)/.installed
	$(PY) bench/bench_datagen.py --write BENCHMARKS.md
