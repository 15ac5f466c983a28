"""The CNN-9 training graph of each variant, in-process: the logged terms at
initialisation against NumPy, and which optimiser moves which variables."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import float32_bound
import numpy_oracle as oracle
from common.run import config
from common.paper import schedule
from common.paper.projections import (LEARNED_COLLECTION, LEARNED_VARIANTS, PROJECTION_COLLECTION,
                                      descend_projection, random_projection_draws)
from common.tf1_engine.training import build_graph, session_config
from conftest import VARIANTS, entry_flags, graph_terms_of, load_entry_point

ARGS = ('--width', '0.125', '--batch_size', '8', '--pn', '2', '--pd', '5')


_BUILT = {}


def built(variant, *extra):
    """The graph of ``<variant>/train.py ARGS extra`` and its session, its variables
    (optimiser slots, averages and global step among them) just initialised. Each
    graph is built once per module; a test that asks again gets it re-initialised."""
    key = (variant, *extra)
    if key not in _BUILT:
        module = load_entry_point(variant)
        flags = entry_flags(module, *ARGS, *extra)
        graph = tf.Graph()
        with graph.as_default():
            g = build_graph(flags, **graph_terms_of(module, flags))
            init = tf.global_variables_initializer()
        _BUILT[key] = flags, graph, g, tf.Session(graph=graph, config=session_config()), init
    flags, graph, g, sess, init = _BUILT[key]
    sess.run(init)
    return flags, graph, g, sess


@pytest.fixture(scope='module', autouse=True)
def close_sessions():
    yield
    for *_, sess, _ in _BUILT.values():
        sess.close()
    _BUILT.clear()


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n)


def filter_matrix(graph, sess, layer):
    [variable] = [v for v in graph.get_collection('variables') if v.op.name == f'{layer}/filter']
    kernel = sess.run(variable)
    return kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)


HIDDEN = ['conv1_1', 'conv1_2', 'conv2_0', 'conv2_1', 'conv2_2', 'conv3_0', 'conv3_1', 'conv3_2', 'fc6']


@pytest.mark.parametrize('variant', VARIANTS)
def test_logged_terms_at_init_equal_numpy(variant):
    flags, graph, g, sess = built(variant)
    x, y = batch()
    lr = 0.1
    feed = {g.images: x, g.labels: y, g.is_training: True, g.lr: lr}
    fit, reg, thom, thomf, logits = sess.run(
        [g.fit, g.reg, g.thom, g.thomf, g.model.logits], feed)

    decayed = sess.run(g.model.decayed)
    assert len(decayed) == 11 + 2 * 9      # 11 filters, gamma and beta of 9 BN layers
    # Each float32 term against the formula in float64 at the graph's own float32 values
    # (weights, logits, P), within tests/helpers/float32_bound.py's bound.
    float32_bound.assert_float32_result(
        reg, lambda **v: 5e-4 * sum(np.sum(x ** 2) / 2 for x in v.values()),
        {f'v{i}': v for i, v in enumerate(decayed)}, max(v.size for v in decayed), 3, 'reg')

    def fit_of(z):
        softmax = np.exp(z - z.max(1, keepdims=True))
        softmax /= softmax.sum(1, keepdims=True)
        target = 0.99 * np.eye(100)[y] + 0.01 / 100
        return np.mean(-np.sum(target * np.log(softmax + 1e-4), 1))
    float32_bound.assert_float32_result(fit, fit_of, {'z': logits}, 100, 5, 'fit')

    layers = {name: filter_matrix(graph, sess, name) for name in ['conv1_0', 'score'] + HIDDEN}
    inputs = {'conv1_0': layers['conv1_0']}
    for index, name in enumerate(HIDDEN, start=1):
        inputs[name] = layers[name]
        if variant == 'random_projection':
            with graph.as_default():
                draws = random_projection_draws(layers[name].shape[0], flags.pd, flags.pn,
                                                flags.random_seed, tf.constant(0, tf.int64), index)
            inputs[f'P_{name}'] = sess.run(draws)             # [T, pd, d]
        else:
            inputs[f'P_{name}'] = sess.run(graph.get_tensor_by_name(f'{name}/projection_lookahead:0'),
                                           {g.lr: lr})[None]

    def thom_of(**v):
        per_layer = [oracle.energy(v['conv1_0'], '2', half_space=True)]
        per_layer += [np.mean([oracle.energy(P @ v[name], '2', True) for P in v[f'P_{name}']])
                      for name in HIDDEN]
        assert len(per_layer) == 10
        return sum(per_layer)
    # The longest sums: a layer's d (the products P W) or its N^2 pairs; the energy's
    # stages, the products and the sum over layers.
    longest = max(max(W.shape[0], W.shape[1] ** 2) for W in layers.values())
    float32_bound.assert_float32_result(thom, thom_of, inputs, longest, 6, 'thom')
    float32_bound.assert_float32_result(thomf, lambda W: 10 * oracle.energy(W, '2'),
                                        {'W': layers['score']}, longest, 4, 'thomf')


@pytest.mark.parametrize('variant', ['angle_projection', 'adversarial_projection'])
def test_the_training_op_takes_the_p_steps_then_the_main_step(variant):
    # One session call per iteration: train_op moves P by exactly the P steps
    # (taken from the W before the update), and W by the main step.
    flags, graph, g, sess = built(variant)
    assert g.p_steps_in_train_op
    P_vars = graph.get_collection(PROJECTION_COLLECTION)
    assert len(P_vars) == 9
    x, y = batch()
    feed = {g.images: x, g.labels: y, g.is_training: True, g.lr: 0.1}
    P0, W0 = sess.run(P_vars), filter_matrix(graph, sess, 'conv2_0')
    sess.run(g.p_steps, {g.lr: 0.1})
    P_alone, W_alone = sess.run(P_vars), filter_matrix(graph, sess, 'conv2_0')
    assert all(not np.allclose(a, b) for a, b in zip(P0, P_alone))
    np.testing.assert_array_equal(W0, W_alone)           # P steps leave W alone
    with graph.as_default():
        for P, value in zip(P_vars, P0):
            P.load(value, sess)
    sess.run(g.train_op, feed)
    P1, W1 = sess.run(P_vars), filter_matrix(graph, sess, 'conv2_0')
    assert not np.allclose(W0, W1)                       # the main step trains W
    for a, b in zip(P_alone, P1):                        # the same P steps, from the same W
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('variant,lr', [('angle_projection', 0.01), ('adversarial_projection', 0.001)])
def test_p_steps_move_their_objective_the_right_way(variant, lr):
    # AP's P loss falls; AdvP's projected energy E(P W) rises, run after run of
    # its 10 steps (at a small lr: the power-'2' energy is steep, larger steps overshoot).
    flags, graph, g, sess = built(variant)
    trace = []
    for _ in range(4):
        trace.append(sess.run(g.p_objective))
        sess.run(g.p_steps, {g.lr: lr})
    trace.append(sess.run(g.p_objective))
    # AdvP's objective is -E_P + a tiny decay: falling objective = rising energy.
    assert trace[-1] < trace[0], trace
    if variant == 'adversarial_projection':
        energies = [-t for t in trace]
        assert np.all(np.diff(energies) > 0), energies


def exact_p_steps(variant, P0s, Ws, lr, iters):
    """A function: {'P<i>', 'W<i>'} -> {'step<i>'}, ``iters`` P steps of each layer in
    float64 (the graph code's direct form), from one graph built once."""
    graph = tf.Graph()
    with graph.as_default():
        fed, steps = {}, {}
        for i, (P0, W0) in enumerate(zip(P0s, Ws)):
            fed[f'P{i}'] = P = tf.placeholder(tf.float64, np.shape(P0))
            fed[f'W{i}'] = W = tf.placeholder(tf.float64, np.shape(W0))
            steps[f'step{i}'] = descend_projection(P, W, LEARNED_VARIANTS[variant][1](W), lr, iters, 'direct') - P
    sess = tf.Session(graph=graph)
    return lambda arrays: sess.run(steps, {fed[k]: arrays[k] for k in fed})


@pytest.mark.parametrize('variant', ['angle_projection', 'adversarial_projection'])
def test_p_steps_are_iters_gradient_descent_steps_on_the_p_objective(variant):
    # The one-op P steps (Gram form for AdvP) and `iters` optimiser steps on the logged
    # P objective of the whole network: each within the float32 bound of the same steps
    # in float64 (tests/helpers/float32_bound.py).
    flags, graph, g, sess = built(variant, '--iters', '3')
    P_vars = graph.get_collection(PROJECTION_COLLECTION)
    learned = graph.get_collection(LEARNED_COLLECTION)
    assert [p.P for p in learned] == P_vars
    with graph.as_default():
        one_step = tf.train.GradientDescentOptimizer(g.lr).minimize(g.p_objective, var_list=P_vars)
    P0, Ws = sess.run(P_vars), sess.run([p.W for p in learned])
    sess.run(g.p_steps, {g.lr: 0.1})
    fused = sess.run(P_vars)
    with graph.as_default():
        for P, value in zip(P_vars, P0):
            P.load(value, sess)
    for _ in range(3):
        sess.run(one_step, {g.lr: 0.1})
    kind = 'angle' if variant == 'angle_projection' else 'adversarial'
    start = {**{f'P{i}': P for i, P in enumerate(P0)}, **{f'W{i}': W for i, W in enumerate(Ws)}}
    exact, s = float32_bound.sensitivity(exact_p_steps(kind, P0, Ws, 0.1, 3), start)
    for i, (a, b) in enumerate(zip(fused, sess.run(P_vars))):
        step = exact[f'step{i}']
        assert np.abs(step).max() > 1e-4 * np.abs(P0[i]).max()      # the steps move P
        tol = float32_bound.p_step_tolerance(P0[i], step, s[f'step{i}'], 3)
        for got, how in ((a, 'one op'), (b, 'optimiser')):
            float32_bound.assert_within(got.astype(np.float64) - P0[i], step, tol,
                                        f'{kind} P steps of layer {i} ({how}), float32')


def test_learning_rate_schedule_scales_with_max_iters():
    lr = schedule.learning_rate
    assert [lr(i, 0.1, 75000) for i in (0, 29999, 30000, 49999, 50000, 65000, 74999)] == \
        pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001])
    # 750 iterations: steps at 300, 500, 650.
    assert [lr(i, 0.1, 750) for i in (299, 300, 500, 650)] == pytest.approx([0.1, 0.01, 0.001, 0.0001])


