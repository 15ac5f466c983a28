"""The energy ops of common/paper/energy.py against the NumPy reference, batched and
single, float32 and float64, eager and in a compat.v1 graph; finite values and
gradients at the edge cases of docs/protocol.md section 1."""
import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

import float32_bound
import numpy_oracle as oracle
from common.paper.energy import POWERS, hyperspherical_energy, pairwise_cosine



def matches_reference(got, W, power, half_space, dtype):
    """The op's energies of W ([d, N] or [T, d, N]) against the NumPy reference: float64
    within 1e-6 relative; float32 within tests/helpers/float32_bound.py's bound (sums over d or
    the N^2 pairs, the kernel's four stages)."""
    def energies(W):
        return np.array([oracle.energy(w, power, half_space) for w in W.reshape(-1, *W.shape[-2:])])
    if dtype == np.float64:
        np.testing.assert_allclose(got, energies(W).reshape(np.shape(got)), rtol=1e-6)
        return
    n = max(W.shape[-2], (2 * W.shape[-1] if half_space else W.shape[-1]) ** 2)
    float32_bound.assert_float32_result(np.reshape(got, -1), energies, {'W': W}, n, 4,
                                        f'energy {power} half={half_space}')


def random_w(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('half_space', [False, True])
@pytest.mark.parametrize('power', POWERS)
def test_energy_matches_reference_single(power, half_space, dtype):
    W = random_w((9, 7), seed=1).astype(dtype)
    got = hyperspherical_energy(W, power, half_space).numpy()  # eager
    assert got.shape == ()
    matches_reference(got, W, power, half_space, dtype)


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('half_space', [False, True])
@pytest.mark.parametrize('power', POWERS)
def test_energy_matches_reference_batched_in_graph(session, power, half_space, dtype):
    W = random_w((3, 6, 10), seed=2).astype(dtype)
    got = session.run(hyperspherical_energy(tf.constant(W), power, half_space))
    assert got.shape == (3,)
    matches_reference(got, W, power, half_space, dtype)


def test_half_space_is_not_the_full_space_energy():
    # Guards against a half-space op that silently returns the full energy.
    W = random_w((5, 6), seed=3)
    full = hyperspherical_energy(W, '2').numpy()
    half = hyperspherical_energy(W, '2', half_space=True).numpy()
    assert abs(full - half) > 1e-3
    np.testing.assert_allclose(half, oracle.energy(W, '2', True), rtol=1e-6)


def test_pairwise_cosine_matches_reference_and_batches():
    W = random_w((2, 8, 5), seed=4)
    got = pairwise_cosine(W).numpy()
    for t in range(2):
        np.testing.assert_allclose(got[t], oracle.cosine(W[t]), rtol=1e-6)
    # The 1e-4 inside the norm: the diagonal is slightly below 1.
    sq = np.sum(W[0] ** 2, axis=0)
    np.testing.assert_allclose(np.diag(got[0]), sq / (sq + 1e-4), rtol=1e-12)


def edge_cases():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(6, 4))
    equal = base.copy()
    equal[:, 1] = equal[:, 0]
    big_equal = base * 1e3      # cosines round to exactly 1 in float32
    big_equal[:, 1] = big_equal[:, 0]
    opposite = base.copy()
    opposite[:, 1] = -opposite[:, 0]
    zero = base.copy()
    zero[:, 2] = 0.0
    return {'equal': equal, 'equal_large_norm': big_equal, 'opposite': opposite, 'zero_neuron': zero}


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('half_space', [False, True])
@pytest.mark.parametrize('power', POWERS)
@pytest.mark.parametrize('case', sorted(edge_cases()))
def test_edge_cases_have_finite_values_and_gradients(case, power, half_space, dtype):
    W = tf2.Variable(edge_cases()[case].astype(dtype))
    with tf2.GradientTape() as tape:
        e = hyperspherical_energy(W, power, half_space)
    grad = tape.gradient(e, W)
    assert np.isfinite(e.numpy())
    assert grad is not None and np.all(np.isfinite(grad.numpy()))


