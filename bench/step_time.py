"""How much a CoMHE term costs a CNN-9 training step, ours against the naive form.

    .venv/bin/python bench/step_time.py --repeat 3 --json bench/results/step_time.json

Four measurements, in one process, with the timings of different graphs
interleaved (round-robin, one step of each graph per round) so that a
machine whose load drifts treats every configuration alike:

1. Step time of the real training graph (common.tf1_engine.training.build_graph, batch
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
   common.data.cifar_fixture and loaded with common.data.cifar) against the same steps
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

This file is the command line and the run; what is timed is in
bench/step_configs.py, how it is timed in bench/step_harness.py, the report in
bench/step_report.py, and the machine's description in bench/machine.py.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow.compat.v1 as tf

from bench.machine import machine
from bench.step_harness import end_to_end, scaling, step_times
from bench.step_report import aggregate, compact_json, markdown, targets, total_note


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
        args.json.write_text(compact_json(result))
        log(f'\nwrote {args.json}')
        if 'markdown' in result:
            m = result['machine']
            quick = ('**--quick: tiny sizes, a smoke test; these numbers mean nothing.**\n\n'
                     if args.quick else '')
            header = (f'# CoMHE step-time benchmark ({args.json.name})\n\n'
                      f'{quick}`{result["command"]}`, {m["date"]}, {total_note(result)}\n\n'
                      f'Machine: {m.get("cpu", "?")}, {m["cpu_count"]} cores, {m.get("memory_gb", "?")} GB, '
                      f'{"a GPU" if m["gpu"] else "no GPU"}; {m["platform"]}; Python {m["python"]}, '
                      f'TensorFlow {m["tensorflow"]}, NumPy {m["numpy"]}.\n\n')
            args.json.with_suffix('.md').write_text(header + result['markdown'] + '\n')
            log(f'wrote {args.json.with_suffix(".md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
