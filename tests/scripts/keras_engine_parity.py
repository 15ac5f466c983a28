"""The Keras engine's training step against the TF1 engine's, on the backend
KERAS_BACKEND names (used by tests/test_keras_engine.py; one process per backend).

    KERAS_BACKEND=jax python keras_engine_parity.py OUT.npz STEPS WIDTH

For each configuration (no energy, half-space MHE, RP with the graph's draws fed, AP,
AdvP) the TF1 graph trains STEPS iterations on fixed random batches (batch 16). Before
each of its steps the Keras engine is given the graph's whole state (weights, momentum,
BN averages, P, step) and takes the same step ("teacher forcing": each step compared
from the same state, so float32 differences do not compound over steps). OUT.npz gets,
per configuration, both engines' logged values of every step (fit, reg, thom, thomf,
acc), the first step's weights, momentum, P and BN averages before and after on both
sides, and the weights around the first step after an lr drop.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path[:0] = [str(ROOT / 'tests'), str(ROOT / 'tests' / 'helpers')]
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow.compat.v1 as tf

import keras
from common.paper import projections
from common.tf1_engine import training
from common.keras_engine import network, step as steps
from conftest import entry_flags, graph_terms_of, load_entry_point

CONFIGS = {
    'none': ('mhe', ['--model_name', 'baseline']),
    'half_mhe': ('mhe', ['--model_name', 'half_mhe']),
    'rp': ('random_projection', []),
    'ap': ('angle_projection', []),
    'advp': ('adversarial_projection', []),
}


def lr_of(it, n_steps):
    """Two drops, as the schedule's: TF1's momentum and Keras's SGD part ways there."""
    return 0.01 * 0.1 ** sum(it >= n_steps * k // 3 for k in (1, 2))


def tf_name(keras_path):
    """The graph's variable of a Keras weight: conv1_0/kernel -> conv1_0/filter, ..."""
    layer, var = keras_path.split('/')
    if layer.endswith('_bn'):
        bn = layer[:-3]
        return {'gamma': f'{bn}/bn/gamma', 'beta': f'{bn}/bn/beta',
                'moving_mean': f'{bn}/bn/{bn}/bn/moments/Squeeze/ExponentialMovingAverage',
                'moving_var': f'{bn}/bn/{bn}/bn/moments/Squeeze_1/ExponentialMovingAverage',
                'steps': 'global_step'}[var]
    return f'{layer}/filter'


def run_config(name, n_steps, width, out):
    variant, argv = CONFIGS[name]
    module = load_entry_point(variant)
    flags = entry_flags(module, '--width', str(width), '--batch_size', '16', *argv)
    flags.variant = module.VARIANT
    terms = module.terms(flags)
    graph_terms = graph_terms_of(module, flags)
    graph = tf.Graph()
    with graph.as_default():
        g = training.build_graph(flags, **graph_terms)
        init = tf.global_variables_initializer()
        variables = {v.op.name: v for v in tf.global_variables()}
        step_in = tf.placeholder(tf.int64, [])
        draw_ops = []
        if terms.kind == 'rp':
            for index, layer in enumerate(network.HIDDEN, start=1):
                W = variables[f'{layer}/filter']
                d, n = int(np.prod(W.shape.as_list()[:-1])), W.shape.as_list()[-1]
                draw_ops.append(projections.random_projection_draws(
                    d, flags.pd, terms.num_projections(n), flags.random_seed, step_in, index))
    sess = tf.Session(graph=graph, config=training.session_config())
    sess.run(init)
    calls = training.SessionCalls(sess, g)

    model = network.cnn9(training_widths(flags), 100, flags.bn_zero_debias)
    step = steps.compiled(steps.make_train_step(model, terms, flags.random_seed))
    trainable = [tf_name(v.path) for v in model.trainable_variables]
    non_trainable = [tf_name(v.path) for v in model.non_trainable_variables]
    learned = [f'{layer}/projection' for layer in network.HIDDEN] if terms.learned else []

    def graph_state():
        values = sess.run(variables)
        return dict(trainable=[values[k] for k in trainable],
                    non_trainable=[np.float32(values[k]) for k in non_trainable],
                    accum=[values[f'{k}/Momentum'] for k in trainable],
                    P=[values[k] for k in learned], step=np.int32(values['global_step']))

    rng = np.random.default_rng(7)
    graph_logged, keras_logged = [], []
    for it in range(n_steps):
        x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 100, 16)
        before = graph_state()
        draws = [keras.ops.convert_to_tensor(a) for a in sess.run(draw_ops, {step_in: it})] \
            if draw_ops else None
        state = {k: [keras.ops.convert_to_tensor(a) for a in v] if isinstance(v, list)
                 else keras.ops.convert_to_tensor(v) for k, v in before.items()}
        lr = lr_of(it, n_steps)
        new, values = step(state, x, y, np.float32(lr), draws)
        keras_logged.append(steps.logged_values(values))
        graph_logged.append(calls.train(x, y, lr))
        if it == n_steps // 3:   # the first step after a drop: its updates are compared too
            after = graph_state()
            out[f'{name}/drop/trainable'] = np.stack([np.concatenate([np.ravel(v) for v in part])
                                                      for part in (before['trainable'], after['trainable'],
                                                                   [np.asarray(k) for k in new['trainable']])])
        if it == 0:
            after = graph_state()
            for part in ('trainable', 'accum', 'P', 'non_trainable'):
                for i, (a, b, k) in enumerate(zip(before[part], after[part], new[part])):
                    out[f'{name}/first/{part}/{i:03d}'] = np.stack([a, b, np.asarray(k)])
    out[f'{name}/graph'] = np.array(graph_logged)
    out[f'{name}/keras'] = np.array(keras_logged)
    sess.close()


def training_widths(flags):
    from common.paper.schedule import scaled_widths
    return scaled_widths(flags.width)


def main(path, n_steps, width, names):
    out = {'backend': np.array(keras.backend.backend())}
    for name in names:
        run_config(name, n_steps, width, out)
    np.savez(path, **out)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
         sys.argv[4].split(',') if len(sys.argv) > 4 else list(CONFIGS))