def test_acos_kernels_finite_at_exact_unit_cosines():
    # Neurons along one axis: |c| rounds to 1 and acos would have an infinite slope.
    W = tf2.Variable(np.array([[1e3, 1e3, -1e3], [0, 0, 0]], np.float32))
    for power in ('a0', 'a1', 'a2'):
        for half_space in (False, True):
            with tf2.GradientTape() as tape:
                e = hyperspherical_energy(W, power, half_space)
            assert np.isfinite(e.numpy())
            assert np.all(np.isfinite(tape.gradient(e, W).numpy()))


def _upstream(shape, seed):
    """Distinct weights per slice/entry, so a gradient that mixes them up shows."""
    return np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)


@pytest.mark.parametrize('half_space', [False, True])
@pytest.mark.parametrize('power', POWERS)
def test_energy_gradients_match_finite_differences(session, power, half_space):
    # Single [d, N] against the NumPy reference, and a batch [T, d, N] under a
    # weighted sum (each projection's gradient must get its own upstream value).
    W0 = random_w((5, 4), seed=6)
    W = tf.constant(W0)
    grad = session.run(tf.gradients(hyperspherical_energy(W, power, half_space), W)[0])
    want = oracle.finite_difference_grad(lambda w: oracle.energy(w, power, half_space), W0)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)

    B0, u = random_w((3, 4, 6), seed=7), _upstream(3, 8)
    B = tf.placeholder(tf.float64, B0.shape)
    weighted = tf.reduce_sum(u * hyperspherical_energy(B, power, half_space))
    grad = session.run(tf.gradients(weighted, B)[0], {B: B0})
    want = oracle.finite_difference_grad(lambda b: session.run(weighted, {B: b}), B0)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('shape', [(3, 6), (9, 4), (2, 3, 6), (2, 9, 4)], ids=str)
def test_pairwise_cosine_gradient_and_its_derivative(session, shape):
    # Both code paths (d <= N and d > N), a non-symmetric upstream, and the
    # derivative of the gradient (AP's look-ahead differentiates it again).
    W0, V = random_w(shape, seed=9), random_w(shape, seed=10)
    U = _upstream(shape[:-2] + (shape[-1], shape[-1]), 11)
    W = tf.placeholder(tf.float64, shape)
    loss = tf.reduce_sum(U * pairwise_cosine(W))
    grad = tf.gradients(loss, W)[0]
    hvp = tf.gradients(tf.reduce_sum(grad * V), W)[0]
    got_grad, got_hvp = session.run([grad, hvp], {W: W0})
    fd = oracle.finite_difference_grad
    np.testing.assert_allclose(got_grad, fd(lambda w: session.run(loss, {W: w}), W0),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got_hvp, fd(lambda w: float(np.sum(session.run(grad, {W: w}) * V)), W0),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('half_space', [False, True])
@pytest.mark.parametrize('shape', [(5, 4), (2, 3, 6)], ids=str)
def test_power2_gradient_can_be_differentiated_again(session, shape, half_space):
    # The hand-written power-'2' gradient carries AdvP's second-order path.
    W0, V = random_w(shape, seed=12), random_w(shape, seed=13)
    W = tf.placeholder(tf.float64, shape)
    grad = tf.gradients(tf.reduce_sum(hyperspherical_energy(W, '2', half_space)), W)[0]
    hvp = tf.gradients(tf.reduce_sum(grad * V), W)[0]
    want = oracle.finite_difference_grad(
        lambda w: float(np.sum(session.run(grad, {W: w}) * V)), W0)
    np.testing.assert_allclose(session.run(hvp, {W: W0}), want, rtol=1e-5, atol=1e-7)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown power '3'"):
        hyperspherical_energy(np.ones((3, 4)), '3')
    with pytest.raises(ValueError, match='at least 2 neurons'):
        hyperspherical_energy(np.ones((3, 1)))
    with pytest.raises(ValueError, match=r'\[d, N\] or \[T, d, N\]'):
        hyperspherical_energy(np.ones((3,)))
