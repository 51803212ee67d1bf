# The two commands a newcomer needs: `make demo` and `make test`.
# The virtual environment is created and installed once; a second run finds the stamp and installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gym-qwen-installed
# The default suite leaves out the tests marked slow (learning, compile, the SIGTERM drill, the cluster tests, most
# whole Tune sweeps); make test-all runs them too. The 25 slowest tests are listed at the end (CI has a time budget).
PYTEST_ARGS ?= -m "not slow" --durations=25

.PHONY: venv demo test test-all bench lock clean

# Which build of torch 2.13.0 the install takes (README, "Install"). By default pip's own choice: from PyPI on
# Linux x86_64 the CUDA 13 build (with nvidia-*, cuda-* and triton, about 3 GB), here the CPU wheel on local disk.
# TORCH_INDEX=cpu takes the CPU build from PyTorch's index; any other value is an index URL to take torch from
# (e.g. https://download.pytorch.org/whl/cu128). Only torch comes from there (--no-deps); everything else, torch's
# own requirements included, comes from PyPI at the locked versions. PIP_ARGS goes to every pip install.
TORCH_INDEX ?=
PIP_ARGS ?=
TORCH_INDEX_URL = $(if $(filter cpu,$(TORCH_INDEX)),https://download.pytorch.org/whl/cpu,$(TORCH_INDEX))
# $(call install_torch,PYTHON): nothing without TORCH_INDEX
install_torch = $(if $(TORCH_INDEX),$(1) -m pip install --quiet $(PIP_ARGS) --no-deps -c constraints.txt \
	--index-url $(TORCH_INDEX_URL) torch)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call install_torch,$(PY))
	$(PY) -m pip install --quiet $(PIP_ARGS) -c constraints.txt -e '.[test]'
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
	$(LOCK_VENV)-old/bin/python -m pip install --quiet $(PIP_ARGS) --upgrade pip
	$(call install_torch,$(LOCK_VENV)/bin/python)
	$(LOCK_VENV)/bin/python -m pip install --quiet $(PIP_ARGS) -e '.[test]'
	$(LOCK_VENV)/bin/python scripts/lock.py --output constraints.txt --old-python $(LOCK_VENV)-old/bin/python
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-old

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(LOCK_VENV)-old runs mlflow.db mlartifacts .pytest_cache
