# make test: create .venv, install requirements-dev.txt, run the test suite.
# make train: the same set-up, then random_projection/train.py with its defaults.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test train venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# Two pytest workers (pytest-xdist): a train.py test spends most of its time in one
# core importing TensorFlow and building its graph, so two keep both cores of a small
# machine busy. Each test file runs on one worker, so a module's shared fixture (the
# quick benchmark, the sweep, the uninterrupted runs) is made once; the files go out
# slowest first (tests/conftest.py), not reordered by xdist.
TEST_WORKERS ?= 2

test: venv
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

train: venv
	@test -f random_projection/train.py || { echo "random_projection/train.py does not exist yet; nothing to train."; exit 1; }
	cd random_projection && ../$(PY) train.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
