"""How much a CoMHE term costs a CNN-9 training step, ours against the naive form.

    .venv/bin/python bench/step_time.py --repeat 3 --json bench/results/step_time.json

Four measurements, in one process, with the timings of different graphs
interleaved (round-robin, one step of each graph per round) so that a
machine whose load drifts treats every configuration alike:

1. Step time of the real training graph (common.training.build_graph, batch
   128 of random images, the same batch every step) for: no energy,
   half-space MHE (docs/protocol.md section 8's half_mhe, power '2'), RP (pd 40, pn 20),
   AP (pd 30, iters 1), AdvP (pd 30, iters 10); each with our terms (the
   train.py entry points) and with the naive terms of bench/naive.py. A step
   of AP/AdvP includes its ``iters`` P steps. Medians, their ratio to no
   energy, and the seconds to build each graph. Before timing, the naive
   graph is given our graph's weights and both are checked to give the same
   loss values (fit, reg, thom, thomf) at the first step and after it.
   Each build is timed after a garbage collection, with the objects of the
   graphs built before frozen out of the collector (``gc.freeze``), as in a
   train.py's fresh process (else a collection of those graphs, kept open
   for timing, lands in whichever build triggers it).
   Floors, our graphs with the energies taken out: RP's random draws alone
   (ours, and TensorFlow's own normal sampler, which the naive RP uses), RP's
   draws plus its products P W (forward and backward), and AdvP's products
   alone (its 10 P steps, the look-ahead and its second derivative, with a
   sum of squares in place of every energy).
2. Scaling: the half-space power-'2' energy of one layer, forward and
   backward, ours against naive, for N in 256, 1024, 4096 and d in 1152, 4608.
3. End to end: the training loop's per-iteration work (the real
   TrainBatchPrefetcher over CIFAR-format fixture data, written with
   common.cifar_fixture and loaded with common.data) against the same steps
   fed one fixed batch: images/s of each.
4. The machine, and how busy the rest of it was while this ran.

``--repeat K`` runs all of it K times, each in a fresh process, and reports
the medians over the runs with their range: on a 2-core VM the ratios move
by a few hundredths from one process to the next (where the buffers land,
the host), more than within one run. The README's table is
``--repeat 3``.

``--quick`` runs everything at a tiny size (for the test suite; about a minute
and a half on the 2-core development machine, most of it building the 13
graphs); its numbers mean nothing.
"""
import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from bench import naive  # noqa: E402
from common import config, data  # noqa: E402
from common.cifar_fixture import write_cifar100_archive  # noqa: E402
from common.energy import hyperspherical_energy  # noqa: E402
from common.model import comhe_first_term, comhe_score_term  # noqa: E402
from common.projections import PROJECTION_COLLECTION, random_projection_draws  # noqa: E402
from common.training import build_graph, session_config  # noqa: E402

LOSS_KEYS = ('fit', 'reg', 'thom', 'thomf')
LR = 0.1   # the schedule's first value

TARGETS = {   # config -> largest step-time ratio to no energy
    'rp': 1.20, 'ap': 1.05, 'advp': 1.05, 'half_mhe': 1.05,
}
BUILD_TARGET = ('rp', 1.5)
# Ours and naive, same weights and draws: the four losses of the first step and
# of the one after (float32 sums in another order, then one update apart).
SAME_LOSSES_RTOL = 1e-3
E2E_TARGET = 0.95


# ---------------------------------------------------------------- the configurations

def _entry_point(variant):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'{variant}_train', ROOT / variant / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flags(variant, args, **values):
    module = _entry_point(variant)
    argv = ['--width', str(args.width), '--batch_size', str(args.batch)]
    for name, value in values.items():
        argv += [f'--{name}', str(value)]
    return module, config.build_parser('', module.VARIANT, module.DEFAULTS).parse_args(argv)


def _none(*_):
    return None


def _rp_draws(flags):
    """Floor: only the draws of RP (a negligible term, so that they run)."""
    def term(W, ctx):
        d = W.shape.as_list()[0]
        P = random_projection_draws(d, flags.pd, flags.pn, ctx.seed, ctx.global_step, ctx.index)
        return 1e-30 * tf.reduce_sum(P)
    return term


