"""An offline comparison of plain training, MHE and the three CoMHE variants on real images.

The data are scikit-learn's handwritten digits (``sklearn.datasets.load_digits``:
1,797 greyscale 8x8 images, values 0..16, ten classes), which ship inside the
package, so this runs without a network. Each image is scaled to 0..255,
upscaled 4x by nearest neighbour to 32x32 and replicated to three channels:
uint8 [n, 32, 32, 3], the shape CNN-9 takes. A fixed split (``--split_seed``)
keeps ``--n_train`` images for training and all the others for testing.

Every method is trained through the real entry points: their modules are
loaded as ``tests/conftest.py`` does, their flags come from
``common.run.config.build_parser`` with each entry point's DEFAULTS, and
``common.tf1_engine.training.train`` runs in this process (TensorFlow imported once)
with ``dataset=`` the digits and ``n_class=10``. So the network, loss,
optimiser, lr schedule, augmentation and logs are the CIFAR runs' own; only
the data and the channel width (``--width``) differ. Methods:

    baseline    mhe/train.py --model_name baseline
    half_mhe_2  mhe/train.py --model_name half_mhe --power_s 2
    RP          random_projection/train.py        (pd 40, pn 20)
    AP          angle_projection/train.py         (pd 30, iters 1)
    AdvP        adversarial_projection/train.py   (pd 30, iters 10 unless --advp_iters)

each for ``--seeds`` training seeds (``--random_seed`` 0, 1, ...). Logs go to
``<log_dir>/<entry point>/<configuration>_seed<k>/`` in the usual format; the
final test accuracies are read back from them with ``common.run.runlog``.

Writes ``<out>/digits.md`` (markdown table, command, machine),
``<out>/digits.png`` (bar chart, mean and standard deviation over seeds, each
seed a dot) and ``<out>/digits.json`` (every run's accuracy and time). Prints
the table on stdout and a progress bar line per run on stderr.

    .venv/bin/python experiments/digits.py             # the full experiment, into experiments/results/
    .venv/bin/python experiments/digits.py --quick     # a tiny run into logs/digits/quick/
"""
import argparse
import contextlib
import datetime
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from common import REPO_ROOT
from common.run import config, runlog

# label -> (entry point folder, extra flags). The order is the table's.
METHODS = {
    'baseline': ('mhe', ['--model_name', 'baseline']),
    'half_mhe_2': ('mhe', ['--model_name', 'half_mhe', '--power_s', '2']),
    'RP': ('random_projection', []),
    'AP': ('angle_projection', []),
    'AdvP': ('adversarial_projection', []),
}
N_CLASS = 10
SCALE = 4          # 8x8 -> 32x32

# Full-run defaults, from trial runs: at batch 32 and width 0.25, base lr 0.02 diverged
# (fit rising to ~8 within 100 iterations) and 0.01 diverged for some methods; 0.005
# trains every method stably to 0.92-0.95 in 500 iterations, below the ceiling.
DEFAULTS = dict(seeds=5, iters=500, width=0.25, batch_size=32, base_lr=0.005, n_train=500,
                split_seed=0, eval_every=0)
