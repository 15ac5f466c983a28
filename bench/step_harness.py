"""How bench/step_time.py measures: builds each configuration's graph (bench/step_configs.py),
checks ours against naive on the same weights, and times step time, scaling and end to end."""
import gc
import math
import statistics
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf

from bench import naive
from bench.machine import MachineLoad
from bench.step_configs import configs
from common.data import cifar, pipeline
from common.data.cifar_fixture import write_cifar100_archive
from common.paper.energy import hyperspherical_energy
from common.paper.projections import PROJECTION_COLLECTION
from common.tf1_engine.training import build_graph, session_config

LOSS_KEYS = ('fit', 'reg', 'thom', 'thomf')
LR = 0.1   # the schedule's first value
# Ours and naive, same weights and draws: the four losses of the first step and
# of the one after (float32 sums in another order, then one update apart).
SAME_LOSSES_RTOL = 1e-3


class Built:
    def __init__(self, cfg, batch):
        graph = tf.Graph()
        # A train.py builds one graph in a fresh process: here the objects of the
        # graphs built before (kept open for timing) are frozen out of the garbage
        # collector, so that collecting them is not counted as this build's time.
        gc.collect()
        gc.freeze()
        with graph.as_default():
            start = time.perf_counter()
            self.g = build_graph(cfg.flags, *cfg.terms)
            if self.g.p_steps_in_train_op:          # ours: the P steps inside the training step
                self.p_op, self.p_runs = None, 0
            elif self.g.p_steps is not None:        # the P steps as one op, a call of their own
                self.p_op, self.p_runs = self.g.p_steps, 1
            elif self.g.p_objective is not None:    # naive: the release's optimiser step, run iters times
                self.p_op = tf.train.GradientDescentOptimizer(self.g.lr).minimize(
                    self.g.p_objective, var_list=tf.get_collection(PROJECTION_COLLECTION))
                self.p_runs = cfg.p_iters
            else:
                self.p_op, self.p_runs = None, 0
            cfg.build_s.append(time.perf_counter() - start)
            gc.unfreeze()
            init = tf.global_variables_initializer()
            self.variables = {v.op.name: v for v in tf.global_variables()}
            # To set every variable in one run (Variable.load would run each
            # initializer with its own feed, optimising a new subgraph each time).
            self.placeholders = {n: tf.placeholder(v.dtype.base_dtype, v.shape)
                                 for n, v in self.variables.items()}
            self.assign_all = tf.group(*[v.assign(self.placeholders[n])
                                         for n, v in self.variables.items()])
        self.graph, self.cfg = graph, cfg
        self.sess = tf.Session(graph=graph, config=session_config())
        self.sess.run(init)
        x, y = batch
        self.feed = {self.g.images: x, self.g.labels: y, self.g.is_training: True, self.g.lr: LR}
        self.fetches = [self.g.fit, self.g.reg, self.g.thom, self.g.thomf, self.g.acc,
                        self.g.train_op]

    def step(self, feed=None, extra=None):
        """One training iteration as common.tf1_engine.training.train runs it: its P steps,
        then the main step. -> (seconds, seconds of the P steps, the four losses).
        ``extra``: more feeds, {tensor name: value}."""
        extra = {self.graph.get_tensor_by_name(k): v for k, v in (extra or {}).items()}
        feed = {**(feed or self.feed), **extra}
        start = time.perf_counter()
        for _ in range(self.p_runs):
            self.sess.run(self.p_op, {self.g.lr: LR, **extra})
        p_done = time.perf_counter()
        values = self.sess.run(self.fetches, feed)
        end = time.perf_counter()
        return end - start, p_done - start, dict(zip(LOSS_KEYS, map(float, values[:4])))

    def copy_weights_from(self, other):
        names = sorted(self.variables)
        if names != sorted(other.variables):
            missing = set(names) ^ set(other.variables)
            raise RuntimeError(f'{self.cfg.name} and {other.cfg.name} differ in variables: {missing}')
        values = other.sess.run([other.variables[n] for n in names])
        self.sess.run(self.assign_all, {self.placeholders[n]: v for n, v in zip(names, values)})

    def close(self):
        self.sess.close()


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def check_same_losses(ours, naive_built, steps=2):
    """Same weights (copied), same draws: the losses of `steps` iterations, side by side."""
    naive_built.copy_weights_from(ours)
    # The naive RP times the release's sampler; here it takes our draws instead.
    same_draws = {naive.SAME_DRAWS: True}
    rows = []
    for _ in range(steps):
        a = ours.step()[2]
        b = naive_built.step(extra=same_draws if ours.cfg.key == 'rp' else None)[2]
        rows.append({'ours': a, 'naive': b,
                     'max_rel_diff': max(_rel(b[k], a[k]) for k in LOSS_KEYS)})
    return {'iterations': rows, 'max_rel_diff': max(r['max_rel_diff'] for r in rows)}


