# The two commands a newcomer needs: `make demo` and `make test`.
# The virtual environment is created and installed once; a second run finds the stamp and installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gym-qwen-installed
# The default suite leaves out the tests marked slow (learning, resume equality, compile, signal drills); make
# test-all runs them too.
PYTEST_ARGS ?= -m "not slow"

.PHONY: venv demo test test-all bench lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gym-qwen demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_agent.py
	$(PY) benchmarks/bench_training.py

# Regenerate constraints.txt from a fresh resolve of pyproject.toml (the newest versions it allows, plus the
# deliberate torch and mujoco pins) in a throwaway venv of PYTHON (3.11), and of a pip dry-run on LOCK_OLD_PYTHON
# (3.10, the floor of requires-python: its backports and older releases; pip upgraded for fast metadata-only
# resolves); then `make test` installs and tests the new lock.
LOCK_VENV ?= .lock-venv
LOCK_OLD_PYTHON ?= python3.10
lock:
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-old
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_OLD_PYTHON) -m venv $(LOCK_VENV)-old
	$(LOCK_VENV)-old/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[test]'
	$(LOCK_VENV)/bin/python scripts/lock.py --output constraints.txt --old-python $(LOCK_VENV)-old/bin/python
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-old

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(LOCK_VENV)-old runs mlflow.db mlartifacts .pytest_cache
