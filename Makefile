# The two commands of the README:
#   make main   render the dataset, train the default config, evaluate it on test, read samples
#   make test   the test suite (what CI runs)
# Each creates .venv and installs the pinned dependencies first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/poem
OTHERWORLD ?= data/otherworld
WORKDIR ?= runs/poem_cpu
CONFIG ?= configs/poem_cpu.py
DATAGEN_ARGS ?=
TRAIN_ARGS ?=
PYTHON ?= python3

.PHONY: main test data otherworld bench bench-deps bench-datagen venv browser

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e ".[test]"
	touch $@

data: $(VENV)/.installed
	$(VENV)/bin/datagen build --out $(DATA) $(DATAGEN_ARGS)

# The other-world set (README, "Robust reading"): DATA's held-out lines drawn by Skia in the held-out
# fonts, clean and degraded; evaluation only (~30 s).
otherworld: data
	$(VENV)/bin/otherworld build --data $(DATA) --out $(OTHERWORLD)

main: data otherworld
	$(VENV)/bin/crnn-train --config $(CONFIG) --workdir $(WORKDIR) --cpu_devices 2 --config.data_dir=$(DATA) \
	  --config.eval.extra=$(OTHERWORLD):val_clean,$(OTHERWORLD):val_degraded $(TRAIN_ARGS)
	$(VENV)/bin/crnn-eval --workdir $(WORKDIR) --split test --checkpoint latest
	$(VENV)/bin/crnn-eval --workdir $(WORKDIR) --data $(OTHERWORLD) --split test_clean --checkpoint latest
	$(VENV)/bin/crnn-eval --workdir $(WORKDIR) --data $(OTHERWORLD) --split test_degraded --checkpoint latest
	$(VENV)/bin/crnn-predict --workdir $(WORKDIR) --checkpoint latest --output $(WORKDIR)/samples.tsv docs/samples
	$(PY) tools/check_samples.py $(WORKDIR)/samples.tsv

# The web page's test drives Debian's headless chromium through selenium: installed here when missing.
browser:
	@command -v chromium >/dev/null 2>&1 && test -x /usr/lib/chromium/chromedriver || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

test: $(VENV)/.installed browser
	$(PY) -m pytest -n 2 tests

bench-datagen: $(VENV)/.installed
	$(PY) bench/bench_datagen.py --write BENCHMARKS.md

# The benchmark suite of BENCHMARKS.md (~30 min on 2 cores), after `make main` (it reads WORKDIR's
# run: time to accuracy, compiles, peak RSS, the trainer's consumption, our test accuracy).
# Each script rewrites its own section of BENCHMARKS.md.
bench: $(VENV)/.installed bench-deps
	$(PY) bench/report_run.py --workdir $(WORKDIR) --command "make main WORKDIR=$(WORKDIR)" --write BENCHMARKS.md || true
	$(PY) bench/bench_datagen.py --write BENCHMARKS.md
	$(PY) bench/pipeline.py --data $(DATA) --workdir $(WORKDIR) --write BENCHMARKS.md
	$(PY) bench/compile_time.py --write BENCHMARKS.md
	$(PY) bench/vs_pytorch.py --workdir $(WORKDIR) --windows 5 --write BENCHMARKS.md

# The other sides of bench/vs_pytorch.py (not project dependencies): torch's CPU build and
# PaddleOCR's PP-OCRv6 recognizer through rapidocr (ONNX models inside its wheel).
bench-deps: $(VENV)/.installed
	$(PY) -c "import torch, rapidocr" 2>/dev/null || $(VENV)/bin/pip install -q torch==2.13.0 rapidocr==3.10.0 onnxruntime==1.32.0
