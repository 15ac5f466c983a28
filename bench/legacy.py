"""The input pipeline, training loop and evaluation as they were before the
prefetcher and the one-call loop, kept only so that bench/feed.py can measure them
side by side with the current ones; training never uses this module.

- Batches: ``common.data.pipeline.train_batch`` (the definition, unchanged) for each
  iteration, in the same prefetcher thread: about 3.4 ms per batch of 128,
  the epoch's permutation recomputed for every batch.
- The loop: ``Session.run`` with a feed dict, and for AP/AdvP two calls per
  iteration (the P steps, then the main step). It needs a graph whose terms
  read P (``learned_projection_term(..., iters=0)``), as they all did then.
- Evaluation: 100 test images per ``Session.run``.

``loop`` and ``evaluate`` take the place of ``common.run.loop.run_loop`` and
``common.tf1_engine.training.evaluate`` (same arguments); ``loop`` is the current loop's
bookkeeping around the old batches and session calls.
"""
import functools
from unittest import mock

from common.data import pipeline
from common.run.loop import run_loop

OLD_TEST_BATCH = 100


def train_batches(images, labels, seed, batch_size):
    """The prefetcher's batch maker of old: train_batch, one iteration at a time."""
    return lambda iteration: pipeline.train_batch(images, labels, seed, iteration, batch_size)


def evaluate(calls, images, labels):
    sess, g = calls.sess, calls.g
    correct = 0.0
    for x, y in pipeline.test_batches(images, labels, OLD_TEST_BATCH):
        correct += len(y) * sess.run(g.acc, {g.images: x, g.labels: y, g.is_training: False})
    return correct / len(labels)


def loop(flags, train_step, files, start, train_x, train_y, scalars, checkpoint, test_line,
         has_energy=True):
    """``common.run.loop.run_loop`` as the old loop ran it: each iteration's batch made by
    ``train_batch``, and its step as ``Session.run`` calls with a feed dict (AP/AdvP: the
    P steps, then the main step). The loop's bookkeeping is the same as it was."""
    calls = train_step.__self__          # training.SessionCalls.train
    sess, g = calls.sess, calls.g
    fetches = [g.fit, g.reg, g.thom, g.thomf, g.acc, g.train_op]

    def old_step(x, y, lr):
        if g.p_steps is not None:
            sess.run(g.p_steps, {g.lr: lr})
        return sess.run(fetches, {g.images: x, g.labels: y, g.is_training: True, g.lr: lr})[:5]
    # The loop's prefetcher, making the old batches.
    old_prefetcher = functools.partial(pipeline.TrainBatchPrefetcher, make_batches=train_batches)
    with mock.patch.object(pipeline, 'TrainBatchPrefetcher', old_prefetcher):
        return run_loop(flags, old_step, files, start, train_x, train_y, scalars, checkpoint,
                        test_line, has_energy)
