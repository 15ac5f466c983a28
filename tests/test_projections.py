"""The three CoMHE terms of common/paper/projections.py (docs/protocol.md section 3)."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import float32_bound
import numpy_oracle as oracle
from common.paper import projections as proj


def test_num_projections_from_pn_or_pnd():
    assert proj.num_projections(256, pn=20, pnd=0) == 20
    assert proj.num_projections(256, pn=20, pnd=4) == 64
    assert proj.num_projections(64, pn=20, pnd=4) == 16


def test_rp_draws_differ_by_step_and_repeat_for_the_same_step(session):
    step = tf.placeholder(tf.int64, [])
    draws = proj.random_projection_draws(d=27, pd=5, num_proj=3, seed=345, step=step, layer_index=2)
    a0, a1, a0_again = (session.run(draws, {step: s}) for s in (0, 1, 0))
    assert a0.shape == (3, 5, 27)
    np.testing.assert_array_equal(a0, a0_again)
    assert not np.allclose(a0, a1)
    # Projections within one step, and layers, are distinct draws too.
    assert not np.allclose(a0[0], a0[1])
    other_layer = session.run(
        proj.random_projection_draws(27, 5, 3, seed=345, step=step, layer_index=3), {step: 0})
    assert not np.allclose(a0, other_layer)
    # N(0, 1): loose moments on a larger draw.
    big = session.run(proj.random_projection_draws(100, 40, 20, 345, step, 0), {step: 7})
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02


@pytest.mark.parametrize('pn,pnd,n', [(3, 0, 8), (20, 4, 8)])
def test_rp_term_is_the_mean_over_its_projections(session, pn, pnd, n):
    W0 = np.random.default_rng(0).normal(size=(12, n)).astype(np.float32)
    W = tf.constant(W0)
    T = proj.num_projections(n, pn, pnd)
    step = tf.constant(11, tf.int64)
    term = proj.random_projection_term(W, pd=4, num_proj=T, seed=345, step=step, layer_index=1)
    draws = proj.random_projection_draws(12, 4, T, 345, step, 1)
    term_v, P = session.run([term, draws])
    assert P.shape == (T, 4, 12)
    # float32 against the mean in float64 on the same draws (tests/helpers/float32_bound.py).
    float32_bound.assert_float32_result(
        term_v, lambda W, P: np.mean([oracle.energy(p @ W, '2', half_space=True) for p in P]),
        {'W': W0, 'P': P}, max(12, n * n), 6, 'RP term')


@pytest.mark.parametrize('lookahead_decay', [False, True])
def test_ap_lookahead_is_a_gradient_step_on_its_loss(session, lookahead_decay):
    # The release's look-ahead descends the angle loss alone; the flag adds P's decay.
    rng = np.random.default_rng(1)
    W0, P0 = rng.normal(size=(6, 5)), rng.normal(size=(3, 6))
    lr = 0.1
    P_ahead, objective = proj.angle_projection_lookahead(tf.constant(W0), tf.constant(P0), lr,
                                                         lookahead_decay)
    P_ahead_v, objective_v = session.run([P_ahead, objective])
    np.testing.assert_allclose(objective_v, oracle.angle_objective(W0, P0), rtol=1e-9)

    def descended(p):
        decay = 1e-3 * 5e-4 * np.sum(np.square(p)) / 2
        return oracle.angle_objective(W0, p) - (0.0 if lookahead_decay else decay)
    grad = oracle.finite_difference_grad(descended, P0)
    np.testing.assert_allclose(P_ahead_v, P0 - lr * grad, rtol=1e-6, atol=1e-9)
    # The two forms differ by lr * 5e-7 * P exactly.
    other, _ = proj.angle_projection_lookahead(tf.constant(W0), tf.constant(P0), lr, not lookahead_decay)
    sign = 1.0 if lookahead_decay else -1.0
    np.testing.assert_allclose(session.run(other) - P_ahead_v, sign * lr * 5e-7 * P0, rtol=1e-6, atol=1e-15)


def test_lookahead_decay_is_refused_for_advp(session):
    with pytest.raises(ValueError, match='AP option'):
        proj.learned_projection_term(tf.constant(np.ones((6, 5), np.float32)), 3, 0.1, 'adversarial', 1,
                                     lookahead_decay=True)


def test_ap_term_is_half_space_energy_of_the_lookahead(session):
    rng = np.random.default_rng(2)
    W0, P0 = rng.normal(size=(6, 5)), rng.normal(size=(3, 6))
    P_ahead, _ = proj.angle_projection_lookahead(tf.constant(W0), tf.constant(P0), 0.1)
    term, _ = proj.angle_projection_term(tf.constant(W0), tf.constant(P0), 0.1)
    term_v, P_ahead_v = session.run([term, P_ahead])
    np.testing.assert_allclose(term_v, oracle.energy(P_ahead_v @ W0, '2', True), rtol=1e-9)


def test_advp_lookahead_ascends_the_projected_energy(session):
    rng = np.random.default_rng(3)
    W0, P0 = rng.normal(size=(6, 5)), rng.normal(size=(3, 6))
    lr = 0.05
    P_ahead, objective = proj.adversarial_projection_lookahead(tf.constant(W0), tf.constant(P0), lr)
    P_ahead_v, objective_v = session.run([P_ahead, objective])
    grad = oracle.finite_difference_grad(lambda p: oracle.energy(p @ W0, '2'), P0)
    np.testing.assert_allclose(P_ahead_v, P0 + lr * grad, rtol=1e-6, atol=1e-9)
    decay = 1e-3 * 5e-4 * np.sum(P0 ** 2) / 2
    np.testing.assert_allclose(objective_v, -oracle.energy(P0 @ W0, '2') + decay, rtol=1e-9)


@pytest.mark.parametrize('term_fn', [proj.angle_projection_term, proj.adversarial_projection_term])
@pytest.mark.parametrize('shapes', [((6, 5), (3, 6)), ((4, 7), (3, 4))], ids=str)
def test_learned_terms_differentiate_through_the_lookahead(session, term_fn, shapes):
    # The main loss reaches W through P' = P -/+ lr * dL/dP as well: d term / dW
    # (second derivatives of the energy and cosine ops) against finite differences.
    rng = np.random.default_rng(6)
    W0, P0 = rng.normal(size=shapes[0]), rng.normal(size=shapes[1])
    W, P = tf.placeholder(tf.float64, W0.shape), tf.placeholder(tf.float64, P0.shape)
    term, _ = term_fn(W, P, 0.1)
    grad_w, grad_p = session.run(tf.gradients(term, [W, P]), {W: W0, P: P0})
    want_w = oracle.finite_difference_grad(lambda w: session.run(term, {W: w, P: P0}), W0)
    want_p = oracle.finite_difference_grad(lambda p: session.run(term, {W: W0, P: p}), P0)
    np.testing.assert_allclose(grad_w, want_w, rtol=1e-5, atol=1e-8 * np.abs(want_w).max())
    np.testing.assert_allclose(grad_p, want_p, rtol=1e-5, atol=1e-8 * np.abs(want_p).max())


def p_steps(session, lookahead, steps=5, lr=0.05):
    """Plain gradient descent on P's own objective, as the training loop does."""
    tf.set_random_seed(0)   # P's initial value
    W = tf.constant(np.random.default_rng(4).normal(size=(27, 16)).astype(np.float32))
    P = proj.projection_variable(27, 6)
    _, objective = lookahead(W, P, lr)
    energy = proj.hyperspherical_energy(tf.matmul(P, W), '2')
    step = tf.train.GradientDescentOptimizer(lr).minimize(
        objective, var_list=tf.get_collection(proj.PROJECTION_COLLECTION))
    session.run(tf.global_variables_initializer())
    trace = []
    for _ in range(steps):
        trace.append(session.run([objective, energy]))
        session.run(step)
    trace.append(session.run([objective, energy]))
    return np.array(trace)


