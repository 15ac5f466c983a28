"""mhe/train.py, the MHE baselines of docs/protocol.md section 8: the energy terms of each
--model_name / --power_s in-process at initialisation against the NumPy
reference (tests/helpers/numpy_oracle.py), and real subprocess runs on the CIFAR fixture
for the folder names and the log format, their iter_0 thom/thomf checked
against the reference on the weights the run started from."""
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import float32_bound
import numpy_oracle as oracle
from common.run import config, runlog
from common.paper.terms import term_weights
from common.tf1_engine.training import build_graph, session_config
from conftest import ROOT, entry_flags, graph_terms_of, load_entry_point, run_train, train_in_process

ARGS = ('--width', '0.125', '--batch_size', '16')
LAYERS = ['conv1_0', 'conv1_1', 'conv1_2', 'conv2_0', 'conv2_1', 'conv2_2',
          'conv3_0', 'conv3_1', 'conv3_2', 'fc6']          # first layer included
# docs/protocol.md section 8, written out here rather than taken from the module under test.
WEIGHTS = {'0': (1.0, 10.0), '1': (1.0, 10.0), '2': (1.0, 10.0), 'a0': (1.0, 10.0),
           'a1': (0.1, 1.0), 'a2': (0.1, 1.0)}


@pytest.fixture(scope='module')
def mhe():
    return load_entry_point('mhe')


_INIT_VALUES = {}


def init_values(module, *argv):
    """Build the graph of ``mhe/train.py <argv>``; return (thom, thomf, layer terms, filters).
    The same graph and seed give the same values, so each mode is built once."""
    flags = entry_flags(module, *ARGS, *argv)
    key = (flags.model_name, flags.power_s)
    if key not in _INIT_VALUES:
        _INIT_VALUES[key] = _built_init_values(module, flags)
    return _INIT_VALUES[key]


def _built_init_values(module, flags):
    graph = tf.Graph()
    with graph.as_default():
        g = build_graph(flags, **graph_terms_of(module, flags))
        init = tf.global_variables_initializer()
        filters = {v.op.name.split('/')[0]: v for v in tf.global_variables()
                   if v.op.name.endswith('/filter')}
    with tf.Session(graph=graph, config=session_config()) as sess:
        sess.run(init)
        thom, thomf, W = sess.run([g.thom, g.thomf, filters])
    W = {name: k.reshape(-1, k.shape[-1]).astype(np.float64) for name, k in W.items()}
    return float(thom), float(thomf), sorted(g.model.layer_terms), W


def reference_terms(W, model_name, power):
    """thom and thomf from docs/protocol.md sections 1 and 8, with the explicit-loop NumPy energy."""
    hidden_w, score_w = WEIGHTS[power]
    half = model_name == 'half_mhe'
    thom = hidden_w * sum(oracle.energy(W[name], power, half_space=half) for name in LAYERS)
    return thom, score_w * oracle.energy(W['score'], power)


@pytest.mark.parametrize('model_name,power', [
    ('mhe', '2'), ('half_mhe', '2'), ('mhe', '0'), ('half_mhe', '1'), ('mhe', 'a0'),
    ('half_mhe', 'a1'), ('mhe', 'a2')])                      # each of the six kernels
def test_terms_at_init_equal_numpy(mhe, model_name, power):
    thom, thomf, terms, W = init_values(mhe, '--model_name', model_name, '--power_s', power)
    assert terms == sorted(LAYERS + ['score'])
    # float32 terms against the formulas in float64 on the same weights, within
    # tests/helpers/float32_bound.py's bound: sums over a layer's d or its N^2 pairs, the
    # kernel's stages and the sum over layers.
    longest = max(max(w.shape[0], w.shape[1] ** 2) for w in W.values())
    float32_bound.assert_float32_result(thom, lambda **w: reference_terms(w, model_name, power)[0],
                                        W, longest, 5, 'thom')
    float32_bound.assert_float32_result(thomf, lambda **w: reference_terms(w, model_name, power)[1],
                                        W, longest, 4, 'thomf')


