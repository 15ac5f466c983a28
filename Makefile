# make test: create .venv, install the requirements, run the linter (ruff, configured in
# pyproject.toml) and the test suite.
# make train: the same set-up, then random_projection/train.py with its defaults.
# GPU=1 installs TensorFlow and JAX with their CUDA libraries (requirements-gpu.txt), GPU=0 without
# (requirements-dev.txt); by default 1 where an NVIDIA driver answers (nvidia-smi), else 0.
# PYTHON=python3.11: the interpreter of the venv (3.11 or newer; python3 by default).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)

ifeq ($(GPU),1)
REQUIREMENTS := requirements-gpu.txt
else ifeq ($(GPU),0)
REQUIREMENTS := requirements-dev.txt
else
$(error GPU=$(GPU): use GPU=1 (TensorFlow with CUDA) or GPU=0 (without))
endif

.PHONY: test train venv clean

# One stamp per choice: switching GPU installs again (make clean first to drop CUDA).
$(VENV)/.installed-gpu$(GPU): requirements.txt requirements-dev.txt requirements-gpu.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "$(PYTHON) is missing or older than Python 3.11, which this project needs; name one: make venv PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r $(REQUIREMENTS)
	touch $@

venv: $(VENV)/.installed-gpu$(GPU)

# Two pytest workers (pytest-xdist): a train.py test spends most of its time in one
# core importing TensorFlow and building its graph, so two keep both cores of a small
# machine busy. Each test file runs on one worker, so a module's shared fixture (the
# quick benchmark, the sweep, the uninterrupted runs) is made once; the files go out
# slowest first (tests/conftest.py), not reordered by xdist.
TEST_WORKERS ?= 2

test: venv
	$(PY) -m ruff check .
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

train: venv
	cd random_projection && ../$(PY) train.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
