"""What bench/feed.py measures, each side by side with the implementation before issue 13
(bench/legacy.py): the input pipeline and the hand-over of a batch, the training loop's
session calls and host time, the session-call overhead, the test pass, and the training
graphs' ops without a GPU kernel."""
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import tensorflow.compat.v1 as tf

from bench import legacy
from bench.gpu_kernels import ops_without_gpu_kernel
from bench.machine import MachineLoad
from common.run import config, loop
from common.tf1_engine import training
from common.tf1_engine.terms import graph_terms
from common.data.pipeline import TrainBatchPrefetcher, TrainBatches
from common.paper.projections import learned_projection_term

ROOT = Path(__file__).resolve().parent.parent

H100_STEP_MS = 4.56                       # CNN-9, batch 128, JAX on one H100 (not this code)
H100_TEST_PASS_MS = 10000 / 128 * H100_STEP_MS / 3   # forward only: about a third of a step
# variant key -> (entry point, extra flags, label)
LOOP_VARIANTS = {
    'rp': ('random_projection', [], 'RP (pd 40, pn 20)'),
    'ap': ('angle_projection', [], 'AP (pd 30, iters 1)'),
    'advp': ('adversarial_projection', [], 'AdvP (pd 30, iters 10)'),
    'baseline': ('mhe', ['--model_name', 'baseline'], 'MHE row: baseline'),
    'half_mhe': ('mhe', ['--model_name', 'half_mhe'], "MHE row: half_mhe ('2')"),
}


def random_set(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n)


# ---------------------------------------------------------------- 1, 2: the input pipeline

PIPELINES = {'old': legacy.train_batches, 'new': TrainBatches}