def test_half_and_full_space_differ(mhe):
    # Guards against the model_name being ignored: same weights, different hidden terms.
    full = init_values(mhe, '--model_name', 'mhe')
    half = init_values(mhe, '--model_name', 'half_mhe')
    assert full[1] == pytest.approx(half[1], rel=1e-6)        # score layer: full space in both
    assert abs(full[0] - half[0]) > 1e-3


def test_baseline_has_no_energy_term(mhe):
    thom, thomf, terms, _ = init_values(mhe, '--model_name', 'baseline')
    assert (thom, thomf, terms) == (0.0, 0.0, [])


def test_defaults_names_and_weights(mhe):
    assert mhe.VARIANT == 'mhe' and mhe.DEFAULTS == dict(model_name='half_mhe', power_s='2')
    flags = entry_flags(mhe)
    assert config.run_name(flags) == 'half_mhe_2'
    assert flags.log_dir == ROOT / 'logs' / 'mhe'
    assert config.run_name(entry_flags(mhe, '--model_name', 'baseline', '--power_s', 'a1')) == 'baseline'
    assert config.run_name(entry_flags(mhe, '--model_name', 'mhe')) == 'mhe_2'
    assert {p: term_weights(p) for p in WEIGHTS} == WEIGHTS


def test_a_bad_model_name_stops_before_training(tmp_path):
    out = run_train('mhe', '--model_name', 'mhe_full', '--log_dir', str(tmp_path))
    assert out.returncode == 2
    assert "--model_name: invalid choice: 'mhe_full'" in out.stderr
    assert list(tmp_path.iterdir()) == []


NUM = r'\d+\.\d{4}'
SHORT_LINE = re.compile(rf'^====iter_0: fit={NUM}, reg={NUM}, acc={NUM}$')
FULL_LINE = re.compile(rf'^====iter_0: fit={NUM}, reg={NUM}, thom={NUM}, thomf={NUM}, acc={NUM}$')


@pytest.mark.parametrize('argv,folder,subprocess', [
    (['--model_name', 'baseline'], 'baseline', False),
    (['--model_name', 'mhe', '--power_s', '2'], 'mhe_2', True),   # train.py run from the root
    (['--power_s', 'a1'], 'half_mhe_a1', False),          # the default --model_name, half_mhe
])
def test_train_py_runs_and_logs_each_mode(mhe, cifar_fixture, tmp_path, argv, folder, subprocess):
    command = [*cifar_fixture, *ARGS, '--max_iters', '2', '--eval_every', '100',
               '--log_dir', str(tmp_path), *argv]
    if subprocess:
        out = run_train('mhe', *command, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
    else:
        assert train_in_process('mhe', *command) == 0
    assert [p.name for p in tmp_path.iterdir()] == [folder]
    run_dir = tmp_path / folder
    [line] = (run_dir / 'log_train_00.txt').read_text().splitlines()
    assert (run_dir / 'log_test_00.txt').read_text().startswith('++++iter_1: test acc=')
    [record] = runlog.read_run(run_dir).train
    if folder == 'baseline':
        assert SHORT_LINE.match(line), line                 # the MHE release's shorter line
        assert record['thom'] is None and record['thomf'] is None
        return
    assert FULL_LINE.match(line), line
    # iter_0 is logged on the initial weights: the same seed and graph give the same ones here.
    model_name, power = ('half_mhe' if folder.startswith('half') else 'mhe'), folder.rsplit('_', 1)[1]
    _, _, _, W = init_values(mhe, *argv)
    want_thom, want_thomf = reference_terms(W, model_name, power)
    assert record['thom'] == pytest.approx(want_thom, abs=1.5e-4)    # 4 logged decimals
    assert record['thomf'] == pytest.approx(want_thomf, abs=1.5e-4)