def test_projection_variable_is_hidden_from_the_main_optimiser(session):
    P = proj.projection_variable(10, 3)
    assert P not in tf.trainable_variables()
    assert P in tf.get_collection(proj.PROJECTION_COLLECTION)
    assert P in tf.global_variables()


def test_advp_steps_raise_the_projected_energy(session):
    trace = p_steps(session, proj.adversarial_projection_lookahead)
    energies = trace[:, 1]
    assert np.all(np.diff(energies) > 0), energies


def test_ap_steps_lower_the_angle_loss(session):
    trace = p_steps(session, proj.angle_projection_lookahead, lr=0.01)
    losses = trace[:, 0]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize('variant', ['angle', 'adversarial'])
@pytest.mark.parametrize('form', ['direct', 'gram'])
def test_projection_descent_equals_plain_gradient_descent_steps(session, variant, form):
    # Both forms of the P steps give what `iters` separate GradientDescentOptimizer
    # steps on L_P (objective of P W plus P's decay) give.
    rng = np.random.default_rng(5)
    W = tf.constant(rng.normal(size=(20, 7)))
    P0 = rng.normal(size=(4, 20))
    lr, iters = 0.05, 3
    objective_of = proj.LEARNED_VARIANTS[variant][1](W)
    P = tf.Variable(P0)
    objective = objective_of(tf.matmul(P, W)) + proj.P_DECAY * tf.reduce_sum(P * P) / 2
    one_step = tf.train.GradientDescentOptimizer(lr).minimize(objective, var_list=[P])
    descended = proj.descend_projection(P, W, objective_of, lr, iters, form=form)
    session.run(tf.global_variables_initializer())
    got = session.run(descended)
    for _ in range(iters):
        session.run(one_step)
    want = session.run(P)
    assert not np.allclose(want, P0)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_projection_descent_picks_the_cheaper_form():
    # AdvP's 10 steps at CNN-9's shapes: the Gram form; AP's single step: direct.
    for d, n in [(576, 64), (1152, 128), (2304, 256), (4096, 256)]:
        direct, gram = proj.descent_costs(30, d, n, iters=10)
        assert gram < direct
        direct, gram = proj.descent_costs(30, d, n, iters=1)
        assert direct < gram
