"""`train.py --engine keras` (common/keras_engine): its training step against the TF1
engine's on the JAX and TensorFlow backends (PyTorch: the first step), and a run on
JAX killed with SIGKILL and resumed, whose logs equal an uninterrupted run's.

Parity (tests/scripts/keras_engine_parity.py): no energy, half-space MHE, RP (the
graph's draws fed), AP and AdvP, batch 16, 25 steps with two lr drops, each step
taken by both engines from the TF1 graph's state. The logged terms agree within
1e-5 relative at the first step and 1e-4 at every step (measured at full width: 4.3e-6
at most, docs/keras_engine.md); the first step's updates of weights, momentum, P and
BN averages, and those of the first step after a drop, agree within 1% of their norm
(measured: 0.5% at most at full width, where float32 cancels in the gradients of the
first layers).
"""
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, subprocess_env, train_in_process

CONFIGS = ('none', 'half_mhe', 'rp', 'ap', 'advp')
STEPS = {'jax': 25, 'tensorflow': 25, 'torch': 1}
WIDTH = 0.125


@pytest.fixture(scope='module')
def parity(tmp_path_factory):
    """Each backend's parity run, all started at once: {backend: its npz}."""
    folder = tmp_path_factory.mktemp('keras_engine')
    procs = {}
    for backend, steps in STEPS.items():
        if importlib.util.find_spec(backend) is None:
            continue
        procs[backend] = subprocess.Popen(
            [sys.executable, str(ROOT / 'tests' / 'scripts' / 'keras_engine_parity.py'),
             str(folder / f'{backend}.npz'), str(steps), str(WIDTH)],
            cwd=ROOT, env=dict(subprocess_env(), KERAS_BACKEND=backend),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for backend, proc in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        results[backend] = dict(np.load(folder / f'{backend}.npz'))
    return results


def results(parity, backend):
    """One backend's parity results, or a skip where it is not installed."""
    if backend not in parity:
        pytest.skip(f'{backend} is not installed (pip install -r requirements-dev.txt installs it)')
    assert str(parity[backend]['backend']) == backend
    return parity[backend]


@pytest.mark.parametrize('backend', list(STEPS))
@pytest.mark.parametrize('config', CONFIGS)
def test_every_step_logs_what_the_tf1_engine_logs(parity, backend, config):
    got = results(parity, backend)
    graph, keras_ = got[f'{config}/graph'], got[f'{config}/keras']
    assert graph.shape == keras_.shape == (STEPS[backend], 5)
    # fit, reg, thom, thomf; no energy: thom = thomf = 0 on both sides.
    rel = np.abs(keras_[:, :4] - graph[:, :4]) / np.maximum(np.abs(graph[:, :4]), 1e-30)
    assert rel[0].max() <= 1e-5, rel[0]
    assert rel.max() <= 1e-4, rel.max(axis=1)
    if config == 'none':
        assert (graph[:, 2:4] == 0).all() and (keras_[:, 2:4] == 0).all()
    else:
        assert (graph[:, 2:4] > 0).all()
    # The batch accuracy differs only where two logits tie within rounding: never here.
    np.testing.assert_array_equal(keras_[:, 4], graph[:, 4])


@pytest.mark.parametrize('backend', list(STEPS))
@pytest.mark.parametrize('config', CONFIGS)
def test_a_step_updates_what_the_tf1_engine_updates(parity, backend, config):
    got = results(parity, backend)
    keys = [k for k in got if k.startswith(f'{config}/first/')] + [f'{config}/drop/trainable']
    parts = {k.split('/')[2] for k in keys if '/first/' in k}
    assert {'trainable', 'accum', 'non_trainable'} <= parts
    assert ('P' in parts) == (config in ('ap', 'advp'))
    for key in keys:
        before, after, keras_after = (a.astype(np.float64) for a in got[key])
        update = np.linalg.norm(after - before)
        assert update > 0, f'{key}: the TF1 step did not move it'
        assert np.linalg.norm(keras_after - after) <= 1e-2 * update, key


def test_a_killed_keras_run_resumes_to_the_logs_of_an_uninterrupted_one(cifar_fixture, tmp_path):
    if importlib.util.find_spec('jax') is None:
        pytest.skip('jax is not installed')
    args = [*cifar_fixture, '--engine', 'keras', '--width', '0.125', '--batch_size', '16',
            '--base_lr', '0.003', '--max_iters', '120', '--eval_every', '40', '--ckpt_every', '20',
            '--pn', '2']
    env = dict(subprocess_env(), KERAS_BACKEND='jax')

    def start(folder, *extra):
        return subprocess.Popen([sys.executable, 'random_projection/train.py', *args, '--log_dir',
                                 str(tmp_path / folder), *extra], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    straight, proc = start('straight'), start('killed')   # side by side
    run_dir = tmp_path / 'killed' / 'pd40_pn2'
    for line in proc.stdout:   # killed once its test line of iteration 40 is out
        if line.startswith('++++iter_40'):
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate(timeout=60)
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err[-3000:]
    assert out.startswith('device: ')
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / 'checkpoints_00' / 'checkpoint').read_text().startswith('model_checkpoint_path: "ckpt-')
    resumed = start('killed', '--resume')
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert 'resuming run 00 at iteration ' in out
    for kind in ('train', 'test'):
        assert (run_dir / f'log_{kind}_00.txt').read_text() == \
            (tmp_path / 'straight' / 'pd40_pn2' / f'log_{kind}_00.txt').read_text()
    lines = (run_dir / 'log_train_00.txt').read_text().splitlines()
    assert [line.split(':')[0] for line in lines] == ['====iter_0', '====iter_100']
    assert sorted(p.name for p in (run_dir / 'checkpoints_00').glob('*.npz')) == \
        ['ckpt-100.npz', 'ckpt-120.npz']
    events = list((run_dir / 'tensorboard_00').glob('events.out.tfevents.*'))
    assert len(events) == 2
    # Each file starts its session at its first iteration, so TensorBoard hides what the
    # killed run wrote after the checkpoint it resumed from.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    resumed_at = int(re.search(r'resuming run 00 at iteration (\d+)', out).group(1))
    starts = sorted([e.step for e in EventFileLoader(str(p)).Load()
                     if e.HasField('session_log') and e.session_log.status == e.session_log.START]
                    for p in events)
    assert starts == [[0], [resumed_at]] and resumed_at > 0


def test_a_run_of_one_engine_does_not_resume_with_the_other(cifar_fixture, tmp_path, capsys):
    args = [*cifar_fixture, '--width', '0.125', '--batch_size', '8', '--eval_every', '100',
            '--pn', '2', '--log_dir', str(tmp_path)]
    assert train_in_process('random_projection', *args, '--max_iters', '3') == 0   # tf1, the default
    with pytest.raises(SystemExit) as stop:
        train_in_process('random_projection', *args, '--max_iters', '6', '--engine', 'keras',
                         '--resume')
    assert stop.value.code == 2
    assert '--engine is keras, the run used tf1' in capsys.readouterr().err


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_checkpoint_that_is_not_the_runs_state_at_its_iteration_is_refused(cifar_fixture, tmp_path,
                                                                           capsys):
    args = [*cifar_fixture, '--engine', 'keras', '--width', '0.125', '--batch_size', '8',
            '--eval_every', '100', '--pn', '2', '--log_dir', str(tmp_path), '--max_iters', '6',
            '--ckpt_every', '3']
    assert train_in_process('random_projection', *args) == 0
    folder = tmp_path / 'pd40_pn2' / 'checkpoints_00'
    (folder / 'ckpt-6.npz').unlink()         # as if killed before its last checkpoint
    (folder / 'checkpoint').write_text('model_checkpoint_path: "ckpt-3"\n')
    with np.load(folder / 'ckpt-3.npz') as f:
        good = dict(f)
    for broken, message in ((dict(good, step=np.int32(2)), 'holds the state after step 2, not 3'),
                            ({k: v for k, v in good.items() if k != 'accum/000'}, 'accum/000'),
                            (dict(good, **{'trainable/001': good['trainable/001'][:1]}), 'trainable/001'),
                            (dict(good, **{'accum/001': good['accum/001'].astype(np.float64)}), 'accum/001'),
                            (None, 'cannot be read (BadZipFile')):
        if broken is None:     # cut short, as by a full disk
            (folder / 'ckpt-3.npz').write_bytes(npz_bytes(good)[:1000])
            capsys.readouterr()
            assert train_in_process('random_projection', *args, '--resume') == 2
            assert message in capsys.readouterr().err
            continue
        np.savez(folder / 'ckpt-3.npz', **broken)
        capsys.readouterr()
        assert train_in_process('random_projection', *args, '--resume') == 2
        err = capsys.readouterr().err
        assert message in err and 'start a new run without --resume' in err, err
    np.savez(folder / 'ckpt-3.npz', **good)
    assert train_in_process('random_projection', *args, '--resume') == 0
    assert 'resuming run 00 at iteration 3' in capsys.readouterr().out
    assert (tmp_path / 'pd40_pn2' / 'log_test_00.txt').read_text().splitlines()[-1].startswith('++++iter_5')


def test_a_sweep_file_chooses_the_engine_as_any_flag(tmp_path):
    from common.sweep import sweepfile
    path = tmp_path / 'k.toml'
    path.write_text('name = "k"\nseeds = [1]\n[flags]\nengine = "keras"\n[[run]]\nentry = "random_projection"\n')
    [run] = sweepfile.load(path, log_root=tmp_path / 'logs').runs
    at = run.argv.index('--engine')
    assert run.argv[at:at + 2] == ['--engine', 'keras']
    # and its backend, the same on every machine whatever KERAS_BACKEND is there
    path.write_text(path.read_text().replace('[[run]]', 'keras_backend = "jax"\n[[run]]'))
    [run] = sweepfile.load(path, log_root=tmp_path / 'logs').runs
    at = run.argv.index('--keras_backend')
    assert run.argv[at:at + 2] == ['--keras_backend', 'jax']
    path.write_text(path.read_text().replace('"keras"', '"jax"'))
    with pytest.raises(sweepfile.SweepFileError, match="flag 'engine' is 'jax'; one of tf1, keras"):
        sweepfile.load(path, log_root=tmp_path / 'logs')


def test_keras_backend_flag_chooses_the_backend_and_a_resume_must_keep_it(cifar_fixture, tmp_path):
    if importlib.util.find_spec('jax') is None or importlib.util.find_spec('torch') is None:
        pytest.skip('needs jax and torch')
    args = [sys.executable, 'random_projection/train.py', *cifar_fixture, '--engine', 'keras',
            '--width', '0.125', '--batch_size', '8', '--pn', '2', '--max_iters', '4',
            '--eval_every', '2', '--ckpt_every', '2', '--log_dir', str(tmp_path)]
    env = dict(subprocess_env(), KERAS_BACKEND='torch')   # the flag wins over the environment
    out = subprocess.run([*args, '--keras_backend', 'jax'], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith('device: ') and 'JAX' in out.stdout.splitlines()[0]
    run_dir = tmp_path / 'pd40_pn2'
    saved = json.loads((run_dir / 'flags_00.json').read_text())
    assert saved['backend'] == 'jax' and saved['engine'] == 'keras' and 'keras_backend' not in saved
    # As if it had stopped at its checkpoint of iteration 2: a resume on PyTorch is refused.
    index = run_dir / 'checkpoints_00' / 'checkpoint'
    index.write_text(index.read_text().replace('model_checkpoint_path: "ckpt-4"', 'model_checkpoint_path: "ckpt-2"'))
    test_log = (run_dir / 'log_test_00.txt').read_text()
    out = subprocess.run([*args, '--resume'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert ("error: --resume: run 00 ran on Keras's jax backend, this process has torch, and the logs "
            "would not continue as an uninterrupted run's; resume with --keras_backend jax") in out.stderr
    assert (run_dir / 'log_test_00.txt').read_text() == test_log   # untouched
    # With the flag, refused among the flags, before the data is loaded.
    out = subprocess.run([*args, '--resume', '--keras_backend', 'torch'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and 'error: --resume: --keras_backend is torch, the run used jax' in out.stderr
    assert out.stdout == ''
    # A run from before the backend was recorded resumes on any.
    flags_file = run_dir / 'flags_00.json'
    flags_file.write_text(json.dumps({k: v for k, v in saved.items() if k != 'backend'}))
    out = subprocess.run([*args, '--resume'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'resuming run 00 at iteration 2' in out.stdout


def test_a_sweep_starts_anew_a_run_recorded_on_another_backend(tmp_path):
    from common.run import config, runstate
    from conftest import entry_flags, load_entry_point
    module = load_entry_point('random_projection')
    flags = entry_flags(module, '--engine', 'keras')
    flags.variant = module.VARIANT
    files = runstate.new_run(tmp_path / config.run_name(flags))
    files.run_dir.mkdir()
    runstate.save_flags(files, flags, config.run_name(flags), record={'backend': 'jax'})
    assert runstate.recorded(files, 'backend') == 'jax'
    assert runstate.changed_flags(files, flags) == []              # the backend not named: not checked here
    flags.keras_backend = 'jax'
    assert runstate.changed_flags(files, flags) == []
    flags.keras_backend = 'torch'                                   # what the sweep's disk_state reads as 'new'
    assert runstate.changed_flags(files, flags) == [('keras_backend', 'torch', 'jax')]


def test_keras_backend_applies_to_the_keras_engine_and_before_keras_starts(monkeypatch):
    import keras
    from common.run import config
    from conftest import entry_flags, load_entry_point
    flags = entry_flags(load_entry_point('random_projection'), '--keras_backend', 'torch')
    with pytest.raises(config.FlagError, match='--keras_backend torch chooses the backend of --engine keras'):
        config.validate(flags)
    # Keras reads KERAS_BACKEND once: in a process where it already runs, another is refused.
    current = keras.backend.backend()
    other = next(b for b in config.KERAS_BACKENDS if b != current)
    monkeypatch.setenv('KERAS_BACKEND', other)
    config.select_keras_backend(current)
    assert os.environ['KERAS_BACKEND'] == current
    with pytest.raises(config.FlagError, match=f'--keras_backend {other}: Keras already runs on {current} '
                                               'in this process; start a new Python process'):
        config.select_keras_backend(other)


def test_the_test_pass_on_the_device_counts_what_the_logits_say():
    # On the test process's Keras backend (TensorFlow unless KERAS_BACKEND says otherwise).
    from common.keras_engine import network, step as steps, testset
    from common.paper import terms
    model = network.cnn9((2, 2, 2, 2), 100)
    state = steps.initial_state(model, terms.mhe_terms('baseline', '2'), seed=1)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2500, 32, 32, 3), dtype=np.uint8)   # calls of 1000, 1000, 500
    logits = np.asarray(model(images, training=False))
    labels = logits.argmax(1)
    labels[::3] = (labels[::3] + 1) % 100                                  # a third wrong
    test_set = testset.TestSet(model, images, labels)
    assert [int(x.shape[0]) for x, _ in test_set.chunks] == [1000, 1000, 500]
    assert test_set.accuracy(state) == np.mean(logits.argmax(1) == labels)


def test_each_layer_starts_from_its_own_draw():
    from common.keras_engine import network
    model = network.cnn9((8, 16, 32, 32), 100, seed=3456)
    kernels = {v.path: np.asarray(v).ravel() for v in model.trainable_variables if v.path.endswith('/kernel')}
    assert len(kernels) == 11
    firsts = {tuple(k[:16]) for k in kernels.values()}
    assert len(firsts) == 11          # same-shaped layers (conv1_1, conv1_2) included
    again = network.cnn9((8, 16, 32, 32), 100, seed=3456)
    for v in again.trainable_variables:   # and the same seed gives the same network
        if v.path in kernels:
            np.testing.assert_array_equal(np.asarray(v).ravel(), kernels[v.path])


@pytest.mark.parametrize('backend', ['tensorflow', 'torch'])
def test_train_py_runs_on_the_other_backends(cifar_fixture, tmp_path, backend):
    # RP draws inside a tf.function, and the state free of PyTorch Parameters at the first
    # checkpoint; a few iterations, then the logs parse.
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f'{backend} is not installed')
    out = subprocess.run([sys.executable, 'random_projection/train.py', *cifar_fixture, '--engine', 'keras',
                          '--width', '0.125', '--batch_size', '8', '--pn', '2', '--max_iters', '4',
                          '--eval_every', '2', '--log_dir', str(tmp_path)], cwd=ROOT,
                         env=dict(subprocess_env(), KERAS_BACKEND=backend), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    from common.run import runlog
    run = runlog.read_run(tmp_path / 'pd40_pn2')
    assert [r['iter'] for r in run.train] == [0] and [it for it, _ in run.test] == [2, 3]
    assert (tmp_path / 'pd40_pn2' / 'checkpoints_00' / 'ckpt-4.npz').exists()


def test_rp_draws_differ_for_every_layer_and_step():
    import keras
    from common.keras_engine import step as steps
    from common.paper import terms
    t = terms.random_projection(4, 2, 0)
    Ws = [keras.ops.zeros((6, 3))] * 9
    generators = [keras.random.SeedGenerator(0) for _ in range(9)]
    draws = {s: [np.asarray(d) for d in steps.rp_draws(t, Ws, generators, 345, s)] for s in (4, 5)}
    flat = [tuple(d.ravel()[:4]) for s in draws for d in draws[s]]
    assert len(set(flat)) == 18
    again = [np.asarray(d) for d in steps.rp_draws(t, Ws, generators, 345, 5)]
    for a, b in zip(again, draws[5]):
        np.testing.assert_array_equal(a, b)


NO_TENSORFLOW = """import sys
sys.modules['tensorflow'] = None   # as on a GPU machine with JAX and no TensorFlow
sys.modules['tensorboardX'] = None
"""


def test_the_full_run_benchmark_runs_train_py_on_jax_without_tensorflow(tmp_path):
    # What bench/gpu_keras_engine.sh runs on a borrowed GPU machine, whose image has JAX
    # and no TensorFlow nor tensorboardX: the Keras engine needs neither (no TensorBoard
    # events then).
    if importlib.util.find_spec('jax') is None:
        pytest.skip('jax is not installed')
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(NO_TENSORFLOW)
    out = tmp_path / 'out'
    env = dict(subprocess_env(), KERAS_BACKEND='jax', PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, 'bench/keras_engine_full_run.py', '--out', str(out), '--quick'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / 'full_run.json').read_text())
    assert (result['exit_code'], result['last_iteration'], result['max_iters']) == (0, 200, 300)
    assert result['last_test_line'].startswith('++++iter_299')
    assert result['wall_s'] > result['first_line_s'] > 0 and result['iterations_per_s'] > 0
    run_text = (out / 'run.txt').read_text()
    assert 'tensorboardX is not installed, so no TensorBoard events are written' in run_text
    train_lines = (out / 'log_train_00.txt').read_text().splitlines()
    assert [line.split(':')[0] for line in train_lines] == ['====iter_0', '====iter_100', '====iter_200']
    assert (out / 'log_test_00.txt').read_text().splitlines()[-1] == result['last_test_line']
    assert '200' in (out / 'full_run.md').read_text()


def test_values_fetched_a_step_later_log_what_waiting_for_each_step_logs(cifar_fixture, tmp_path,
                                                                         monkeypatch):
    # On a GPU the engine hands the loop each step's values to fetch later (common.run.loop:
    # checked and logged once the next step is under way); the logs are the same.
    from common.keras_engine import engine
    from common.keras_engine.device import Device
    args = [*cifar_fixture, '--engine', 'keras', '--width', '0.125', '--batch_size', '8',
            '--max_iters', '201', '--eval_every', '100', '--ckpt_every', '50', '--pn', '2']
    for ahead in (False, True):
        device = Device('device: GPU (as if)' if ahead else 'device: CPU (as it is)', ahead)
        monkeypatch.setattr(engine, 'backend_device', lambda: device)
        assert train_in_process('random_projection', *args, '--log_dir', str(tmp_path / str(ahead))) == 0
    for kind, lines in (('train', 3), ('test', 2)):
        logs = [(tmp_path / str(ahead) / 'pd40_pn2' / f'log_{kind}_00.txt').read_text() for ahead in (False, True)]
        assert logs[0] == logs[1] and len(logs[0].splitlines()) == lines