QUICK = dict(seeds=1, iters=12, width=0.125, batch_size=16, eval_every=6)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--seeds', type=int, default=None,
                   help=f'training seeds per method, 0..N-1 (default {DEFAULTS["seeds"]}, quick {QUICK["seeds"]})')
    p.add_argument('--iters', type=int, default=None,
                   help=f'training iterations per run (default {DEFAULTS["iters"]}, quick {QUICK["iters"]})')
    p.add_argument('--width', type=float, default=None,
                   help=f'CNN-9 channel multiplier (default {DEFAULTS["width"]}, quick {QUICK["width"]})')
    p.add_argument('--batch_size', type=int, default=None,
                   help=f'training batch (default {DEFAULTS["batch_size"]}, quick {QUICK["batch_size"]})')
    p.add_argument('--base_lr', type=float, default=DEFAULTS['base_lr'],
                   help='initial lr; x0.1 at 40%%, 67%% and 87%% of the run (the scaled schedule)')
    p.add_argument('--eval_every', type=int, default=None,
                   help='test accuracy every this many iterations and after the last '
                        '(default: iters // 5)')
    p.add_argument('--n_train', type=int, default=DEFAULTS['n_train'],
                   help='training images; all the other digits are the test set')
    p.add_argument('--split_seed', type=int, default=DEFAULTS['split_seed'],
                   help='seed of the fixed train/test split')
    p.add_argument('--advp_iters', type=int, default=None,
                   help='AdvP P-steps per iteration (default: the entry point\'s, 10)')
    p.add_argument('--methods', nargs='+', choices=list(METHODS), default=list(METHODS),
                   help='methods to run')
    p.add_argument('--out', type=Path, default=None,
                   help='where digits.md, digits.png and digits.json go (default experiments/results/, '
                        'for --quick logs/digits/quick/, so a check never replaces the committed results)')
    p.add_argument('--log_dir', type=Path, default=REPO_ROOT / 'logs' / 'digits',
                   help='training logs go in <log_dir>/<entry point>/<configuration>_seed<k>/')
    p.add_argument('--quick', action='store_true',
                   help='a tiny run (1 seed, 12 iterations, width 0.125) to check the pipeline')
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    if args.out is None:
        args.out = REPO_ROOT / 'logs' / 'digits' / 'quick' if args.quick else ROOT / 'experiments' / 'results'
    for name in ('seeds', 'iters', 'width', 'batch_size', 'eval_every'):
        if getattr(args, name) is None:
            setattr(args, name, sizes[name])
    if not args.eval_every:
        args.eval_every = max(1, args.iters // 5)
    if args.seeds < 1 or args.iters < 1:
        p.error('--seeds and --iters must be >= 1')
    if not 0 < args.n_train < 1797:
        p.error('--n_train must be between 1 and 1796')
    if args.batch_size > args.n_train:
        p.error('--batch_size must not exceed --n_train')
    return args


# ------------------------------------------------------------------ data

def load_digits_dataset(n_train, split_seed):
    """(train_x, train_y, test_x, test_y): uint8 [n, 32, 32, 3] and int64 labels."""
    import numpy as np
    from sklearn.datasets import load_digits
    digits = load_digits()
    # 0..16 -> 0..255, then each pixel a 4x4 block, grey in all three channels.
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    big = grey.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    images = np.ascontiguousarray(np.repeat(big[..., None], 3, axis=3))
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(images))
    train, test = order[:n_train], order[n_train:]
    return images[train], labels[train], images[test], labels[test]


# ------------------------------------------------------------------ runs

_MODULES = {}


