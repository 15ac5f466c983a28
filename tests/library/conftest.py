"""The library's tests (comhe, keras_comhe): they import only what ``pip install``
puts in place, so tests/test_wheel.py runs them against an installed wheel, from
a folder outside the repository. Their helpers (numpy_oracle.py, float32_bound.py,
loopback_only.py) sit in tests/helpers/, or beside them in that copy."""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent / 'helpers', HERE):   # the helpers: tests/helpers/, or beside the copy
    if (folder / 'loopback_only.py').exists() or folder == HERE:
        sys.path.insert(0, str(folder))
os.environ.setdefault('KERAS_BACKEND', 'jax')

import numpy as np
import pytest

import loopback_only


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A connection to anything but loopback fails the test."""
    loopback_only.patch(monkeypatch)


@pytest.fixture(scope='session')
def arrays():
    """Small float64 inputs: W [d=12, N=9], a batch [3, 6, 10], P [5, 12], RP draws [3, 4, 12]."""
    rng = np.random.default_rng(29)
    return dict(W=rng.normal(size=(12, 9)), B=rng.normal(size=(3, 6, 10)), P=rng.normal(size=(5, 12)),
                draws=rng.normal(size=(3, 4, 12)), upstream=rng.uniform(0.5, 2.0, size=3))