def _rp_release_draws(flags):
    """The same draws from TensorFlow's own normal sampler (the naive RP's)."""
    def term(W, ctx):
        d = W.shape.as_list()[0]
        P = naive.release_draws(d, flags.pd, flags.pn, ctx.seed, ctx.global_step, ctx.index)
        return 1e-30 * tf.reduce_sum(P)
    return term


def _rp_products(flags):
    """Floor: the draws and the products P W, forward and backward, no energy."""
    def term(W, ctx):
        d = W.shape.as_list()[0]
        P = random_projection_draws(d, flags.pd, flags.pn, ctx.seed, ctx.global_step, ctx.index)
        return 1e-30 * tf.reduce_sum(tf.matmul(tf.reshape(P, [flags.pn * flags.pd, d]), W))
    return term


def _advp_products(flags):
    """Floor of AdvP: its products with W (10 P steps, in the same form as ours,
    the look-ahead and its second derivative) with a sum of squares in place of
    every energy."""
    from common import projections

    def term(W, ctx):
        P = projections.projection_variable(W.shape.as_list()[0], flags.pd)

        def squares(Q):
            return 1e-30 * tf.reduce_sum(tf.square(Q))
        objective = squares(projections._project(P, W))
        tf.add_to_collection(projections.P_OBJECTIVE_COLLECTION, objective)
        tf.add_to_collection(projections.LEARNED_COLLECTION,
                             projections.LearnedProjection(P, W, squares))
        P_ahead = P + ctx.lr * tf.gradients(objective, P)[0]
        return squares(projections._project(P_ahead, W))
    return term


class Config:
    """One graph to time: (hidden_term, first_term, score_term), P steps, label."""

    def __init__(self, key, impl, label, flags, terms, p_iters=0):
        self.key, self.impl, self.label = key, impl, label
        self.name = f'{key}/{impl}'
        self.flags, self.terms, self.p_iters = flags, terms, p_iters
        self.build_s, self.times, self.p_times = [], [], []
        self.first_run_s = None


def configs(args):
    out = []
    rp_module, rp_flags = _flags('random_projection', args, pd=args.rp_pd, pn=args.rp_pn)
    ap_module, ap_flags = _flags('angle_projection', args, pd=args.ap_pd, iters=1)
    adv_module, adv_flags = _flags('adversarial_projection', args, pd=args.ap_pd, iters=args.advp_iters)
    out.append(Config('none', 'ours', 'no energy', rp_flags, (_none, _none, _none)))
    half = (lambda W, ctx: hyperspherical_energy(W, '2', half_space=True),
            comhe_first_term, comhe_score_term)
    naive_half = (naive.hidden_half_mhe_term, naive.first_term, naive.score_term)
    out.append(Config('half_mhe', 'ours', "half-space MHE ('2')", rp_flags, half))
    out.append(Config('half_mhe', 'naive', "half-space MHE ('2')", rp_flags, naive_half))
    rp_label = f'RP (pd {rp_flags.pd}, pn {rp_flags.pn})'
    out.append(Config('rp', 'ours', rp_label, rp_flags,
                      (rp_module.comhe_term(rp_flags), comhe_first_term, comhe_score_term)))
    out.append(Config('rp', 'naive', rp_label, rp_flags,
                      (naive_rp_term(rp_flags), naive.first_term, naive.score_term)))
    for key, module, flags, term in (('ap', ap_module, ap_flags, naive.angle_projection_term),
                                     ('advp', adv_module, adv_flags, naive.adversarial_projection_term)):
        label = f'{"AP" if key == "ap" else "AdvP"} (pd {flags.pd}, iters {flags.iters})'
        out.append(Config(key, 'ours', label, flags,
                          (module.comhe_term(flags), comhe_first_term, comhe_score_term), flags.iters))
        out.append(Config(key, 'naive', label, flags,
                          (naive_learned_term(term, flags), naive.first_term, naive.score_term),
                          flags.iters))
    out.append(Config('rp_draws', 'floor', 'RP floor: draws only', rp_flags,
                      (_rp_draws(rp_flags), _none, _none)))
    out.append(Config('rp_draws_tf', 'floor', "RP draws by TensorFlow's normal sampler (naive's)",
                      rp_flags, (_rp_release_draws(rp_flags), _none, _none)))
    out.append(Config('rp_products', 'floor', 'RP floor: draws + P W products (fwd+bwd)',
                      rp_flags, (_rp_products(rp_flags), _none, _none)))
    out.append(Config('advp_products', 'floor', 'AdvP floor: its P W products only',
                      adv_flags, (_advp_products(adv_flags), _none, _none), adv_flags.iters))
    return out


