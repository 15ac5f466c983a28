"""Run the energy ops, the CoMHE terms and the training graphs of RP and AdvP
as TF1 code does, and print their values as JSON (used by tests/test_tf1_idiom.py).

    python tf1_idiom.py v1|v2 WEIGHTS.npz

``v1`` calls ``tf.disable_v2_behavior()`` first (process-wide, hence a subprocess).
The training graphs start from the variable values in WEIGHTS.npz when it exists
and write their own initial values there otherwise, so both modes train the same
weights (the two modes create different ops, hence different initial draws).
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / 'tests'), str(ROOT / 'tests' / 'helpers')]

import numpy as np
import tensorflow.compat.v1 as tf

mode, weights_file = sys.argv[1], Path(sys.argv[2])
if mode == 'v1':
    tf.disable_v2_behavior()
else:
    tf.disable_eager_execution()

from common.paper.energy import POWERS, hyperspherical_energy
from common.paper.projections import (adversarial_projection_term, angle_projection_term,
                                      random_projection_term)
from common.tf1_engine.training import build_graph, session_config
from conftest import entry_flags, graph_terms_of, load_entry_point

out = {}
rng = np.random.default_rng(0)
W = rng.standard_normal((40, 64))
P = rng.standard_normal((30, 40))

with tf.Graph().as_default(), tf.Session() as sess:
    W_in = tf.placeholder(tf.float64, [40, 64])   # a placeholder: its shape holds Dimensions in v1
    terms = {f'energy_{p}_{"half" if h else "full"}': hyperspherical_energy(W_in, p, half_space=h)
             for p in POWERS for h in (False, True)}
    terms['rp'] = random_projection_term(W_in, 30, 5, 345, tf.constant(7, tf.int64), 3)
    terms['ap'], _ = angle_projection_term(W_in, tf.constant(P), 0.1)
    terms['advp'], _ = adversarial_projection_term(W_in, tf.constant(P), 0.1)
    grads = {f'grad_{k}': tf.gradients(v, W_in)[0] for k, v in terms.items()}
    values = sess.run({**terms, **grads}, {W_in: W})
    out.update({k: np.asarray(v).tolist() for k, v in values.items()})

saved = dict(np.load(weights_file)) if weights_file.exists() else {}
initial = {}
# RP (the draws) and AdvP (a learned P, its steps in the graph); AP's terms are checked
# above, and every entry point builds the same CNN-9.
entries = ['random_projection', 'adversarial_projection']
data = np.random.default_rng(1)
x = data.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
y = data.integers(0, 100, 8)
for key in entries:
    module = load_entry_point(key)
    flags = entry_flags(module, '--width', '0.125', '--batch_size', '8', '--pn', '2', '--pd', '5')
    with tf.Graph().as_default() as graph:
        g = build_graph(flags, **graph_terms_of(module, flags))
        init = tf.global_variables_initializer()
        variables = {f'{key}:{v.op.name}': v for v in tf.global_variables()}
        if saved:   # one assign op for all, fed in one call
            values = {name: tf.placeholder(v.dtype.base_dtype, v.shape) for name, v in variables.items()}
            load = tf.group(*[v.assign(values[name]) for name, v in variables.items()])
        with tf.Session(graph=graph, config=session_config()) as sess:
            sess.run(init)
            if saved:
                sess.run(load, {values[name]: saved[name] for name in variables})
            else:
                initial.update(sess.run(variables))
            steps = []
            for _ in range(3):   # as the training loop runs it (same fetches: no new executors)
                if g.p_steps is not None:
                    sess.run(g.p_steps, {g.lr: 0.01})
                feed = {g.images: x, g.labels: y, g.is_training: True, g.lr: 0.01}
                *logged, _ = sess.run([g.fit, g.reg, g.thom, g.thomf, g.acc, g.train_op], feed)
                steps.append([float(v) for v in logged])
            test_acc = sess.run(g.acc, {g.images: x, g.labels: y, g.is_training: False})
            out[f'train_{key}'] = steps + [float(test_acc)]
if initial:
    np.savez(weights_file, **initial)
print(json.dumps(out))
