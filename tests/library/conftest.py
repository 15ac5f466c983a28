"""The library's tests (comhe, keras_comhe): they import only what ``pip install``
puts in place, so tests/test_wheel.py runs them against an installed wheel, from
a folder outside the repository. Their helpers (reference.py, float32_bound.py)
sit in tests/, or beside them in that copy."""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent):   # the helpers: beside the copy, or tests/
    if (folder / 'reference.py').exists() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
os.environ.setdefault('KERAS_BACKEND', 'jax')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

FD_RTOL = 1e-6
"""float64 against tests/reference.py where that takes gradients by central differences
(h = 1e-6): their error is at most h^2 |f'''| / 6 + eps |f| / h, about 1e-10 of the
values here; 1e-6 leaves room and still fails a formula off by a relative 1e-3."""
F64_RTOL = 1e-10
"""float64 against the closed-form references (no differences): sums of at most a few
hundred terms, each rounded to 2^-53, stay far inside 1e-10 relative."""


def close(got, want, rtol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f'{what}: max |got - want| = {err:.3g} > {rtol:g} x {scale:.3g}'


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A connection to anything but loopback fails the test."""
    import ipaddress
    import socket
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = host == 'localhost' or ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            assert local, f'a test tried to connect to {address}; tests stay on this machine'
        return connect(sock, address)
    monkeypatch.setattr(socket.socket, 'connect', loopback_only)


@pytest.fixture(scope='session')
def arrays():
    """Small float64 inputs: W [d=12, N=9], a batch [3, 6, 10], P [5, 12], RP draws [3, 4, 12]."""
    rng = np.random.default_rng(29)
    return dict(W=rng.normal(size=(12, 9)), B=rng.normal(size=(3, 6, 10)), P=rng.normal(size=(5, 12)),
                draws=rng.normal(size=(3, 4, 12)), upstream=rng.uniform(0.5, 2.0, size=3))
