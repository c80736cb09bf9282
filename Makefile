# The two commands of the README:
#   make main   render the dataset, train the default config, evaluate it on test, read samples
#   make test   the test suite (what CI runs)
# Each creates .venv and installs the pinned dependencies first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/poem
WORKDIR ?= runs/poem_cpu
CONFIG ?= configs/poem_cpu.py
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
	$(VENV)/bin/crnn-train --config $(CONFIG) --workdir $(WORKDIR) --cpu_devices 2 --config.data_dir=$(DATA)
	$(VENV)/bin/crnn-eval --workdir $(WORKDIR) --split test
	$(VENV)/bin/crnn-predict --workdir $(WORKDIR) --output $(WORKDIR)/samples.tsv docs/samples

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 tests

bench-datagen: $(VENV)/.installed
	$(PY) bench/bench_datagen.py --write BENCHMARKS.md