def load_entry_point(variant):
    """Import ``<variant>/train.py`` as a module (its __main__ block does not run)."""
    if variant not in _MODULES:
        spec = importlib.util.spec_from_file_location(f'{variant}_train', ROOT / variant / 'train.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[variant] = module
    return _MODULES[variant]


def method_flags(method, seed, args):
    """(module, flags) exactly as ``<entry point>/train.py <argv>`` would parse them."""
    variant, extra = METHODS[method]
    module = load_entry_point(variant)
    argv = ['--width', str(args.width), '--batch_size', str(args.batch_size),
            '--max_iters', str(args.iters), '--eval_every', str(args.eval_every),
            '--base_lr', str(args.base_lr), '--random_seed', str(seed),
            '--log_dir', str(args.log_dir / variant), *extra,
            # 500 iterations: the release's biased BN averages would still be at 0.39 of
            # their value, and the test accuracy would measure that, not the method.
            '--bn_zero_debias']
    if method == 'AdvP' and args.advp_iters is not None:
        argv += ['--iters', str(args.advp_iters)]
    flags = config.build_parser(module.__doc__, module.VARIANT, module.DEFAULTS).parse_args(argv)
    config.validate(flags)
    return module, flags


def run_one(method, seed, args, dataset):
    """Train one method with one seed; returns the run's record (accuracy read from its log)."""
    from common.tf1_engine.terms import graph_terms
    from common.tf1_engine.training import train
    module, flags = method_flags(method, seed, args)
    name = f'{config.run_name(flags)}_seed{seed}'
    run_dir = flags.log_dir / name
    index = runlog.next_log_index(run_dir)   # the index train() is about to take
    captured = io.StringIO()
    start = time.perf_counter()
    # The training loop's per-line stdout would drown the table; it is all in the logs.
    with contextlib.redirect_stdout(captured):
        code = train(flags, name, dataset=dataset, n_class=N_CLASS, **graph_terms(module.terms(flags)))
    seconds = time.perf_counter() - start
    train_log, test_log = runlog.log_paths(run_dir, index)
    record = dict(method=method, entry_point=f'{module.VARIANT}/train.py',
                  configuration=config.run_name(flags), seed=seed, exit_code=code,
                  seconds=round(seconds, 2), train_log=_show_path(train_log),
                  test_log=_show_path(test_log), test_acc=None, test_curve=[])
    if code == 0:
        run = runlog.read_run(train_log)
        record.update(test_acc=run.final_test_acc, test_curve=run.test,
                      final_fit=run.final_fit, final_train_acc=run.train[-1]['acc'])
    else:
        tail = captured.getvalue().strip().splitlines()[-3:]
        print(f'  {method} seed {seed} failed (exit {code}): ' + ' | '.join(tail), file=sys.stderr)
    return record


def _show_path(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _clock(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 60}m{seconds % 60:02d}s'


class ProgressLine:
    """'run k of K, method, seed, elapsed, ETA' on stderr; the ETA uses each method's
    measured time per run (AdvP costs more than the rest), else the mean so far."""

    def __init__(self, plan):
        self.plan, self.start, self.times = plan, time.perf_counter(), {}

    def _eta(self, k):
        remaining = self.plan[k:]
        known = [t for ts in self.times.values() for t in ts]
        if not known:
            return '?'
        mean = sum(known) / len(known)
        per = {m: sum(ts) / len(ts) for m, ts in self.times.items()}
        return _clock(sum(per.get(m, mean) for m, _ in remaining))

    def begin(self, k):
        method, seed = self.plan[k]
        elapsed = time.perf_counter() - self.start
        width = 25
        filled = width * k // len(self.plan)
        bar = '#' * filled + '.' * (width - filled)
        print(f'[digits] [{bar}] run {k + 1} of {len(self.plan)}: {method}, seed {seed} | '
              f'elapsed {_clock(elapsed)} | ETA {self._eta(k)}', file=sys.stderr, flush=True)

    def end(self, k, record):
        self.times.setdefault(record['method'], []).append(record['seconds'])
        acc = 'failed' if record['test_acc'] is None else f'test acc {record["test_acc"]:.4f}'
        print(f'[digits]   done in {record["seconds"]:.1f}s, {acc}', file=sys.stderr, flush=True)


# ------------------------------------------------------------------ summary

def summarise(records, methods):
    """Per method: n, mean, sample std (ddof 1; 0 for one seed), min, max, seconds per run,
    and the mean paired difference to the baseline (same seed: same batches)."""
    rows = []
    base = {r['seed']: r['test_acc'] for r in records
            if r['method'] == 'baseline' and r['test_acc'] is not None}
    for method in methods:
        runs = [r for r in records if r['method'] == method]
        accs = [r['test_acc'] for r in runs if r['test_acc'] is not None]
        row = dict(method=method, entry_point=runs[0]['entry_point'] if runs else None,
                   configuration=runs[0]['configuration'] if runs else None,
                   runs=len(runs), ok=len(accs),
                   mean=statistics.fmean(accs) if accs else None,
                   std=statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
                   min=min(accs) if accs else None, max=max(accs) if accs else None,
                   seconds_per_run=statistics.fmean(r['seconds'] for r in runs) if runs else None)
        diffs = [r['test_acc'] - base[r['seed']] for r in runs
                 if r['test_acc'] is not None and r['seed'] in base]
        if method != 'baseline' and diffs:
            row['diff_vs_baseline_mean'] = statistics.fmean(diffs)
            row['diff_vs_baseline_std'] = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        rows.append(row)
    return rows


def markdown_table(rows):
    lines = ['| method | entry point (configuration) | seeds | test acc mean | std | min | max '
             '| vs baseline (paired) | s/run |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        def f(x):
            return '-' if x is None else f'{x:.4f}'
        diff = '-'
        if 'diff_vs_baseline_mean' in r:
            diff = f'{r["diff_vs_baseline_mean"]:+.4f} ± {r["diff_vs_baseline_std"]:.4f}'
        seeds = f'{r["ok"]}' if r['ok'] == r['runs'] else f'{r["ok"]} of {r["runs"]}'
        lines.append(f'| {r["method"]} | {r["entry_point"]} ({r["configuration"]}) | {seeds} '
                     f'| {f(r["mean"])} | {f(r["std"])} | {f(r["min"])} | {f(r["max"])} '
                     f'| {diff} | {r["seconds_per_run"]:.1f} |')
    return '\n'.join(lines)


def machine_info():
    import tensorflow as tf
    cpu = 'unknown'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return dict(nproc=nproc, cpu=cpu, tensorflow=tf.__version__, python=platform.python_version(),
                platform=platform.platform(),
                date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))


def plot(rows, records, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r['mean'] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    xs = range(len(rows))
    colours = ['#9e9e9e', '#6a8caf', '#d08c3f', '#5b9e5b', '#b55d5d']
    ax.bar(xs, [r['mean'] for r in rows], yerr=[r['std'] for r in rows], capsize=6,
           color=[colours[i % len(colours)] for i in xs], edgecolor='black', linewidth=0.6,
           error_kw=dict(elinewidth=1.2), zorder=2)
    for i, r in enumerate(rows):
        accs = [x['test_acc'] for x in records if x['method'] == r['method'] and x['test_acc'] is not None]
        # Each seed a dot, spread sideways so equal values stay visible.
        offsets = [(j - (len(accs) - 1) / 2) * 0.06 for j in range(len(accs))]
        ax.scatter([i + o for o in offsets], accs, s=14, color='black', zorder=3)
        ax.annotate(f'{r["mean"]:.3f}\n±{r["std"]:.3f}', (i, r['mean'] + r['std']),
                    xytext=(0, 4), textcoords='offset points', ha='center', va='bottom', fontsize=8)
    lows = [x['test_acc'] for x in records if x['test_acc'] is not None]
    spread = max(lows) - min(lows)
    # Zoomed to the data (the axis does not start at 0: the differences are small).
    ax.set_ylim(max(0.0, min(lows) - max(0.05, 1.5 * spread)), min(1.0, max(lows) + max(0.03, 0.8 * spread)))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r['method'] for r in rows])
    ax.set_ylabel('final test accuracy (axis zoomed)')
    ax.set_title(title, fontsize=9)
    ax.grid(axis='y', alpha=0.3, zorder=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    command = 'python experiments/digits.py' + ''.join(f' {a}' for a in (sys.argv[1:] if argv is None else argv))
    dataset = load_digits_dataset(args.n_train, args.split_seed)
    import tensorflow  # noqa: F401  (once, before the timer: its import is not a run's cost)
    plan = [(m, s) for s in range(args.seeds) for m in args.methods]
    progress = ProgressLine(plan)
    records = []
    for k, (method, seed) in enumerate(plan):
        progress.begin(k)
        record = run_one(method, seed, args, dataset)
        if record['exit_code'] >= 128:
            # train() caught SIGINT/SIGTERM and saved a checkpoint: stop here, write nothing.
            print(f'[digits] stopped by a signal during run {k + 1}; no results written',
                  file=sys.stderr)
            return record['exit_code']
        progress.end(k, record)
        records.append(record)
    total = time.perf_counter() - progress.start
    rows = summarise(records, args.methods)
    table = markdown_table(rows)
    machine = machine_info()
    advp_iters = args.advp_iters if args.advp_iters is not None else \
        load_entry_point('adversarial_projection').DEFAULTS['iters']
    setup = (f'{len(dataset[0])} train / {len(dataset[2])} test digits (split seed {args.split_seed}), '
             f'CNN-9 width {args.width}, {N_CLASS} outputs, batch {args.batch_size}, {args.iters} iterations, '
             f'base lr {args.base_lr} (x0.1 at 40/67/87 %), AdvP {advp_iters} P-steps per iteration, '
             f'seeds 0..{args.seeds - 1}')
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, records, args.out / 'digits.png',
         f'sklearn digits, {len(dataset[0])} train images, CNN-9 width {args.width}, '
         f'{args.iters} iters; mean ± std over {args.seeds} seed(s)')
    result = dict(command=command, setup=setup, args={k: str(v) if isinstance(v, Path) else v
                                                      for k, v in vars(args).items()},
                  machine=machine, total_seconds=round(total, 1), summary=rows, runs=records)
    (args.out / 'digits.json').write_text(json.dumps(result, indent=1) + '\n')
    md = ['# CNN-9 on scikit-learn digits: baseline, MHE and CoMHE', '',
          f'Written by `experiments/digits.py`. {setup}. Final test accuracy (the last '
          '`++++iter_` line of each run\'s log); std is the sample standard deviation over seeds; '
          '"vs baseline" is the mean ± std of the per-seed difference to the baseline run with '
          'the same seed (same batches).', '', table, '',
          f'Command: `{command}`', '',
          f'Machine: {machine["nproc"]} CPU cores (`nproc`), {machine["cpu"]}, '
          f'TensorFlow {machine["tensorflow"]}, Python {machine["python"]}; {machine["date"]}; '
          f'total {_clock(total)} for {len(plan)} runs.', '',
          '![test accuracy per method](digits.png)', '']
    (args.out / 'digits.md').write_text('\n'.join(md))
    print(table)
    print(f'\nwrote {args.out / "digits.md"}, digits.png, digits.json ({_clock(total)} in all)')
    return 0 if all(r['exit_code'] == 0 for r in records) else 1


if __name__ == '__main__':
    sys.exit(main())
