"""The training graph and loop of docs/protocol.md sections 4 to 6, shared by every train.py.

    loss = fit + reg + thom + thomf
    fit  = mean_batch -sum_k t_k log(softmax(z)_k + 1e-4),  t = 0.99 onehot + 0.01/100
    reg  = 5e-4 * sum(w^2) / 2 over filters and BN gamma/beta (P excluded)

Momentum SGD (0.9) with the lr schedule of ``schedule.learning_rate``; for AP
and AdvP, ``iters`` plain gradient-descent steps on the P matrices before
each main step, in the same session call. A train log line every 100
iterations, test accuracy every ``eval_every`` and after the last; logs never
overwrite earlier runs. One session call per iteration, batches prepared by a
background thread: the host adds well under a millisecond to a step.
"""
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import config_pb2

from common.data import pipeline
from common.data.pipeline import EVAL_BATCH
from common.paper.model import cnn9, comhe_first_term, comhe_score_term
from common.paper.projections import (LEARNED_COLLECTION, P_OBJECTIVE_COLLECTION, WEIGHT_DECAY,
                                      projection_descent)
from common.paper.protocol import LABEL_SMOOTHING
from common.paper.schedule import learning_rate, scaled_widths
from common.run import device, loop
from common.run.loop import CHECKPOINT_ADVICE, RESTART_ADVICE, NonFiniteLoss


@dataclass
class TrainGraph:
    images: tf.Tensor
    labels: tf.Tensor
    is_training: tf.Tensor
    lr: tf.Tensor
    global_step: tf.Variable
    fit: tf.Tensor
    reg: tf.Tensor
    thom: tf.Tensor
    thomf: tf.Tensor
    acc: tf.Tensor
    train_op: tf.Operation
    p_objective: object        # sum of the P objectives, or None when there are no learned P
    p_steps: object            # the iteration's `iters` descent steps on them (one op), or None
    p_steps_in_train_op: bool  # train_op takes them too (else the loop runs p_steps before it)
    weights_finite: tf.Tensor  # every variable (weights, slots, averages, P) free of NaN and inf
    model: object


def build_graph(flags, hidden_term, first_term=comhe_first_term, score_term=comhe_score_term,
                n_class=100):
    """Build the whole training graph in the current default graph."""
    tf.set_random_seed(flags.random_seed)
    images = tf.placeholder(tf.uint8, [None, 32, 32, 3], name='images')
    labels = tf.placeholder(tf.int64, [None], name='labels')
    is_training = tf.placeholder(tf.bool, [], name='is_training')
    lr = tf.placeholder(tf.float32, [], name='lr')
    global_step = tf.train.get_or_create_global_step()

    model = cnn9(images, is_training, hidden_term, global_step, lr, flags.random_seed,
                 n_class=n_class, widths=scaled_widths(flags.width),
                 first_term=first_term, score_term=score_term,
                 bn_zero_debias=getattr(flags, 'bn_zero_debias', False))
    target = (1.0 - LABEL_SMOOTHING) * tf.one_hot(labels, n_class) + LABEL_SMOOTHING / n_class
    fit = tf.reduce_mean(-tf.reduce_sum(target * tf.log(tf.nn.softmax(model.logits) + 1e-4), 1))
    reg = WEIGHT_DECAY * tf.add_n([tf.reduce_sum(tf.square(v)) / 2.0 for v in model.decayed])
    loss = fit + reg + model.thom + model.thomf
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(model.logits, 1), labels), tf.float32))

    # P matrices are not trainable variables, so the main optimiser never sees them.
    main_step = tf.train.MomentumOptimizer(lr, 0.9).minimize(
        loss, global_step=global_step, var_list=tf.trainable_variables())
    objectives = tf.get_collection(P_OBJECTIVE_COLLECTION)
    p_objective = tf.add_n(objectives) if objectives else None
    p_steps = projection_descent(lr, getattr(flags, 'iters', 1))
    # Terms that took their P steps in the graph read P only through them, so the
    # assignment of the steps joins the main step: one session call per iteration.
    stepped = [p.stepped is not None for p in tf.get_collection(LEARNED_COLLECTION)]
    if any(stepped) and not all(stepped):
        raise ValueError('some learned projections take their P steps in the graph and some '
                         'do not; build them all with the same iters (learned_projection_term)')
    p_steps_in_train_op = any(stepped)
    train_op = tf.group(main_step, *model.bn_updates, *([p_steps] if p_steps_in_train_op else []))
    weights_finite = tf.reduce_all([tf.reduce_all(tf.is_finite(v)) for v in tf.global_variables()
                                    if v.dtype.base_dtype.is_floating])
    return TrainGraph(images, labels, is_training, lr, global_step, fit, reg, model.thom,
                      model.thomf, acc, train_op, p_objective, p_steps, p_steps_in_train_op,
                      weights_finite, model)


