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

# Each benchmark's output is kept in $(BENCH_LOGS)/<name>.log; a failing or missing one does not stop the others,
# and the run ends with one table of every headline against its target (benchmarks/summary.py).
BENCH_LOGS ?= runs/bench_logs
BENCHES := bench_piqe bench_corrupt bench_evaluate bench_iqa_speed bench_clive bench_explain bench_report \
	bench_memory bench_scaling

bench: $(STAMP)
	@mkdir -p $(BENCH_LOGS)
	@for b in $(BENCHES); do \
		if [ -f benchmarks/$$b.py ]; then \
			echo "== $$b"; \
			$(PY) benchmarks/$$b.py 2>&1 | tee $(BENCH_LOGS)/$$b.log; \
		else \
			echo "== $$b: benchmarks/$$b.py is not here, skipped" | tee $(BENCH_LOGS)/$$b.log; \
		fi; \
	done
	@echo "== summary"
	@$(PY) benchmarks/summary.py $(addprefix $(BENCH_LOGS)/,$(addsuffix .log,$(BENCHES))) --expect $(BENCHES)

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
