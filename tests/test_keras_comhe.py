"""keras_comhe (the Keras 3 API) on the TensorFlow, JAX and PyTorch backends:
the same values and gradients as the graph code of common/energy.py and
common/projections.py on the same W, P and draws (1e-5 relative, float32),
finite at equal, opposite and zero neurons, and model.fit / save / load with
every regulariser. Each backend runs tests/keras_backend_check.py in its own
process (Keras picks one backend per process); this process computes the
graph code's values."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from common import projections as proj
from common.energy import POWERS, hyperspherical_energy
from conftest import ROOT, subprocess_env
from test_energy import edge_cases

BACKENDS = ('tensorflow', 'jax', 'torch')
RTOL = 1e-5
LR, ITERS = 0.1, 3
LEARNED = {'angle': proj.angle_projection_term, 'adversarial': proj.adversarial_projection_term}


def make_inputs():
    rng = np.random.default_rng(20)
    f32 = np.float32
    inputs = dict(W=rng.normal(size=(9, 7)).astype(f32), B=rng.normal(size=(3, 6, 10)).astype(f32),
                  upstream=rng.uniform(0.5, 2.0, size=3).astype(f32),
                  Wl=rng.normal(size=(12, 9)).astype(f32), P=rng.normal(size=(5, 12)).astype(f32),
                  lr=np.array(LR), iters=np.array(ITERS))
    for case, W in edge_cases().items():
        inputs['edge/' + case] = W.astype(f32)
    inputs['edge/P'] = rng.normal(size=(3, 6)).astype(f32)
    inputs['edge/draws'] = rng.normal(size=(2, 3, 6)).astype(f32)
    return inputs


def graph_reference(inputs):
    """The graph code's values and gradients on the inputs (and the RP draws it makes)."""
    ref = {}
    with tf.Graph().as_default(), tf.Session() as sess:
        W, B, Wl, P = (tf.constant(inputs[k]) for k in ('W', 'B', 'Wl', 'P'))
        fetch = {}
        for power in POWERS:
            for half in (False, True):
                e = hyperspherical_energy(W, power, half)
                fetch[f'energy/{power}/{int(half)}'] = e
                fetch[f'energy/{power}/{int(half)}/grad'] = tf.gradients(e, W)[0]
                eb = hyperspherical_energy(B, power, half)
                fetch[f'batched/{power}/{int(half)}'] = eb
                fetch[f'batched/{power}/{int(half)}/grad'] = tf.gradients(
                    tf.reduce_sum(inputs['upstream'] * eb), B)[0]
        step = tf.constant(11, tf.int64)
        rp = proj.random_projection_term(Wl, pd=4, num_proj=3, seed=345, step=step, layer_index=1)
        fetch.update({'rp': rp, 'rp/grad': tf.gradients(rp, Wl)[0],
                      'draws': proj.random_projection_draws(12, 4, 3, 345, step, 1)})
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
        ref.update(sess.run(fetch))
    return ref


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp('keras_comhe')
    inputs = make_inputs()
    ref = graph_reference(inputs)
    inputs['draws'] = ref['draws']
    np.savez(folder / 'inputs.npz', **inputs)
    return ref, folder