def naive_rp_term(flags):
    def term(W, ctx):
        return naive.random_projection_term(W, flags.pd, flags.pn, ctx.seed, ctx.global_step,
                                            ctx.index)
    return term


def naive_learned_term(term, flags):
    return lambda W, ctx: term(W, flags.pd, ctx.lr)


# ---------------------------------------------------------------- building and checking

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
        """One training iteration as common.training.train runs it: its P steps,
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


# ---------------------------------------------------------------- load of the machine

class MachineLoad:
    """CPU time used by other processes while a phase ran (from /proc/stat)."""

    def __enter__(self):
        self.wall, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_cpu()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        busy = _busy_seconds() - self.busy if self.busy is not None else float('nan')
        own = _own_cpu() - self.own
        self.result = {'wall_s': wall, 'own_cpu_cores': own / wall,
                       'other_cpu_cores': max(0.0, busy - own) / wall}
        return False


def _busy_seconds():
    try:
        fields = [float(v) for v in open('/proc/stat').readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def _own_cpu():
    t = os.times()
    return t.user + t.system


def machine():
    info = {'platform': platform.platform(), 'python': platform.python_version(),
            'tensorflow': tf.__version__, 'numpy': np.__version__, 'cpu_count': os.cpu_count(),
            'date': time.strftime('%Y-%m-%d %H:%M:%S %z')}
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                info['cpu'] = line.split(':', 1)[1].strip()
                break
        for line in open('/proc/meminfo'):
            if line.startswith('MemTotal'):
                info['memory_gb'] = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    info['gpu'] = bool(tf.config.list_physical_devices('GPU'))
    return info


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
    train_x, train_y, _, _ = data.load_cifar100(tmp, archive_md5=info['archive_md5'],
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
    for name, b in graphs.items():
        cfg = b.cfg
        x, y = data.train_batch(train_x, train_y, cfg.flags.random_seed, 0, args.batch)
        fixed = {b.g.images: x, b.g.labels: y, b.g.is_training: True, b.g.lr: LR}
        e2e, compute = [], []
        with data.TrainBatchPrefetcher(train_x, train_y, cfg.flags.random_seed, args.batch) as batches, \
                MachineLoad() as load:
            for r in range(args.e2e_rounds):
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


# ---------------------------------------------------------------- report

def targets(result):
    """Each target against the measured value (with --repeat: the median over
    the runs, and how many of the runs met it)."""
    rows = {(r['config'], r['impl']): r for r in result['step_time']['rows']}
    out = []

    def add(what, row, key, limit, at_most=True):
        ok = (lambda v: v <= limit) if at_most else (lambda v: v >= limit)
        item = {'what': what, 'target': f'{"<=" if at_most else ">="} {limit}',
                'measured': round(row[key], 3), 'met': ok(row[key])}
        if f'{key}_runs' in row:
            item['runs'] = [round(v, 3) for v in row[f'{key}_runs']]
            item['met_in_runs'] = f'{sum(map(ok, row[f"{key}_runs"]))} of {len(row[f"{key}_runs"])}'
        out.append(item)

    for key, limit in TARGETS.items():
        if (key, 'ours') in rows:
            row = rows[key, 'ours']
            add(f'{row["label"]} step / no-energy step', row, 'ratio', limit)
    key, limit = BUILD_TARGET
    if (key, 'ours') in rows:
        row = rows[key, 'ours']
        add(f'{row["label"]} graph build / no-energy build', row, 'build_ratio', limit)
    for row in result.get('end_to_end', {}).values():
        add(f'{row["label"]}: end-to-end images/s / compute-only', row, 'ratio', E2E_TARGET,
            at_most=False)
    return out


def _ratio(row, key='ratio', digits=2):
    """'1.05', or '1.05 (1.03-1.08)' with the range over repeated runs."""
    text = f'{row[key]:.{digits}f}'
    runs = row.get(f'{key}_runs')
    if runs and len(runs) > 1:
        text += f' ({min(runs):.{digits}f}-{max(runs):.{digits}f})'
    return text


def markdown(result):
    lines = []
    st = result['step_time']
    rows = {(r['config'], r['impl']): r for r in st['rows']}
    base = rows['none', 'ours']
    lines += ['| configuration | ours: step (s) | ours: x no energy | naive: step (s) | '
              'naive: x no energy | speed-up of the term | ours: build (s) | naive: build (s) |',
              '|---|---|---|---|---|---|---|---|',
              f'| no energy | {base["median_s"]:.3f} | 1.00 | | | | {base["build_s"]:.2f} | |']
    for key in ('half_mhe', 'rp', 'ap', 'advp'):
        if (key, 'ours') not in rows:
            continue
        o, n = rows[key, 'ours'], rows[key, 'naive']
        extra_o, extra_n = o['median_s'] - base['median_s'], n['median_s'] - base['median_s']
        speedup = f'{extra_n / extra_o:.1f}x' if extra_o > 0.02 * base['median_s'] else 'n/a (ours within 2 %)'
        lines.append(f'| {o["label"]} | {o["median_s"]:.3f} | {_ratio(o)} | {n["median_s"]:.3f} | '
                     f'{_ratio(n)} | {speedup} | {o["build_s"]:.2f} (x{o["build_ratio"]:.2f}) | '
                     f'{n["build_s"]:.2f} (x{n["build_ratio"]:.2f}) |')
    for key in ('rp_draws', 'rp_draws_tf', 'rp_products', 'advp_products'):
        if (key, 'floor') in rows:
            f = rows[key, 'floor']
            lines.append(f'| {f["label"]} | {f["median_s"]:.3f} | {_ratio(f)} | | | | | |')
    if result.get('scaling'):
        lines += ['', '| N | d | ours (ms) | naive (ms) | speed-up |', '|---|---|---|---|---|']
        for r in result['scaling']:
            lines.append(f'| {r["N"]} | {r["d"]} | {r["ours_s"] * 1e3:.1f} | {r["naive_s"] * 1e3:.1f} | '
                         f'{r["speedup"]:.1f}x |')
    if result.get('end_to_end'):
        lines += ['', '| configuration | end to end (img/s) | compute only (img/s) | ratio |',
                  '|---|---|---|---|']
        for r in result['end_to_end'].values():
            lines.append(f'| {r["label"]} | {r["e2e_images_per_s"]:.1f} | '
                         f'{r["compute_images_per_s"]:.1f} | {_ratio(r, digits=3)} |')
    if st.get('same_losses'):
        lines += ['', '| configuration | ours = naive: largest relative difference of fit, reg, '
                      'thom, thomf (same weights and draws, 2 steps) |', '|---|---|']
        for key, check in st['same_losses'].items():
            lines.append(f'| {rows[key, "ours"]["label"]} | {check["max_rel_diff"]:.1e} |')
    repeated = any('runs' in t for t in result['targets'])
    lines += ['', '| target | wanted | measured | met |' + (' met in runs | per run |' if repeated else ''),
              '|---|---|---|---|' + ('---|---|' if repeated else '')]
    for t in result['targets']:
        line = f'| {t["what"]} | {t["target"]} | {t["measured"]} | {"yes" if t["met"] else "NO"} |'
        if repeated:
            line += f' {t.get("met_in_runs", "")} | {", ".join(map(str, t.get("runs", [])))} |'
        lines.append(line)
    return '\n'.join(lines)


def total_note(result):
    loads = result.get('step_time', {}).get('load')
    loads = loads if isinstance(loads, list) else [loads] if loads else []
    note = f'{result["total_s"] / 60:.1f} min'
    if 'runs' in result:
        note += f', {len(result["runs"])} runs in separate processes (medians over the runs)'
    if loads:
        others = ', '.join(f'{load["other_cpu_cores"]:.2f}' for load in loads)
        note += (f'; while the steps were timed, other processes used {others} '
                 f'of the {result["machine"]["cpu_count"]} cores')
    return note


# ---------------------------------------------------------------- --repeat

def _child_argv(args, skip):
    """Command-line arguments that reproduce `args` in a child process (no --json, --repeat)."""
    argv = []
    for name, value in vars(args).items():
        if name in ('json', 'repeat', 'skip') or value is None or value is False:
            continue
        if value is True:
            argv.append(f'--{name}')
        elif isinstance(value, list):
            argv += [f'--{name}', *map(str, value)]
        else:
            argv += [f'--{name}', str(value)]
    return argv + (['--skip', *sorted(skip)] if skip else [])


def aggregate(runs):
    """One result from the results of repeated runs: medians over the runs of
    each run's medians and ratios, the per-run ratios kept beside them."""
    med = statistics.median
    out = {'runs': runs, 'machine': runs[0]['machine'], 'quick': runs[0]['quick']}
    groups = {}
    for run in runs:
        for row in run['step_time']['rows']:
            groups.setdefault((row['config'], row['impl']), []).append(row)
    rows = []
    for rs in groups.values():
        row = {k: rs[0][k] for k in ('config', 'impl', 'label', 'p_iters')}
        for key in ('median_s', 'ratio', 'paired_ratio', 'p_steps_median_s', 'build_s',
                    'build_ratio', 'first_run_s'):
            row[key] = med(r[key] for r in rs)
        row['ratio_runs'] = [r['ratio'] for r in rs]
        row['build_ratio_runs'] = [r['build_ratio'] for r in rs]
        row['finite'] = all(r['finite'] for r in rs)
        rows.append(row)
    same = {}
    for key in runs[0]['step_time']['same_losses']:
        checks = [run['step_time']['same_losses'][key] for run in runs]
        same[key] = {'max_rel_diff': max(c['max_rel_diff'] for c in checks), 'runs': checks}
    out['step_time'] = {'rows': rows, 'same_losses': same,
                        'load': [run['step_time']['load'] for run in runs]}
    if all('end_to_end' in run for run in runs):
        e2e = {}
        for key, row0 in runs[0]['end_to_end'].items():
            rs = [run['end_to_end'][key] for run in runs]
            e2e[key] = {'label': row0['label'],
                        **{k: med(r[k] for r in rs) for k in ('e2e_images_per_s',
                                                               'compute_images_per_s', 'ratio')},
                        'ratio_runs': [r['ratio'] for r in rs]}
        out['end_to_end'] = e2e
    scaling = [run['scaling'] for run in runs if run.get('scaling')]
    if scaling:
        out['scaling'] = scaling[0]
    return out


