"""How far a float32 result may lie from the same computation in float64: the
tolerance of the tests that compare float32 results of different code paths
(Keras backends, the graph code, a compiled fit step, a fused P step).

Such tests compare each float32 side with a float64 evaluation of the same
formula, not one float32 side with another (the exceptions, whole training steps
or networks compared at a fixed tolerance, are listed in docs/development.md), within

    |y32 - y64|_max  <=  rounding + LAMBDA * sqrt(n * depth) * (U * max|y64| + s)

- ``U = 2**-24``, float32's unit roundoff; ``rounding``: the result's own last
  roundings where the compared value is not the rounded one (a P step compared
  as P_after - P0: P is rounded after each step, ``iters * U * max|P|``).
- A float32 result is the exact result of a computation in which each of its
  operations erred by a relative ``delta_i``, ``|delta_i| <= U``. To first order
  its error is ``sum_i c_i delta_i``; with the roundings independent and of mean
  zero (Higham and Mary, "A new approach to probabilistic rounding error
  analysis", SIAM J. Sci. Comput. 41(5), 2019), Hoeffding's inequality bounds it
  by ``LAMBDA * sqrt(m) * max|c_i| * U`` with probability at least
  ``1 - 2 exp(-LAMBDA**2 / 2)`` (``LAMBDA = 6``: ``1 - 3e-8``), ``m`` the number
  of roundings the result depends on: at most ``n`` (the longest sum) in each of
  ``depth`` stages (a reduction, or the elementwise chain between two). The bound
  holds whatever order a CPU adds the terms in (vector width, blocking,
  threads), which is what differs between machines.
- ``max|c_i| U`` is the data's conditioning, measured, not assumed: ``U max|y|``
  (a rounding of the result itself) plus ``s``, the largest change of the
  float64 result when every input is moved by one rounding (``U``, random
  signs, ``DRAWS`` draws). ``s`` is large where the result cancels (a gradient
  summed from larger terms) or amplifies (steps up a steep energy). It does
  not see an intermediate that is far more sensitive than the inputs: the
  half-space angular kernels' ``acos`` near -1 (the self pairs) is the closest
  case in the suite, at about 0.7 of its bound.

The bounds stay tight enough that a P step or an AP/AdvP look-ahead off by a
relative 1e-3 fails tests/test_keras_comhe.py (checked by hand, not a test), and
each failure message says how far over its bound a value was. With
``FLOAT32_BOUND_REPORT=FILE`` set, every comparison appends a line to FILE
(what, error, bound, error / bound): how close each test is to its bound.
"""
import math
import os

import numpy as np

U = 2.0 ** -24
LAMBDA = 6.0
DRAWS = 4


def rounded_inputs(inputs, draw):
    """``inputs`` (a dict of arrays) in float64, every entry moved by one rounding
    (``x (1 + U r)``, random signs ``r``), draw number ``draw``; ``draw=None``: unmoved."""
    rng = np.random.default_rng(draw)
    moved = {}
    for key, value in inputs.items():
        value = np.asarray(value)
        if value.dtype.kind != 'f':
            moved[key] = value
            continue
        value = value.astype(np.float64)
        moved[key] = value if draw is None else value * (1.0 + U * rng.choice([-1.0, 1.0], value.shape))
    return moved


def sensitivity(evaluate, inputs):
    """(the float64 results of ``evaluate(inputs)``, s of each): ``evaluate`` maps a
    dict of float64 arrays to a dict of results; s is the largest change of each
    result over ``DRAWS`` evaluations at inputs moved by one rounding."""
    exact = evaluate(rounded_inputs(inputs, None))
    s = {key: 0.0 for key in exact}
    for draw in range(DRAWS):
        moved = evaluate(rounded_inputs(inputs, draw))
        for key, value in exact.items():
            s[key] = max(s[key], float(np.abs(np.asarray(moved[key]) - value).max()))
    return exact, s


def tolerance(want, s, n, depth, rounding=0.0):
    """The bound above for a float32 result whose float64 value is ``want``."""
    scale = float(np.abs(np.asarray(want, np.float64)).max())
    return rounding + LAMBDA * math.sqrt(n * depth) * (U * scale + s)


def p_step_tolerance(P0, step, s, iters):
    """The bound for ``iters`` P steps compared as ``P_after - P0`` with the float64
    ``step``: ten rounding stages a step, sums over P's width d (the neurons N <= d
    of the layers checked), and P rounded after each step."""
    largest_P = max(np.abs(P0).max(), np.abs(P0 + step).max())
    return tolerance(step, s, P0.shape[1], 10 * iters, rounding=iters * U * largest_P)


def assert_within(got, want, tol, what):
    """``max |got - want| <= tol``, saying by how much it is over or under."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f'{what}: shape {got.shape}, expected {want.shape}'
    assert np.isfinite(got).all(), f'{what}: not finite'
    err = float(np.abs(got - want).max())
    report = os.environ.get('FLOAT32_BOUND_REPORT')
    if report:
        with open(report, 'a') as f:
            f.write(f'{what}\t{err:.4g}\t{tol:.4g}\t{err / tol if tol > 0 else 0.0:.4f}\n')
    assert err <= tol, (f'{what}: max |float32 - float64| = {err:.3g}, over the bound {tol:.3g} '
                        f'({err / tol:.2f} x; max |value| {np.abs(want).max():.3g})')


def assert_float32_result(got, evaluate, inputs, n, depth, what):
    """A float32 result ``got`` of a graph against ``evaluate(**inputs)`` (NumPy, float64)
    at the same float32 inputs, within the bound with ``s`` measured there."""
    exact, s = sensitivity(lambda x: {'y': evaluate(**x)}, inputs)
    assert_within(got, exact['y'], tolerance(exact['y'], s['y'], n, depth), what)