@pytest.fixture(scope='module')
def backend_runs(reference):
    """One keras_backend_check.py process per installed backend, all started at once."""
    ref, folder = reference
    runs = {}
    for name in BACKENDS:
        if importlib.util.find_spec(name) is None:
            continue
        # PyTorch fits without JIT: torch.compile of these steps takes minutes on a CPU.
        argv = [sys.executable, str(ROOT / 'tests' / 'keras_backend_check.py'), str(folder / 'inputs.npz'),
                str(folder / f'{name}.npz'), str(folder)] + (['--eager'] if name == 'torch' else [])
        runs[name] = subprocess.Popen(argv, cwd=folder, env=dict(subprocess_env(), KERAS_BACKEND=name),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
            run.communicate()


@pytest.fixture(scope='module', params=BACKENDS)
def backend(request, reference, backend_runs):
    """(results of keras_backend_check.py on one backend, the graph code's values)."""
    name = request.param
    if name not in backend_runs:
        pytest.skip(f'{name} is not installed (pip install -r requirements-dev.txt installs it)')
    _, stderr = backend_runs[name].communicate(timeout=600)
    assert backend_runs[name].returncode == 0, stderr[-4000:]
    got = dict(np.load(reference[1] / f'{name}.npz'))
    assert str(got['backend']) == name
    return got, reference[0]


def close(got, want, what):
    """Values to RTOL relative; arrays (gradients, P) to RTOL relative to their largest entry."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    atol = 0.0 if want.ndim == 0 else RTOL * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=what)


@pytest.mark.parametrize('half', [0, 1])
@pytest.mark.parametrize('power', POWERS)
def test_energies_and_gradients_equal_the_graph_code(backend, power, half):
    got, ref = backend
    # Batched [T, d, N]: power '2' and 'a2' (the code that the other four kernels share).
    for key in (f'energy/{power}/{half}',) + ((f'batched/{power}/{half}',) if power in ('2', 'a2') else ()):
        close(got[key], ref[key], key)
        close(got[key + '/grad'], ref[key + '/grad'], key + '/grad')


def test_rp_term_equals_the_graph_code_on_its_draws(backend):
    got, ref = backend
    close(got['rp'], ref['rp'], 'rp')
    close(got['rp/grad'], ref['rp/grad'], 'rp/grad')


@pytest.mark.parametrize('variant', list(LEARNED))
def test_learned_terms_and_p_steps_equal_the_graph_code(backend, variant):
    got, ref = backend
    close(got[variant], ref[variant], variant)
    close(got[variant + '/grad_w'], ref[variant + '/grad_w'], 'd term / dW (through the look-ahead)')
    close(got[variant + '/grad_p'], ref[variant + '/grad_p'], 'd term / dP')
    close(got[variant + '/objective'], ref[variant + '/objective'], 'P objective')
    for form in ('direct', 'gram'):
        close(got[f'{variant}/descend/{form}'], ref[f'{variant}/descend/{form}'], f'{ITERS} P steps, {form}')


def test_ap_with_the_decay_in_its_lookahead_equals_the_graph_code(backend):
    got, ref = backend
    for key in ('angle/decay', 'angle/decay/grad_w', 'angle/decay/grad_p'):
        close(got[key], ref[key], key)


@pytest.mark.parametrize('case', sorted(edge_cases()))
def test_edge_cases_give_finite_values_and_gradients(backend, case):
    got, _ = backend
    flags = got['edge/' + case]
    assert flags.size == len(POWERS) * 2 + 5 and flags.all(), flags


def test_fit_takes_p_steps_and_the_first_loss_is_the_reproductions(backend):
    got, _ = backend
    # Step 0: the P steps ran on the weights before it, at its learning rate
    # (0.05), and the loss is cross-entropy plus every term at those weights.
    for name in ('conv3', 'dense1'):
        close(got[f'fit/P1/{name}'], got[f'fit/P1_expected/{name}'], f'{name}: P after step 0')
        assert float(got[f'fit/lr1/{name}']) == pytest.approx(0.05)
        assert got[f'fit/P_changed_later/{name}']
        assert float(got[f'fit/lr_later/{name}']) == pytest.approx(0.02)   # the schedule's next value
    loss0 = got['fit/loss0']
    assert loss0.shape == (1,)
    np.testing.assert_allclose(loss0[0], got['fit/loss0_expected'], rtol=1e-4)
    later = got['fit/losses_later']
    assert later.shape == (2,) and np.isfinite(later).all()
    assert got['fit/seed_advanced/conv2'] and got['fit/seed_advanced/dense2']
    assert np.isfinite(got['fit/plain_losses']).all()


def test_a_learned_projection_without_its_p_steps_is_an_error(backend):
    got, _ = backend
    assert 'CoMHEModel' in str(got['fit/unwrapped_error'])


def test_saved_model_loads_with_its_regularisers_and_state(backend):
    got, _ = backend
    assert got['save/weights_equal']
    assert got['save/same_classes_and_configs']
    for name in ('conv3', 'dense1'):
        assert float(got[f'save/P_diff/{name}']) == 0.0
        assert float(got[f'save/lr/{name}']) == pytest.approx(0.02)
    assert np.isfinite(got['save/losses_after_load']).all()
    assert got['save/P_steps_after_load']


def test_jit_compilation_is_on_except_for_pytorch(backend):
    got, _ = backend
    assert bool(got['jit']) == (str(got['backend']) != 'torch')