GRAPPLER_ENV = 'COMHE_GRAPPLER'


def session_config():
    # GPU if there is one (never pinned to the CPU), memory grown as needed.
    config = tf.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    grappler = os.environ.get(GRAPPLER_ENV, '1')
    if grappler not in ('0', '1'):
        raise ValueError(f'{GRAPPLER_ENV}={grappler!r}: use 1 (TensorFlow optimises the graph, '
                         f'the default) or 0 (it does not)')
    if grappler == '0':
        # Each new session call of a small CPU graph then starts seconds sooner (the test
        # suite sets it); a real run wants grappler's fusions and GPU layouts.
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def session_callable(sess, fetches, targets, feeds):
    """``f(*values) -> [fetched arrays]``: one session call, fed ``feeds`` in order
    (numpy values of their exact dtypes), running ``targets`` too.

    A C++ callable, made once: ``Session.run`` (and ``make_callable`` with feeds,
    which calls it) spends a noticeable part of a GPU step in Python on each call,
    the callable a fraction of that (bench/feed.py measures both)."""
    if not hasattr(sess, '_make_callable_from_options'):   # a TensorFlow without it: the public path
        run = sess.make_callable([*fetches, *targets], feeds)
        return lambda *values: run(*values)[:len(fetches)]
    options = config_pb2.CallableOptions(feed=[t.name for t in feeds],
                                         fetch=[t.name for t in fetches],
                                         target=[op.name for op in targets])
    return sess._make_callable_from_options(options)


class SessionCalls:
    """The loop's session calls: the training step (with its P steps where the
    terms take them in the graph), the P steps alone where they do not, and
    the test accuracy of a batch."""

    def __init__(self, sess, g):
        self.sess, self.g = sess, g
        self.step = session_callable(sess, [g.fit, g.reg, g.thom, g.thomf, g.acc], [g.train_op],
                                     [g.images, g.labels, g.is_training, g.lr])
        self.p_steps = None
        if g.p_steps is not None and not g.p_steps_in_train_op:
            self.p_steps = session_callable(sess, [], [g.p_steps], [g.lr])
        self.accuracy = session_callable(sess, [g.acc], [], [g.images, g.labels, g.is_training])

    def train(self, x, y, lr):
        """One iteration: -> (fit, reg, thom, thomf, acc)."""
        lr = np.float32(lr)
        if self.p_steps is not None:   # terms that read P: their P steps first, a call of their own
            self.p_steps(lr)
        return [float(v) for v in self.step(x, y, _TRUE, lr)]


_TRUE, _FALSE = np.bool_(True), np.bool_(False)


def evaluate(calls, images, labels, batch_size=EVAL_BATCH):
    """Accuracy on all test images, no augmentation, ``batch_size`` per session call.

    At test time batch norm uses its moving averages, so an image's logits do
    not depend on the others in its batch: the protocol's batches of 100 give the same
    accuracy, but 100 session calls per pass, whose host time would be a
    noticeable share of a GPU's forward passes; 10 calls of 1,000 are not."""
    correct = 0.0
    for x, y in pipeline.test_batches(images, labels, batch_size):
        correct += len(y) * float(calls.accuracy(x, y, _FALSE)[0])
    return correct / len(labels)


