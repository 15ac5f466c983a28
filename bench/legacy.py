"""The input pipeline, training loop and evaluation as they were before the
prefetcher and the one-call loop, kept only so that bench/feed.py can measure them
side by side with the current ones; training never uses this module.

- Batches: ``common.pipeline.train_batch`` (the definition, unchanged) for each
  iteration, in the same prefetcher thread: about 3.4 ms per batch of 128,
  the epoch's permutation recomputed for every batch.
- The loop: ``Session.run`` with a feed dict, and for AP/AdvP two calls per
  iteration (the P steps, then the main step). It needs a graph whose terms
  read P (``learned_projection_term(..., iters=0)``), as they all did then.
- Evaluation: 100 test images per ``Session.run``.

``loop`` and ``evaluate`` take the place of ``common.loop.run_loop`` and
``common.training.evaluate`` (same arguments); the body of ``loop`` is the old
one, line for line, apart from where it gets its session, graph and batches.
"""
import signal
import sys

from common import pipeline, runlog, training
from common.loop import LOG_EVERY, Progress, StopSignals, append, check_finite

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
    calls = train_step.__self__          # training.SessionCalls.train
    sess, g = calls.sess, calls.g
    progress = Progress(start, flags.max_iters, flags.batch_size)
    fetches = [g.fit, g.reg, g.thom, g.thomf, g.acc, g.train_op]
    last = flags.max_iters - 1
    with pipeline.TrainBatchPrefetcher(train_x, train_y, flags.random_seed, flags.batch_size,
                                   start_iter=start, make_batches=train_batches) as batches, \
            StopSignals() as stop:
        for it in range(start, flags.max_iters):
            x, y = next(batches)
            lr = training.learning_rate(it, flags.base_lr, flags.max_iters)
            if g.p_steps is not None:
                sess.run(g.p_steps, {g.lr: lr})
            fit, reg, thom, thomf, acc, _ = sess.run(
                fetches, {g.images: x, g.labels: y, g.is_training: True, g.lr: lr})
            check_finite(it, dict(fit=fit, reg=reg, thom=thom, thomf=thomf))
            if it % LOG_EVERY == 0:
                energy = (thom, thomf) if g.model.layer_terms else (None, None)
                line = runlog.format_train_line(it, fit, reg, acc, *energy)
                append(files.train_log, line)
                scalars(it, fit=fit, reg=reg, thom=thom, thomf=thomf, lr=lr, train_acc=acc)
                print(f'{line}  [{progress(it)}]', flush=True)
            if it % flags.eval_every == 0 and 0 < it < last:
                test_line(it)
            if it == last:
                break
            if stop.signum is not None:
                checkpoint(it + 1)
                name = signal.Signals(stop.signum).name
                print(f'{name}: checkpoint saved at iteration {it + 1}; continue with the '
                      f'same command and --resume', file=sys.stderr, flush=True)
                return 128 + stop.signum
            if (it + 1) % flags.ckpt_every == 0:
                checkpoint(it + 1)
        test_line(last)
        checkpoint(flags.max_iters)
    return 0