def pipeline(args, images, labels, log):
    """Images/s through the prefetcher, in alternating blocks; the batch function alone."""
    out = {}
    for name, make in PIPELINES.items():
        fn = make(images, labels, 345, args.batch)
        fn(0)
        times = []
        for it in range(1, args.function_batches + 1):
            start = time.perf_counter()
            fn(it)
            times.append(time.perf_counter() - start)
        out[name] = {'function_ms': 1e3 * statistics.median(times), 'images_s': [], 'batches': 0}
    prefetchers = {name: TrainBatchPrefetcher(images, labels, 345, args.batch, make_batches=make)
                   for name, make in PIPELINES.items()}
    try:
        for name, p in prefetchers.items():
            start = time.perf_counter()
            next(p)                                  # the new one pads the training set first
            out[name]['first_batch_s'] = time.perf_counter() - start
        with MachineLoad() as load:
            for _ in range(args.pipeline_rounds):
                for name, p in prefetchers.items():
                    n = args.pipeline_batches if name == 'new' else max(1, args.pipeline_batches // 8)
                    for _ in range(p._queue.maxsize):   # made while the other one was timed
                        next(p)
                    start = time.perf_counter()
                    for _ in range(n):
                        next(p)
                    out[name]['images_s'].append(n * args.batch / (time.perf_counter() - start))
                    out[name]['batches'] += n
        for name, p in prefetchers.items():
            out[name]['handover_ms'] = handover(p, args)
    finally:
        for p in prefetchers.values():
            p.close()
    for name, row in out.items():
        # All blocks together: the images taken over the time taken.
        row['images_per_s'] = row['batches'] * args.batch / sum(
            (row['batches'] / len(row['images_s'])) * args.batch / r for r in row['images_s'])
        log(f'  {name}: {row["images_per_s"]:,.0f} img/s through the prefetcher '
            f'(blocks {", ".join(f"{r:,.0f}" for r in row["images_s"])}); batch function '
            f'{row["function_ms"]:.2f} ms; hand-over median {row["handover_ms"]["median"]:.3f} ms')
    return {'rows': out, 'load': load.result}


def handover(prefetcher, args):
    """next() on a full queue: the time the training thread waits for a ready batch."""
    samples = []
    for _ in range(args.handover_samples):
        deadline = time.perf_counter() + 2.0
        while not prefetcher._queue.full() and time.perf_counter() < deadline:
            time.sleep(0.002)
        start = time.perf_counter()
        next(prefetcher)
        samples.append(1e3 * (time.perf_counter() - start))
    samples.sort()
    return {'median': statistics.median(samples), 'p90': samples[int(0.9 * (len(samples) - 1))],
            'max': samples[-1], 'samples': len(samples)}


# ---------------------------------------------------------------- 3: the training loop

class CallRecorder:
    """Every session call of training.train, old or new: (start, end, is it the loop's)."""

    def __init__(self):
        self.calls, self.graph = [], None

    def _is_loop(self, fetched):
        g = self.graph
        return any(f is g.train_op or (g.p_steps is not None and f is g.p_steps) for f in fetched)

    def _record(self, start, fetched):
        self.calls.append((start, time.perf_counter(), self._is_loop(fetched)))

    def patches(self):
        build, run, make = training.build_graph, tf.Session.run, training.session_callable
        recorder = self

        def build_graph(*a, **k):
            recorder.graph = build(*a, **k)
            return recorder.graph

        def timed_run(sess, fetches, *a, **k):
            start = time.perf_counter()
            try:
                return run(sess, fetches, *a, **k)
            finally:
                recorder._record(start, fetches if isinstance(fetches, (list, tuple)) else [fetches])

        def session_callable(sess, fetches, targets, feeds):
            fn = make(sess, fetches, targets, feeds)

            def timed(*values):
                start = time.perf_counter()
                try:
                    return fn(*values)
                finally:
                    recorder._record(start, targets)
            return timed
        return [mock.patch.object(training, 'build_graph', build_graph),
                mock.patch.object(tf.Session, 'run', timed_run),
                mock.patch.object(training, 'session_callable', session_callable)]

    def summary(self, iterations):
        loop = [c for c in self.calls if c[2]]
        per_iteration = len(loop) / iterations
        # Host time: between two calls of the loop with no other call (evaluation,
        # checkpoint) in between.
        gaps = [b[0] - a[1] for a, b in zip(self.calls, self.calls[1:]) if a[2] and b[2]]
        durations = sorted(end - start for start, end, _ in loop)
        return {'calls_per_iteration': per_iteration,
                'host_ms_per_iteration': 1e3 * statistics.mean(gaps) * per_iteration,
                'host_gap_ms_p90': 1e3 * sorted(gaps)[int(0.9 * (len(gaps) - 1))],
                'session_call_ms_median': 1e3 * statistics.median(durations),
                'gaps': len(gaps)}


def _loop_flags(key, args, log_dir):
    module_name, extra, _ = LOOP_VARIANTS[key]
    module = training_entry(module_name)
    argv = ['--width', str(args.loop_width), '--batch_size', str(args.batch), '--max_iters',
            str(args.loop_iters), '--eval_every', str(args.loop_eval_every), '--ckpt_every',
            str(args.loop_eval_every), '--log_dir', str(log_dir), *extra]
    if key in ('ap', 'advp') and args.quick:
        argv += ['--pd', '5', '--iters', '2' if key == 'advp' else '1']
    flags = config.build_parser('', module.VARIANT, module.DEFAULTS).parse_args(argv)
    flags.variant = module.VARIANT
    return module, flags


def training_entry(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'{name}_train', ROOT / name / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _terms(key, module, flags, old):
    terms = graph_terms(module.terms(flags))
    if old and key in ('ap', 'advp'):   # as the terms were: reading P, stepped by a call of its own
        variant = 'angle' if key == 'ap' else 'adversarial'
        terms['hidden_term'] = lambda W, ctx: learned_projection_term(W, flags.pd, ctx.lr, variant, 0)
    return terms


def run_loop(key, impl, args, dataset, tmp):
    """One in-process training run; -> (summary, train log lines)."""
    module, flags = _loop_flags(key, args, Path(tmp) / f'{key}_{impl}')
    recorder = CallRecorder()
    patches = recorder.patches()
    if impl == 'old':
        patches += [mock.patch.object(loop, 'run_loop', legacy.loop),
                    mock.patch.object(training, 'evaluate', legacy.evaluate)]
    for p in patches:
        p.start()
    try:
        with open(os.devnull, 'w') as quiet, mock.patch.object(sys, 'stdout', quiet):
            code = training.train(flags, config.run_name(flags), dataset=dataset,
                                  **_terms(key, module, flags, impl == 'old'))
    finally:
        for p in reversed(patches):
            p.stop()
    if code != 0:
        raise RuntimeError(f'{key}/{impl}: training exited with {code}')
    run_dir = flags.log_dir / config.run_name(flags)
    lines = (run_dir / 'log_train_00.txt').read_text().splitlines()
    return recorder.summary(flags.max_iters), lines


def compare_logs(old, new):
    """Line-by-line comparison of two train logs: equal lines, largest relative difference."""
    worst = 0.0
    for x, y in zip(old, new):
        for u, v in zip(_numbers(x), _numbers(y)):
            worst = max(worst, abs(u - v) / max(abs(u), 1e-12))
    return {'lines': len(new), 'equal_lines': sum(x == y for x, y in zip(old, new)),
            'same_count': len(old) == len(new), 'max_rel_diff': worst}


def _numbers(line):
    return [float(part.split('=')[1]) for part in line.split(': ', 1)[1].split(', ')]


def loops(args, dataset, log):
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.loop_variants:
            row = {'label': LOOP_VARIANTS[key][2]}
            logs = {}
            for impl in ('old', 'new'):
                row[impl], logs[impl] = run_loop(key, impl, args, dataset, tmp)
            row['logs'] = compare_logs(logs['old'], logs['new'])
            out[key] = row
            log(f'  {row["label"]}: calls/iteration old {row["old"]["calls_per_iteration"]:.2f}, '
                f'new {row["new"]["calls_per_iteration"]:.2f}; host ms/iteration old '
                f'{row["old"]["host_ms_per_iteration"]:.3f}, new {row["new"]["host_ms_per_iteration"]:.3f}; '
                f'logs: {row["logs"]["equal_lines"]} of {row["logs"]["lines"]} lines equal, '
                f'max rel diff {row["logs"]["max_rel_diff"]:.1e}')
    return out


# ---------------------------------------------------------------- 4, 5: session calls, test pass

def _idle_graph():
    """The loop's feeds and fetches around no work: what a session call costs the host."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.uint8, [None, 32, 32, 3])
        labels = tf.placeholder(tf.int64, [None])
        is_training = tf.placeholder(tf.bool, [])
        lr = tf.placeholder(tf.float32, [])
        step = tf.Variable(0.0)
        n = tf.cast(tf.size(labels), tf.float32)
        g = SimpleNamespace(images=images, labels=labels, is_training=is_training, lr=lr,
                            fit=n, reg=n + 1, thom=n + 2, thomf=n + 3, acc=n * 0 + 1,
                            train_op=step.assign_add(lr).op, p_steps=None, p_steps_in_train_op=False)
        init = tf.global_variables_initializer()
    sess = tf.Session(graph=graph)
    sess.run(init)
    return sess, g


def session_overhead(args, log):
    sess, g = _idle_graph()
    x, y = random_set(args.batch, 1)
    calls = training.SessionCalls(sess, g)
    fetches = [g.fit, g.reg, g.thom, g.thomf, g.acc, g.train_op]
    old = lambda: sess.run(fetches, {g.images: x, g.labels: y, g.is_training: True, g.lr: 0.1})  # noqa: E731 (timed as a pair with new)
    new = lambda: calls.train(x, y, 0.1)  # noqa: E731 (timed as a pair with old)
    times = {'old': [], 'new': []}
    for _ in range(args.overhead_rounds):
        for name, fn in (('old', old), ('new', new)):
            start = time.perf_counter()
            for _ in range(20):
                fn()
            times[name].append(1e3 * (time.perf_counter() - start) / 20)
    sess.close()
    out = {name: statistics.median(t) for name, t in times.items()}
    log(f'  host ms per training-step session call, no work: old {out["old"]:.3f}, new {out["new"]:.3f}')
    return out


def test_pass(args, log):
    """Images/s of the test pass (full width, test mode) and its host time, old and new."""
    x, y = random_set(args.test_images, 2)
    # The network alone (the terms are not computed at test time, only built).
    module, flags = _loop_flags('baseline', SimpleNamespace(**{**vars(args), 'loop_width': args.test_width}),
                                '/nonexistent')
    graph = tf.Graph()
    with graph.as_default():
        g = training.build_graph(flags, **graph_terms(module.terms(flags)))
        init = tf.global_variables_initializer()
    sess = tf.Session(graph=graph, config=training.session_config())
    sess.run(init)
    real = training.SessionCalls(sess, g)
    idle_sess, idle_g = _idle_graph()
    idle = training.SessionCalls(idle_sess, idle_g)
    impls = {'old': legacy.evaluate, 'new': training.evaluate}
    out = {name: {'pass_s': [], 'host_s': []} for name in impls}
    accuracies = {}
    impls['new'](real, x[:1000], y[:1000])          # the first call of each optimises the graph
    impls['old'](real, x[:1000], y[:1000])
    for _ in range(args.test_rounds):
        for name, evaluate in impls.items():
            start = time.perf_counter()
            accuracies[name] = evaluate(real, x, y)
            out[name]['pass_s'].append(time.perf_counter() - start)
            start = time.perf_counter()
            evaluate(idle, x, y)
            out[name]['host_s'].append(time.perf_counter() - start)
    sess.close()
    idle_sess.close()
    for name, row in out.items():
        pass_s, host_s = statistics.median(row['pass_s']), statistics.median(row['host_s'])
        row.update(images_per_s=len(x) / pass_s, host_ms=1e3 * host_s,
                   calls=math.ceil(len(x) / (training.EVAL_BATCH if name == 'new' else legacy.OLD_TEST_BATCH)),
                   host_share_here=host_s / pass_s,
                   host_share_h100=1e3 * host_s / (1e3 * host_s + H100_TEST_PASS_MS))
        log(f'  {name}: {row["images_per_s"]:,.0f} img/s, {row["calls"]} calls, host {row["host_ms"]:.1f} ms '
            f'a pass ({100 * row["host_share_here"]:.2f} % here, {100 * row["host_share_h100"]:.1f} % '
            f'of an estimated H100 pass)')
    out['same_accuracy'] = bool(accuracies['old'] == accuracies['new'])
    out['accuracies'] = {k: float(v) for k, v in accuracies.items()}
    return out


# ---------------------------------------------------------------- 6: GPU kernels

def gpu_kernels(args, log):
    out = {}
    for key in args.kernel_variants:
        module, flags = _loop_flags(key, args, '/nonexistent')
        graph = tf.Graph()
        with graph.as_default():
            g = training.build_graph(flags, **_terms(key, module, flags, old=False))
        fetches = [g.fit, g.reg, g.thom, g.thomf, g.acc, g.train_op, g.weights_finite]
        missing, checked = ops_without_gpu_kernel(graph, fetches)
        out[key] = {'ops_checked': checked, 'op_types_without_gpu_kernel': missing}
        log(f'  {LOOP_VARIANTS[key][2]}: {checked} ops, without a GPU kernel: {missing or "none"}')
    return out