# ---------------------------------------------------------------- 1. step time

def step_times(args, batch, log, keep=()):
    """-> (results, {name: Built} of the graphs named in `keep`, left open)."""
    cfgs = configs(args)
    if args.only:
        cfgs = [c for c in cfgs if c.key in args.only or c.key == 'none']
    log(f'building {len(cfgs)} graphs ({args.build_repeats} times each, interleaved)')
    if not args.quick:                         # (--quick times nothing worth the extra build)
        Built(cfgs[0], batch).close()          # one-time set-up costs of the process
        cfgs[0].build_s.clear()
    built = {}
    for r in range(args.build_repeats):
        for cfg in cfgs:
            b = Built(cfg, batch)
            if r + 1 < args.build_repeats:
                b.close()
            else:
                built[cfg.name] = b
    for cfg in cfgs:
        log(f'  {cfg.name:22s} build {statistics.median(cfg.build_s):6.2f} s')

    for cfg in cfgs:                            # the first run optimises the graph
        cfg.first_run_s = built[cfg.name].step()[0]
        log(f'  {cfg.name:22s} first step {cfg.first_run_s:6.2f} s')
    checks = {}
    for cfg in cfgs:
        if cfg.impl == 'naive':
            ours = built[f'{cfg.key}/ours']
            checks[cfg.key] = check_same_losses(ours, built[cfg.name])
            log(f'  same losses {cfg.key}: max relative difference '
                f'{checks[cfg.key]["max_rel_diff"]:.2e}')
            if not checks[cfg.key]['max_rel_diff'] <= SAME_LOSSES_RTOL:
                raise RuntimeError(f'{cfg.key}: ours and naive disagree (relative difference '
                                   f'{checks[cfg.key]["max_rel_diff"]:.2e} > {SAME_LOSSES_RTOL}): '
                                   f'{checks[cfg.key]["iterations"]}')
    for cfg in cfgs:
        for _ in range(args.warmup - 1):
            built[cfg.name].step()
    log(f'timing {args.steps} steps of each, interleaved')
    with MachineLoad() as load:
        for r in range(args.steps):
            order = cfgs if r % 2 == 0 else cfgs[::-1]
            for cfg in order:
                seconds, p_seconds, losses = built[cfg.name].step()
                cfg.times.append(seconds)
                cfg.p_times.append(p_seconds)
                cfg.last_losses = losses
            if args.verbose:
                log(f'  round {r + 1}/{args.steps}')
    for name, b in built.items():
        if name not in keep:
            b.close()

    base = statistics.median(cfgs[0].times)
    base_build = statistics.median(cfgs[0].build_s)
    rows = []
    for cfg in cfgs:
        median = statistics.median(cfg.times)
        row = {
            'config': cfg.key, 'impl': cfg.impl, 'label': cfg.label,
            'median_s': median, 'ratio': median / base,
            'paired_ratio': statistics.median(t / b for t, b in zip(cfg.times, cfgs[0].times)),
            'p_steps_median_s': statistics.median(cfg.p_times) if cfg.p_iters else 0.0,
            'p_iters': cfg.p_iters,
            'build_s': statistics.median(cfg.build_s),
            'build_ratio': statistics.median(cfg.build_s) / base_build,
            'first_run_s': cfg.first_run_s,
            'times_s': cfg.times,
            'losses_after': cfg.last_losses,
            'finite': all(math.isfinite(v) for v in cfg.last_losses.values()),
        }
        rows.append(row)
        log(f'  {cfg.name:22s} {median:7.3f} s  x{row["ratio"]:.3f}  build {row["build_s"]:.2f} s '
            f'x{row["build_ratio"]:.2f}')
    return {'rows': rows, 'same_losses': checks, 'load': load.result}, \
        {name: b for name, b in built.items() if name in keep}


# ---------------------------------------------------------------- 2. scaling

