# The two commands a newcomer needs: `make demo` and `make test`.
# The virtual environment is created and installed once; a second run finds the stamp and installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gym-qwen-installed
PYTEST_ARGS ?=

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gym-qwen demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_agent.py
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts .pytest_cache