def test_run_names_follow_the_release():
    rp, ap = load_entry_point('random_projection'), load_entry_point('angle_projection')
    assert config.run_name(entry_flags(rp)) == 'pd40_pn20'
    assert config.run_name(entry_flags(rp, '--pnd', '4')) == 'pd40_pnd4'
    assert config.run_name(entry_flags(ap)) == 'pd30_pn1_iter1'
    assert config.run_name(entry_flags(load_entry_point('adversarial_projection'))) == 'pd30_pn1_iter10'


@pytest.mark.parametrize('zero_debias', [False, True])
def test_bn_test_statistics_are_the_release_averages_of_batch_moments(zero_debias):
    # Protocol section 2: ExponentialMovingAverage(0.999).apply([mean, var]) with TF 1.x's default
    # zero_debias=False: the averages start at 0, so after t steps they are (1 - 0.999^t)
    # times the debiased ones; --bn_zero_debias divides that factor out.
    flags, graph, g, sess = built('random_projection', *(['--bn_zero_debias'] if zero_debias else []))
    assert flags.bn_zero_debias == zero_debias
    mean = graph.get_tensor_by_name('conv1_0/bn/moments/Squeeze:0')
    var = graph.get_tensor_by_name('conv1_0/bn/moments/Squeeze_1:0')
    averages = [v for v in graph.get_collection('variables')
                if v.op.name.startswith('conv1_0/bn/') and v.op.name.endswith('ExponentialMovingAverage')]
    assert len(averages) == 2
    seen = []
    steps = 3
    for seed in range(steps):
        x, y = batch(seed=seed)
        seen.append(sess.run([mean, var, g.train_op],
                             {g.images: x, g.labels: y, g.is_training: True, g.lr: 0.1})[:2])
    weights = 0.999 ** np.arange(steps - 1, -1, -1) * 0.001
    for k, average in enumerate(sorted(averages, key=lambda v: v.op.name)):
        biased = sum(w * s[k] for w, s in zip(weights, seen))
        debiased = biased / (1 - 0.999 ** steps)
        np.testing.assert_allclose(sess.run(average), debiased if zero_debias else biased,
                                   rtol=1e-4, atol=1e-9)
    # At test time the layer normalises with exactly those averages.
    x, y = batch(seed=9)
    conv, out, gamma, beta = sess.run(
        [graph.get_tensor_by_name('conv1_0/Conv2D:0'), graph.get_tensor_by_name('conv1_0/Relu:0'),
         *[v for v in graph.get_collection('variables') if v.op.name in ('conv1_0/bn/gamma', 'conv1_0/bn/beta')]],
        {g.images: x, g.is_training: False})
    avg_mean, avg_var = sess.run(sorted(averages, key=lambda v: v.op.name))
    want = np.maximum(gamma * (conv - avg_mean) / np.sqrt(avg_var + 1e-3) + beta, 0)
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('value, optimised', [(None, True), ('1', True), ('0', False)])
def test_session_config_turns_grappler_off_only_when_asked(monkeypatch, value, optimised):
    if value is None:
        monkeypatch.delenv('COMHE_GRAPPLER', raising=False)
    else:
        monkeypatch.setenv('COMHE_GRAPPLER', value)
    config = session_config()
    assert config.graph_options.rewrite_options.disable_meta_optimizer is not optimised
    assert config.allow_soft_placement and config.gpu_options.allow_growth


def test_session_config_refuses_other_grappler_values(monkeypatch):
    monkeypatch.setenv('COMHE_GRAPPLER', 'off')
    with pytest.raises(ValueError, match="COMHE_GRAPPLER='off': use 1"):
        session_config()