def scaling(args, log):
    rows = []
    for n in args.scale_n:
        for d in args.scale_d:
            runs = {}
            for impl in ('ours', 'naive'):
                graph = tf.Graph()
                with graph.as_default():
                    W = tf.Variable(np.random.default_rng(0).normal(
                        0, (2.0 / d) ** 0.5, size=(d, n)).astype(np.float32))
                    e = (hyperspherical_energy(W, '2', half_space=True) if impl == 'ours'
                         else naive.energy(W, half_space=True))
                    grad = tf.gradients(e, W)[0]
                    sess = tf.Session(graph=graph, config=session_config())
                    sess.run(W.initializer)
                value, g = sess.run([e, grad])      # warm-up
                runs[impl] = (sess, [e, grad], [], float(value), g)
            repeats = args.scale_repeats if n * d < 4096 * 4608 else max(3, args.scale_repeats // 2)
            for r in range(repeats):
                for impl in (('ours', 'naive') if r % 2 == 0 else ('naive', 'ours')):
                    sess, fetch, times = runs[impl][:3]
                    start = time.perf_counter()
                    sess.run(fetch)
                    times.append(time.perf_counter() - start)
            ours, nv = runs['ours'], runs['naive']
            row = {'N': n, 'd': d, 'ours_s': statistics.median(ours[2]),
                   'naive_s': statistics.median(nv[2]), 'repeats': repeats,
                   'value_rel_diff': _rel(ours[3], nv[3]),
                   'grad_rel_diff': float(np.max(np.abs(ours[4] - nv[4])) / np.max(np.abs(nv[4])))}
            row['speedup'] = row['naive_s'] / row['ours_s']
            rows.append(row)
            for run in runs.values():
                run[0].close()
            log(f'  N {n:5d} d {d:5d}: ours {row["ours_s"] * 1e3:9.1f} ms  naive '
                f'{row["naive_s"] * 1e3:9.1f} ms  x{row["speedup"]:.1f}')
    return rows


# ---------------------------------------------------------------- 3. end to end

def fixture_dataset(args, tmp):
    """CIFAR-format fixture through the real loader, tiled to the CIFAR-100 training size."""
    info = write_cifar100_archive(tmp, n_train=args.fixture_images, n_test=100, n_classes=100, seed=0)
    train_x, train_y, _, _ = cifar.load_cifar100(tmp, archive_md5=info['archive_md5'],
                                                file_md5=info['file_md5'], download=False)
    reps = -(-args.train_images // len(train_x))
    return np.tile(train_x, (reps, 1, 1, 1))[:args.train_images], \
        np.tile(train_y, reps)[:args.train_images]


def end_to_end(args, graphs, log):
    """Per-iteration work of the training loop, batches from the prefetcher,
    against the same graph fed one fixed batch; blocks of each, alternated."""
    with tempfile.TemporaryDirectory() as tmp:
        train_x, train_y = fixture_dataset(args, tmp)
    results = {}
    for b in graphs.values():
        cfg = b.cfg
        x, y = pipeline.train_batch(train_x, train_y, cfg.flags.random_seed, 0, args.batch)
        fixed = {b.g.images: x, b.g.labels: y, b.g.is_training: True, b.g.lr: LR}
        e2e, compute = [], []
        with pipeline.TrainBatchPrefetcher(train_x, train_y, cfg.flags.random_seed, args.batch) as batches, \
                MachineLoad() as load:
            for _round in range(args.e2e_rounds):
                for _ in range(args.e2e_block):
                    start = time.perf_counter()
                    x, y = next(batches)
                    b.step({b.g.images: x, b.g.labels: y, b.g.is_training: True, b.g.lr: LR})
                    e2e.append(time.perf_counter() - start)
                for _ in range(args.e2e_block):
                    compute.append(b.step(fixed)[0])
        b.close()
        row = {'label': cfg.label, 'steps': len(e2e),
               'e2e_images_per_s': args.batch * len(e2e) / sum(e2e),
               'compute_images_per_s': args.batch * len(compute) / sum(compute),
               'e2e_median_s': statistics.median(e2e), 'compute_median_s': statistics.median(compute),
               'load': load.result}
        row['ratio'] = row['e2e_images_per_s'] / row['compute_images_per_s']
        results[cfg.key] = row
        log(f'  {cfg.label}: end to end {row["e2e_images_per_s"]:.1f} img/s, compute only '
            f'{row["compute_images_per_s"]:.1f} img/s, x{row["ratio"]:.3f}')
    return results
