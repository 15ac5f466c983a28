"""keras_comhe (the Keras 3 API) on the TensorFlow, JAX and PyTorch backends:
the same values and gradients as the graph code of common/paper/energy.py and
common/paper/projections.py on the same W, P and draws, finite at equal, opposite and
zero neurons, and model.fit / save / load with every regulariser. Each backend
runs tests/scripts/keras_backend_check.py in its own process (Keras picks one backend
per process); this process computes the graph code's values in float32 and
float64. Each float32 side (the backend's, the graph code's, fit's step) is
checked against the float64 values within the bound of tests/helpers/float32_bound.py,
which holds on any CPU, rather than one float32 side against the other."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import float32_bound
from common.paper import projections as proj
from common.paper.energy import POWERS, hyperspherical_energy
from conftest import ROOT, subprocess_env
from test_energy import edge_cases

BACKENDS = ('tensorflow', 'jax', 'torch')
LR, ITERS = 0.1, 3
LEARNED = {'angle': proj.angle_projection_term, 'adversarial': proj.adversarial_projection_term}


def make_inputs():
    rng = np.random.default_rng(20)
    f32 = np.float32
    inputs = dict(W=rng.normal(size=(9, 7)).astype(f32), B=rng.normal(size=(3, 6, 10)).astype(f32),
                  upstream=rng.uniform(0.5, 2.0, size=3).astype(f32),
                  Wl=rng.normal(size=(12, 9)).astype(f32), P=rng.normal(size=(5, 12)).astype(f32),
                  lr=np.array(LR), iters=np.array(ITERS))
    # Joint P steps (descend_projections): a second layer shaped as (P, Wl), one as W.
    inputs.update(Wl2=rng.normal(size=(12, 9)).astype(f32), P2=rng.normal(size=(5, 12)).astype(f32),
                  P3=rng.normal(size=(5, 9)).astype(f32))
    for case, W in edge_cases().items():
        inputs['edge/' + case] = W.astype(f32)
    inputs['edge/P'] = rng.normal(size=(3, 6)).astype(f32)
    inputs['edge/draws'] = rng.normal(size=(2, 3, 6)).astype(f32)
    return inputs


# Each value's float32 rounding stages (tests/helpers/float32_bound.py); a gradient doubles them.
DEPTH = {'energy': 4, 'batched': 4, 'rp': 5, 'objective': 6, 'term': 14, 'descend': 10 * ITERS}
LONGEST_SUM = 20   # of the parity inputs: B's 2 x 10 neurons in the half space


def depth(key):
    parts = key.split('/')
    kind = parts[0] if parts[0] in DEPTH else next((p for p in parts if p in DEPTH), 'term')
    return DEPTH[kind] * (2 if 'grad' in parts[-1] else 1)


GRAPH_INPUTS = ('W', 'B', 'Wl', 'P', 'upstream', 'Wl2', 'P2', 'P3')
JOINT_LAYERS = (('P', 'Wl'), ('P3', 'W'), ('P2', 'Wl2'))   # as in keras_backend_check
JOINT_FORMS = ('auto', 'direct', 'gram')


def graph_values(inputs, dtype):
    """A function of arrays shaped as ``inputs``: the graph code's values and gradients
    on them, in ``dtype``, from one graph built once. In float32 RP draws its own
    projections (returned as 'draws'); in float64 it takes the arrays' 'draws'."""
    graph = tf.Graph()
    with graph.as_default():
        fed = {k: tf.placeholder(dtype, np.shape(inputs[k])) for k in GRAPH_INPUTS}
        W, B, Wl, P, upstream = (fed[k] for k in ('W', 'B', 'Wl', 'P', 'upstream'))
        fetch = {}
        for power in POWERS:
            for half in (False, True):
                e = hyperspherical_energy(W, power, half)
                fetch[f'energy/{power}/{int(half)}'] = e
                fetch[f'energy/{power}/{int(half)}/grad'] = tf.gradients(e, W)[0]
                eb = hyperspherical_energy(B, power, half)
                fetch[f'batched/{power}/{int(half)}'] = eb
                fetch[f'batched/{power}/{int(half)}/grad'] = tf.gradients(tf.reduce_sum(upstream * eb), B)[0]
        if dtype == np.float32:
            step = tf.constant(11, tf.int64)
            rp = proj.random_projection_term(Wl, pd=4, num_proj=3, seed=345, step=step, layer_index=1)
            fetch['draws'] = proj.random_projection_draws(12, 4, 3, 345, step, 1)
        else:   # the term on the float32 run's draws
            fed['draws'] = tf.placeholder(dtype, np.shape(inputs['draws']))
            rp = proj.projected_energy(Wl, fed['draws'])
        fetch.update({'rp': rp, 'rp/grad': tf.gradients(rp, Wl)[0]})
        for variant, term_fn in LEARNED.items():
            term, objective = term_fn(Wl, P, LR)
            fetch[variant] = term
            fetch[variant + '/grad_w'], fetch[variant + '/grad_p'] = tf.gradients(term, [Wl, P])
            if variant == 'angle':
                decayed, _ = term_fn(Wl, P, LR, lookahead_decay=True)
                fetch['angle/decay'] = decayed
                fetch['angle/decay/grad_w'], fetch['angle/decay/grad_p'] = tf.gradients(decayed, [Wl, P])
            fetch[variant + '/objective'] = objective
            objective_of = proj.LEARNED_VARIANTS[variant][1](Wl)
            for form in ('direct', 'gram'):
                fetch[f'{variant}/descend/{form}'] = proj.descend_projection(
                    P, Wl, objective_of, LR, ITERS, form)
            # keras_backend_check's joint P steps of the layers (P, Wl), (P3, W), (P2, Wl2).
            for k, (Pk, Wk) in enumerate(JOINT_LAYERS):
                stepped = proj.descend_projection(fed[Pk], fed[Wk], proj.LEARNED_VARIANTS[variant][1](fed[Wk]),
                                                  LR, ITERS, 'direct')
                for form in JOINT_FORMS:
                    fetch[f'{variant}/descend/joint_{form}{k}'] = stepped
    sess = tf.Session(graph=graph)
    return lambda arrays: sess.run(fetch, {fed[k]: arrays[k] for k in fed})


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """(the parity inputs with the graph code's RP draws, in inputs.npz of the folder;
    the graph code's float32 values; the folder)."""
    folder = tmp_path_factory.mktemp('keras_comhe')
    inputs = make_inputs()
    graph32 = graph_values(inputs, np.float32)(inputs)
    inputs['draws'] = graph32['draws']
    np.savez(folder / 'inputs.npz', **inputs)
    return inputs, graph32, folder