def train(flags, run_name, hidden_term, dataset=None, **graph_kwargs):
    """Train one configuration (or resume it with flags.resume); returns the exit code.

    ``dataset``: (train_images, train_labels, test_images, test_labels) to use
    instead of CIFAR-100 from ``flags.data_dir`` (uint8 [n, 32, 32, 3], int).
    """
    return loop.run_with_data_and_lock(
        flags, run_name, dataset, device.describe(),
        lambda files, *arrays: _train_run(flags, run_name, hidden_term, graph_kwargs, files, *arrays))


def _train_run(flags, run_name, hidden_term, graph_kwargs, files, train_x, train_y, test_x, test_y):
    graph = tf.Graph()
    with graph.as_default():
        g = build_graph(flags, hidden_term, **graph_kwargs)
        saver = tf.train.Saver(max_to_keep=2)
        init = tf.global_variables_initializer()
    with tf.Session(graph=graph, config=session_config()) as sess:
        if flags.resume:
            restored = files.checkpoint_iteration()
            path = files.checkpoint_dir / f'ckpt-{restored}'
            try:
                saver.restore(sess, str(path))
            except (tf.errors.OpError, ValueError) as e:     # missing, truncated, another graph's
                reason = str(e).strip().splitlines()[0] if str(e).strip() else ''
                print(f'error: {path} cannot be restored ({type(e).__name__}: {reason}); '
                      f'{CHECKPOINT_ADVICE}', file=sys.stderr)
                return 2
            saved_step = int(sess.run(g.global_step))
            if saved_step != restored:
                print(f'error: {path} holds the state after step {saved_step}, not {restored} as its '
                      f'name and the checkpoint index say; {CHECKPOINT_ADVICE}', file=sys.stderr)
                return 2
            # So that max_to_keep also counts the checkpoints written before the restart.
            state = tf.train.get_checkpoint_state(str(files.checkpoint_dir))
            saver.recover_last_checkpoints([str(files.checkpoint_dir / Path(p).name)
                                            for p in state.all_model_checkpoint_paths])
        else:
            restored = None
            sess.run(init)
        start = loop.prepare_run_files(flags, files, run_name, restored)
        graph.finalize()
        calls = SessionCalls(sess, g)
        with graph.as_default():
            events = tf.summary.FileWriter(str(files.tensorboard_dir))
        # Tells TensorBoard to drop what a killed run wrote after this step.
        events.add_session_log(tf.SessionLog(status=tf.SessionLog.START), start)

        def checkpoint(iteration):
            # Never save what a diverging update left, so the last checkpoint stays good:
            # finite variables, and finite terms that need no batch.
            lr = learning_rate(iteration, flags.base_lr, flags.max_iters)
            finite, *terms = sess.run([g.weights_finite, g.reg, g.thom, g.thomf], {g.lr: lr})
            bad = [f'{k} = {v}' for k, v in zip(('reg', 'thom', 'thomf'), terms)
                   if not math.isfinite(v)]
            if not finite or bad:
                problem = ', '.join((['non-finite weights'] if not finite else []) + bad)
                raise NonFiniteLoss(f'the update of iteration {iteration - 1} left weights that '
                                    f'cannot be saved ({problem}); {RESTART_ADVICE}')
            saver.save(sess, str(files.checkpoint_dir / 'ckpt'), global_step=iteration,
                       write_meta_graph=False)
            events.flush()

        def scalars(iteration, **values):
            _scalars(events, iteration, **values)

        def test_line(iteration):
            loop.write_test_line(files, iteration, evaluate(calls, test_x, test_y), scalars)

        try:
            if not flags.resume:
                checkpoint(0)   # so that a run killed early can still be resumed
            code = loop.run_loop(flags, calls.train, files, start, train_x, train_y, scalars,
                                 checkpoint, test_line, has_energy=bool(g.model.layer_terms))
        except NonFiniteLoss as e:
            code = loop.report_non_finite(e, files)
        events.close()
    return code


def _scalars(writer, step, **values):
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=float(v))
                                         for k, v in values.items()]), step)
