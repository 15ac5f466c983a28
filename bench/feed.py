"""Can the host keep a GPU fed? The input pipeline, the training loop's session
calls and host time, and the test pass, each measured side by side with the
implementation before issue 13 (bench/legacy.py), in one process.

    .venv/bin/python bench/feed.py --repeat 3 --json bench/results/feed.json   # about 10 minutes here
    .venv/bin/python bench/feed.py --quick                                       # a smoke test

The rate to feed: one NVIDIA H100 takes 4.56 ms for a CNN-9 training step of
128 images, 28,000 images/s (a JIT-compiled JAX implementation of the same
network and protocol, not this code); the input pipeline's target is twice that.

1. Input pipeline: batches of 128 from 50,000 random images through the
   prefetcher the loop uses, taken as fast as they come, old (``train_batch``
   per iteration) and new (``TrainBatches``) in alternating blocks; and each
   batch function alone in the calling thread.
2. Hand-over: with the prefetcher's queue full, how long next() takes.
3. The training loop: ``common.tf1_engine.training.train`` in this process, on random
   data at a small width (a step of milliseconds, as on a GPU, not the 0.55 s
   of the full network on this CPU), for RP, AP, AdvP and the MHE rows
   (baseline, half_mhe), with the current and the old loop. Every session call
   is recorded (``Session.run`` and the C++ callables): the calls per
   iteration, and the host time between two calls of the loop (taking the
   batch, feeding, finite checks, logging, signal checks; not the evaluations
   and checkpoints). The two runs' train logs are compared line by line.
4. The session call itself: its host cost on a graph that does no work, with
   the training step's feeds and fetches (old: ``Session.run`` with a feed
   dict; new: the callable).
5. Test pass: 10,000 random images through the full-width network in test
   mode, new (1,000 per callable call) and old (100 per ``Session.run``):
   images/s here, and the host time of a pass (the same calls against a graph
   that does no work) as a share of the pass here and of an H100's forward
   passes (estimated at a third of its training step: 119 ms for 10,000).
6. GPU kernels: every op of each variant's training graph (and of the
   functions it calls) has a GPU kernel for its types in TensorFlow's kernel
   registry (there is no GPU here to place them on).

``--repeat K`` runs it all K times in fresh processes and reports each target
as met in k of K runs. The load of the machine (``os.getloadavg``, and the CPU
time other processes used while the pipeline was timed) is recorded with
every run.

This file is the command line and the runs; the measurements are in
bench/feed_measure.py, the report in bench/feed_report.py.
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

from bench.feed_measure import (LOOP_VARIANTS, gpu_kernels, loops, pipeline, random_set,
                                session_overhead, test_pass)
from bench.feed_report import markdown, targets, write
from bench.machine import machine


# ---------------------------------------------------------------- main

def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--json', type=Path, help='write the results here, and the Markdown beside it')
    p.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test, not a measurement')
    p.add_argument('--repeat', type=int, default=1, help='runs, each in a fresh process')
    p.add_argument('--merge', type=Path, nargs='*', help='report these results (JSON files) as one, run nothing')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--train_images', type=int, default=50000)
    p.add_argument('--function_batches', type=int, default=50)
    p.add_argument('--pipeline_batches', type=int, default=800, help='new pipeline, per block (old: 1/8)')
    p.add_argument('--pipeline_rounds', type=int, default=3)
    p.add_argument('--handover_samples', type=int, default=100)
    p.add_argument('--loop_variants', nargs='*', default=list(LOOP_VARIANTS), choices=list(LOOP_VARIANTS))
    p.add_argument('--kernel_variants', nargs='*', default=list(LOOP_VARIANTS), choices=list(LOOP_VARIANTS))
    p.add_argument('--loop_width', type=float, default=0.125)
    p.add_argument('--loop_iters', type=int, default=101)
    p.add_argument('--loop_eval_every', type=int, default=50)
    p.add_argument('--loop_test_images', type=int, default=1000)
    p.add_argument('--overhead_rounds', type=int, default=10)
    p.add_argument('--test_images', type=int, default=10000)
    p.add_argument('--test_width', type=float, default=1.0)
    p.add_argument('--test_rounds', type=int, default=1)
    p.add_argument('--skip', nargs='*', default=[], choices=['loop', 'test', 'kernels'])
    args = p.parse_args(argv)
    if args.quick:
        args.train_images, args.function_batches, args.pipeline_batches = 2000, 5, 16
        args.pipeline_rounds, args.handover_samples, args.loop_iters = 1, 5, 12
        args.loop_eval_every, args.loop_test_images, args.overhead_rounds = 5, 100, 1
        args.test_images, args.test_width, args.test_rounds = 300, 0.125, 1
        args.loop_variants, args.kernel_variants, args.batch = ['ap'], ['advp'], 32
    return args


def one_run(args, log):
    result = {'machine': machine(), 'load_average_start': os.getloadavg(), 'quick': args.quick,
              'settings': {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    images, labels = random_set(args.train_images, 0)
    log('== input pipeline')
    result['pipeline'] = pipeline(args, images, labels, log)
    log('== session call overhead')
    result['session_overhead'] = session_overhead(args, log)
    if 'loop' not in args.skip:
        log('== training loop')
        test_x, test_y = random_set(args.loop_test_images, 3)
        result['loop'] = loops(args, (images, labels, test_x, test_y), log)
    if 'test' not in args.skip:
        log('== test pass')
        result['test_pass'] = test_pass(args, log)
    if 'kernels' not in args.skip:
        log('== GPU kernels')
        result['gpu_kernels'] = gpu_kernels(args, log)
    result['load_average_end'] = os.getloadavg()
    result['targets'] = targets(result)
    return result


def main(argv=None):
    args = parse(argv)
    t0 = time.perf_counter()

    def log(message):
        print(f'[{time.perf_counter() - t0:6.1f} s] {message}', flush=True)

    command = ' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    if args.merge:
        runs = [run for path in args.merge for run in json.loads(path.read_text()).get('runs', None)
                or [json.loads(path.read_text())]]
        result = {'command': command, 'runs': runs, 'machine': runs[0]['machine'], 'quick': args.quick,
                  'merged_from': [str(path) for path in args.merge]}
    elif args.repeat > 1:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeat):
                path = Path(tmp) / f'run{i}.json'
                log(f'== run {i + 1} of {args.repeat}')
                child = [a for a in (argv if argv is not None else sys.argv[1:])]
                child = [a for j, a in enumerate(child)
                         if a not in ('--repeat', '--json') and (j == 0 or child[j - 1] not in ('--repeat', '--json'))]
                if i:        # the GPU kernels do not change from run to run
                    child += ['--skip', *sorted(set(args.skip) | {'kernels'})]   # the last --skip counts
                subprocess.run([sys.executable, str(Path(__file__).resolve()), *child, '--json', str(path)],
                               check=True)
                runs.append(json.loads(path.read_text()))
        result = {'command': command, 'runs': runs, 'machine': runs[0]['machine'], 'quick': args.quick}
    else:
        result = one_run(args, log)
        result['command'] = command
        runs = [result]
    result['total_s'] = time.perf_counter() - t0
    result['markdown'] = markdown(runs[0], runs)
    print('\n' + result['markdown'], flush=True)
    if args.json:
        write(args.json, result, runs, command, args.quick)
        log(f'wrote {args.json} and {args.json.with_suffix(".md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