@pytest.fixture(scope='module')
def backend_runs(reference):
    """One keras_backend_check.py process per installed backend, all started at once."""
    runs = {}
    folder = reference[-1]
    for name in BACKENDS:
        if importlib.util.find_spec(name) is None:
            continue
        # PyTorch fits without JIT: torch.compile of these steps takes minutes on a CPU.
        argv = [sys.executable, str(ROOT / 'tests' / 'scripts' / 'keras_backend_check.py'), str(folder / 'inputs.npz'),
                str(folder / f'{name}.npz'), str(folder)] + (['--eager'] if name == 'torch' else [])
        runs[name] = subprocess.Popen(argv, cwd=folder, env=dict(subprocess_env(), KERAS_BACKEND=name),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
            run.communicate()


@pytest.fixture(scope='module')
def exact(reference, backend_runs):
    """(the graph code's float64 values, s of each: tests/helpers/float32_bound.py), computed
    while the backends run."""
    inputs = {k: reference[0][k] for k in GRAPH_INPUTS + ('draws',)}
    return float32_bound.sensitivity(graph_values(inputs, np.float64), inputs)


@pytest.fixture(scope='module', params=BACKENDS)
def backend(request, reference, backend_runs, exact):
    """(results of keras_backend_check.py on one backend, the graph code's float32
    values, its float64 values, s of each)."""
    name = request.param
    if name not in backend_runs:
        pytest.skip(f'{name} is not installed (pip install -r requirements-dev.txt installs it)')
    _, stderr = backend_runs[name].communicate(timeout=600)
    assert backend_runs[name].returncode == 0, stderr[-4000:]
    got = dict(np.load(reference[-1] / f'{name}.npz'))
    assert str(got['backend']) == name
    return got, reference[1], *exact


def equal_the_exact_value(backend, key):
    """The backend's float32 value of ``key`` and the graph code's are each within the
    float32 bound of the graph code's float64 value (tests/helpers/float32_bound.py)."""
    got, graph32, exact, s = backend
    tol = float32_bound.tolerance(exact[key], s[key], LONGEST_SUM, depth(key))
    for side, value in ((str(got['backend']), got[key]), ('graph code', graph32[key])):
        float32_bound.assert_within(value, exact[key], tol, f'{key} ({side}, float32)')


@pytest.mark.parametrize('half', [0, 1])
@pytest.mark.parametrize('power', POWERS)
def test_energies_and_gradients_equal_the_graph_code(backend, power, half):
    # Batched [T, d, N]: power '2' and 'a2' (the code that the other four kernels share).
    for key in (f'energy/{power}/{half}',) + ((f'batched/{power}/{half}',) if power in ('2', 'a2') else ()):
        equal_the_exact_value(backend, key)
        equal_the_exact_value(backend, key + '/grad')


def test_rp_term_equals_the_graph_code_on_its_draws(backend):
    equal_the_exact_value(backend, 'rp')
    equal_the_exact_value(backend, 'rp/grad')


@pytest.mark.parametrize('variant', list(LEARNED))
def test_learned_terms_and_p_steps_equal_the_graph_code(backend, variant):
    # The term (through its look-ahead), its gradients in W and P, P's objective, ITERS P steps.
    for suffix in ('', '/grad_w', '/grad_p', '/objective', '/descend/direct', '/descend/gram'):
        equal_the_exact_value(backend, variant + suffix)


@pytest.mark.parametrize('variant', list(LEARNED))
def test_joint_p_steps_of_several_layers_equal_each_layers_own(backend, variant):
    # Three layers, two of one shape (stacked into one batched op) and one of another, in
    # each form (auto: direct for the stacked pair, Gram for the other at these shapes).
    for form in JOINT_FORMS:
        for k in range(len(JOINT_LAYERS)):
            equal_the_exact_value(backend, f'{variant}/descend/joint_{form}{k}')


def test_ap_with_the_decay_in_its_lookahead_equals_the_graph_code(backend):
    for key in ('angle/decay', 'angle/decay/grad_w', 'angle/decay/grad_p'):
        equal_the_exact_value(backend, key)


@pytest.mark.parametrize('case', sorted(edge_cases()))
def test_edge_cases_give_finite_values_and_gradients(backend, case):
    got = backend[0]
    flags = got['edge/' + case]
    assert flags.size == len(POWERS) * 2 + 5 and flags.all(), flags


FIT_LR0 = 0.05                       # the learning rate of fit's step 0 (keras_backend_check.py)
FIT_LEARNED = {'conv3': ('angle', 1), 'dense1': ('adversarial', 3)}   # layer: (variant, iters)


def conv_same(x, kernel):
    """A stride-1 'same' convolution (Keras's Conv2D, no bias) in NumPy."""
    h, w = x.shape[1:3]
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    return sum(np.einsum('bhwc,co->bhwo', padded[:, i:i + h, j:j + w], kernel[i, j])
               for i in range(kh) for j in range(kw))


def exact_first_step(a):
    """In float64, what fit's step 0 computes on keras_backend_check.py's small model from
    the same weights, batch, RP draws and P: P after each learned layer's P steps
    (its 'step' from P0) and the loss, cross-entropy plus every term."""
    weight = lambda layer, kind='kernel': a[f'fit/weights/{layer}/{kind}']   # noqa: E731 (a short lookup)
    h = a['fit/x']
    for layer in ('conv1', 'conv2', 'conv3'):
        h = np.maximum(conv_same(h, weight(layer)), 0.0)
    b, height, width, c = h.shape   # AveragePooling2D(4), then Flatten
    h = h.reshape(b, height // 4, 4, width // 4, 4, c).mean(axis=(2, 4)).reshape(b, -1)
    for layer in ('dense1', 'dense2'):
        h = np.maximum(h @ weight(layer) + weight(layer, 'bias'), 0.0)
    logits = h @ weight('score') + weight('score', 'bias')
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(len(h)), a['fit/y'].astype(int)].mean()
    with tf.Graph().as_default(), tf.Session() as sess:
        W = {layer: tf.constant(weight(layer).reshape(-1, weight(layer).shape[-1]))
             for layer in ('conv1', 'conv2', 'conv3', 'dense1', 'dense2', 'score')}

        def rp(layer):
            return proj.projected_energy(W[layer], tf.constant(a['fit/draws/' + layer]))
        P1, terms = {}, [hyperspherical_energy(W['conv1'], '2', True), rp('conv2'), 0.5 * rp('dense2'),
                         10.0 * hyperspherical_energy(W['score'], '2')]
        for layer, (variant, iters) in FIT_LEARNED.items():
            P1[layer] = proj.descend_projection(tf.constant(a['fit/P0/' + layer]), W[layer],
                                                proj.LEARNED_VARIANTS[variant][1](W[layer]), FIT_LR0, iters)
            terms.append(LEARNED[variant](W[layer], P1[layer], FIT_LR0)[0])
        out = sess.run({'terms': tf.add_n(terms), **{'step/' + k: P1[k] for k in P1}})
    for layer in FIT_LEARNED:
        out['step/' + layer] = out['step/' + layer] - a['fit/P0/' + layer]
    out['loss0'] = cross_entropy + out.pop('terms')
    return out


def test_fit_takes_p_steps_and_the_first_loss_is_the_reproductions(backend):
    got = backend[0]
    # Step 0: the P steps ran on the weights before it, at its learning rate (0.05), and
    # the loss is cross-entropy plus every term at those weights. fit's float32 values, and
    # the same computed apart in Keras, each within the float32 bound of the float64 values.
    start = {k: v for k, v in got.items() if k.startswith(('fit/x', 'fit/y', 'fit/weights/', 'fit/draws/',
                                                          'fit/P0/'))}
    exact, s = float32_bound.sensitivity(exact_first_step, start)
    for name, (variant, iters) in FIT_LEARNED.items():
        P0 = got['fit/P0/' + name].astype(np.float64)
        tol = float32_bound.p_step_tolerance(P0, exact['step/' + name], s['step/' + name], iters)
        for key in ('fit/P1/', 'fit/P1_expected/'):
            float32_bound.assert_within(got[key + name] - P0, exact['step/' + name], tol,
                                        f'{name}: {variant} P step in step 0 ({key})')
        assert float(got[f'fit/lr1/{name}']) == pytest.approx(FIT_LR0)
        assert got[f'fit/P_changed_later/{name}']
        assert float(got[f'fit/lr_later/{name}']) == pytest.approx(0.02)   # the schedule's next value
    loss0 = got['fit/loss0']
    assert loss0.shape == (1,)
    # The longest sum: conv3's 72 inputs. Six layers, the softmax and the terms (AP/AdvP: 14).
    tol = float32_bound.tolerance(exact['loss0'], s['loss0'], 72, 24)
    for value, what in ((loss0[0], 'fit'), (got['fit/loss0_expected'], 'computed apart')):
        float32_bound.assert_within(value, exact['loss0'], tol, f'loss of step 0 ({what})')
    later = got['fit/losses_later']
    assert later.shape == (2,) and np.isfinite(later).all()
    assert got['fit/seed_advanced/conv2'] and got['fit/seed_advanced/dense2']
    assert np.isfinite(got['fit/plain_losses']).all()


def test_a_learned_projection_without_its_p_steps_is_an_error(backend):
    got = backend[0]
    assert 'CoMHEModel' in str(got['fit/unwrapped_error'])


def test_saved_model_loads_with_its_regularisers_and_state(backend):
    got = backend[0]
    assert got['save/weights_equal']
    assert got['save/same_classes_and_configs']
    for name in ('conv3', 'dense1'):
        assert float(got[f'save/P_diff/{name}']) == 0.0
        assert float(got[f'save/lr/{name}']) == pytest.approx(0.02)
    assert np.isfinite(got['save/losses_after_load']).all()
    assert got['save/P_steps_after_load']


def test_jit_compilation_is_on_except_for_pytorch(backend):
    got = backend[0]
    assert bool(got['jit']) == (str(got['backend']) != 'torch')
