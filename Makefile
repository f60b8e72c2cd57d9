# Two commands a bare machine needs: `make demo` and `make test`. Both create (or reuse) .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.saliqa-installed
OUT ?= runs/demo

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/saliqa run --out $(OUT) --set explain.sample=16

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) benchmarks/bench_piqe.py
	$(PY) benchmarks/bench_corrupt.py
	$(PY) benchmarks/bench_evaluate.py
	$(PY) benchmarks/bench_iqa_speed.py
	$(PY) benchmarks/bench_clive.py
	$(PY) benchmarks/bench_explain.py
	$(PY) benchmarks/bench_report.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
