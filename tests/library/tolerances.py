"""The tolerances of the library's tests against the float64 references, and the check."""
import numpy as np

FD_RTOL = 1e-6
"""float64 against tests/helpers/numpy_oracle.py where that takes gradients by central differences
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