def repeat(args, log):
    """Run the benchmark args.repeat times in fresh processes (per-process effects,
    such as where the buffers land, move the ratios by a few hundredths)."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            path = Path(tmp) / f'run{i}.json'
            skip = set(args.skip) | ({'scaling'} if i else set())
            log(f'== run {i + 1} of {args.repeat}')
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *_child_argv(args, skip),
                            '--json', str(path)], check=True)
            runs.append(json.loads(path.read_text()))
    return aggregate(runs)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--json', type=Path, help='write all results to this file')
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes (width 0.125, batch 8, 2 steps): a smoke test, not a measurement')
    p.add_argument('--width', type=float, default=1.0)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps', type=int, default=30, help='timed steps of each graph')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps of each graph first')
    p.add_argument('--build_repeats', type=int, default=3)
    p.add_argument('--rp_pd', type=int, default=40)
    p.add_argument('--rp_pn', type=int, default=20)
    p.add_argument('--ap_pd', type=int, default=30)
    p.add_argument('--advp_iters', type=int, default=10)
    p.add_argument('--only', nargs='*', help='step time of these configurations only (and no energy)')
    p.add_argument('--scale_n', type=int, nargs='*', default=[256, 1024, 4096])
    p.add_argument('--scale_d', type=int, nargs='*', default=[1152, 4608])
    p.add_argument('--scale_repeats', type=int, default=5)
    p.add_argument('--e2e', nargs='*', default=['none', 'rp'], help='configurations to run end to end')
    p.add_argument('--e2e_rounds', type=int, default=4)
    p.add_argument('--e2e_block', type=int, default=10)
    p.add_argument('--fixture_images', type=int, default=2000)
    p.add_argument('--train_images', type=int, default=50000)
    p.add_argument('--skip', nargs='*', default=[], choices=['step', 'scaling', 'e2e'])
    p.add_argument('--repeat', type=int, default=1,
                   help='run everything this many times, each in a fresh process, and report '
                        'the medians over the runs (the scaling table comes from the first)')
    p.add_argument('--verbose', action='store_true')
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.batch, args.steps, args.warmup, args.build_repeats = 0.125, 8, 2, 1, 1
        args.rp_pd, args.rp_pn, args.ap_pd, args.advp_iters = 5, 3, 5, 2
        args.scale_n, args.scale_d, args.scale_repeats = [16, 32], [8, 24], 2
        args.e2e_rounds, args.e2e_block, args.fixture_images, args.train_images = 1, 2, 64, 256
    return args


def main(argv=None):
    args = parse(argv)
    tf.disable_eager_execution()

    t0 = time.perf_counter()

    def log(message):
        print(f'[{time.perf_counter() - t0:6.1f} s] {message}' if message else '', flush=True)

    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8),
             rng.integers(0, 100, args.batch))
    result = {'command': ' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
              'quick': args.quick, 'machine': machine(), 'load_average_start': os.getloadavg(),
              'settings': {k: (v if not isinstance(v, Path) else str(v)) for k, v in vars(args).items()}}
    start = time.perf_counter()
    e2e_graphs = {}
    if args.repeat > 1:
        result.update(repeat(args, log))
    elif 'step' not in args.skip:
        log('== step time')
        keep = [f'{key}/ours' for key in args.e2e] if 'e2e' not in args.skip else []
        result['step_time'], e2e_graphs = step_times(args, batch, log, keep)
    if e2e_graphs:
        log('== end to end against compute only')
        result['end_to_end'] = end_to_end(args, e2e_graphs, log)
    if 'scaling' not in args.skip and args.repeat == 1:
        log('== scaling: half-space energy of one layer, forward + backward')
        result['scaling'] = scaling(args, log)
    result['load_average_end'] = os.getloadavg()
    result['total_s'] = time.perf_counter() - start
    if 'step_time' in result:
        result['targets'] = targets(result)
        result['markdown'] = markdown(result)
        log('')
        log(result['markdown'])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + '\n')
        log(f'\nwrote {args.json}')
        if 'markdown' in result:
            m = result['machine']
            quick = ('**--quick: tiny sizes, a smoke test; these numbers mean nothing.**\n\n'
                     if args.quick else '')
            header = (f'# CoMHE step-time benchmark ({args.json.name})\n\n{quick}`{result["command"]}`, {m["date"]}, {total_note(result)}\n\n'
                      f'Machine: {m.get("cpu", "?")}, {m["cpu_count"]} cores, {m.get("memory_gb", "?")} GB, '
                      f'{"a GPU" if m["gpu"] else "no GPU"}; {m["platform"]}; Python {m["python"]}, '
                      f'TensorFlow {m["tensorflow"]}, NumPy {m["numpy"]}.\n\n')
            args.json.with_suffix('.md').write_text(header + result['markdown'] + '\n')
            log(f'wrote {args.json.with_suffix(".md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
