"""Times the Keras engine's training step (``train.py --engine keras``) and its test
pass on the backend KERAS_BACKEND names, and projects the wall time of a full run
(75,000 iterations, a test pass every 500: 150 passes).

    KERAS_BACKEND=jax python bench/keras_engine_step.py                      # full width, batch 128
    KERAS_BACKEND=jax python bench/keras_engine_step.py --quick              # a smoke test

The step is the engine's own compiled step (common/keras_engine/step.py: P steps,
RP draws and the momentum update included, one device call), on random batches, for
no energy, half-space MHE, RP (40, 20), AP (30, 1) and AdvP (30, 10). The
configurations are interleaved round by round; each round times ``--steps`` steps
after one untimed step (compilation). Prints a Markdown table; ``--json`` writes
the figures with the machine and the command.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras
import numpy as np

from common.keras_engine import network, step as steps, testset
from common.keras_engine.device import backend_device
from common.paper import terms as variants
from common.paper.schedule import FULL_ITERS, scaled_widths

CONFIGS = {   # key: (label, terms)
    'none': ('no energy', variants.mhe_terms('baseline', '2')),
    'half_mhe': ("half-space MHE ('2')", variants.mhe_terms('half_mhe', '2')),
    'rp': ('RP (pd 40, pn 20)', variants.random_projection(40, 20, 0)),
    'ap': ('AP (pd 30, iters 1)', variants.learned_projection('angle', 30, 1)),
    'advp': ('AdvP (pd 30, iters 10)', variants.learned_projection('adversarial', 30, 10)),
}
TEST_PASSES = FULL_ITERS // 500
TEST_IMAGES = 10000


def block(values):
    """Wait for the device: the logged values fetched to the host, as the engine does."""
    return steps.logged_values(values)


def prepare(name, width, batch_size, seed=345):
    model = network.cnn9(scaled_widths(width), 100)
    _, terms = CONFIGS[name]
    step = steps.compiled(steps.make_train_step(model, terms, seed))
    state = steps.initial_state(model, terms, seed)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, batch_size)
    start = time.perf_counter()
    state, values = step(state, x, y, np.float32(0.1))
    block(values)
    return dict(model=model, step=step, state=state, x=x, y=y,
                compile_s=time.perf_counter() - start)


def time_steps(run, n):
    start = time.perf_counter()
    for _ in range(n):
        run['state'], values = run['step'](run['state'], run['x'], run['y'], np.float32(0.1))
    block(values)
    return (time.perf_counter() - start) / n


def time_test_pass(run, images):
    test_set = testset.TestSet(run['model'], images, np.zeros(len(images), np.int64))
    test_set.accuracy(run['state'])   # compiles
    start = time.perf_counter()
    test_set.accuracy(run['state'])
    return time.perf_counter() - start


def loop_time(run, iterations, batch_size, ahead):
    """ms per iteration of the real loop (common.run.loop.run_loop: the prefetcher's batch, the
    lr, the finite checks, the log line every 100) around the engine's compiled step, on
    the run's state. ``ahead``: each step's values fetched once the next step is under way
    (the engine on a GPU); else each step waited for before the loop goes on (on a CPU)."""
    import tempfile
    from types import SimpleNamespace

    from common.run import loop, runstate
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (max(1000, 4 * batch_size), 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, len(images))

    def step(x, y, lr):
        run['state'], values = run['step'](run['state'], x, y, np.float32(lr))
        fetch = lambda: steps.logged_values(values)   # noqa: E731 (a value the loop may call later)
        return fetch if ahead else fetch()
    with tempfile.TemporaryDirectory() as tmp:
        files = runstate.new_run(Path(tmp))
        flags = SimpleNamespace(max_iters=iterations, batch_size=batch_size, random_seed=345,
                                eval_every=10 ** 9, ckpt_every=10 ** 9, base_lr=0.1)
        with open(os.devnull, 'w') as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                start = time.perf_counter()
                loop.run_loop(flags, step, files, 0, images, labels, lambda *a, **k: None,
                              lambda it: None, lambda it: None)
                total = time.perf_counter() - start
            finally:
                sys.stdout = stdout
    return 1e3 * total / iterations


def loop_times(run, iterations, batch_size, rounds=3):
    """Interleaved rounds of the loop (values fetched a step later, and each step waited
    for) and of the bare steps back to back: ms per iteration, the median of each."""
    times = {'ahead': [], 'waited': [], 'steps': []}
    for _ in range(rounds):
        times['ahead'].append(loop_time(run, iterations, batch_size, True))
        times['waited'].append(loop_time(run, iterations, batch_size, False))
        times['steps'].append(1e3 * time_steps(run, iterations))
    return {k: statistics.median(v) for k, v in times.items()} | {'rounds': times}


def machine():
    return dict(backend=keras.backend.backend(), keras=keras.__version__, python=platform.python_version(),
                processor=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                device=backend_device().description, date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                command=' '.join(['python', *sys.argv]))


def report(result):
    base = result['step_s'].get('none')
    lines = [f"{result['machine']['device']}; backend {result['machine']['backend']}, width "
             f"{result['width']}, batch {result['batch_size']}, {result['rounds']} rounds of "
             f"{result['steps']} steps", '',
             '| configuration | step (ms), median of rounds | x no energy | compile (s) | '
             'projected full run (h) |', '|---|---|---|---|---|']
    for name, seconds in result['step_s'].items():
        total = FULL_ITERS * seconds + TEST_PASSES * result['test_pass_s']
        ratio = f'{seconds / base:.3f}' if base else ''
        lines.append(f"| {CONFIGS[name][0]} | {1e3 * seconds:.2f} | {ratio} | "
                     f"{result['compile_s'][name]:.1f} | {total / 3600:.2f} |")
    lines += ['', f"test pass ({TEST_IMAGES} images, {testset.EVAL_BATCH} a call): "
              f"{result['test_pass_s']:.2f} s; a full run: {FULL_ITERS} steps + {TEST_PASSES} passes"]
    if 'loop_ms' in result:
        t = result['loop_ms']
        lines.append(f"the real loop, ms per iteration (median of {len(t['rounds']['steps'])} rounds): "
                     f"{t['ahead']:.3f} with the values fetched a step later (the engine on a GPU), "
                     f"{t['waited']:.3f} with each step waited for (on a CPU); the bare steps back to back "
                     f"{t['steps']:.3f}")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--width', type=float, default=1.0)
    p.add_argument('--batch_size', type=int, default=128)
    p.add_argument('--steps', type=int, default=20, help='timed steps per configuration and round')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--configs', default=','.join(CONFIGS), help='comma-separated, of: ' + ', '.join(CONFIGS))
    p.add_argument('--quick', action='store_true', help='width 0.125, batch 16, 2 steps, 1 round')
    p.add_argument('--json', type=Path, help='write the figures here')
    p.add_argument('--loop', type=int, default=0, metavar='N',
                   help='also time N iterations of the real loop, with the step of the first '
                        'configuration, against the bare steps')
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.batch_size, args.steps, args.rounds = 0.125, 16, 2, 1
    names = args.configs.split(',')
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f'unknown configuration(s) {unknown}; choose among {list(CONFIGS)}')
    runs = {}
    for name in names:
        runs[name] = prepare(name, args.width, args.batch_size)
        print(f'compiled {name}: {runs[name]["compile_s"]:.1f} s', file=sys.stderr, flush=True)
    times = {name: [] for name in names}
    try:
        for r in range(args.rounds):
            for name in names:
                times[name].append(time_steps(runs[name], args.steps))
            print(f'round {r + 1}: ' + ', '.join(f'{n} {1e3 * t[-1]:.1f} ms' for n, t in times.items()),
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:   # SIGINT (a time limit): report the whole rounds taken
        print('interrupted: reporting the rounds done', file=sys.stderr, flush=True)
        done = min(len(t) for t in times.values())
        if not done:
            return 1
        times = {n: t[:done] for n, t in times.items()}
        args.rounds = done
    images = np.random.default_rng(1).integers(0, 256, (TEST_IMAGES, 32, 32, 3), dtype=np.uint8)
    result = dict(machine=machine(), width=args.width, batch_size=args.batch_size, steps=args.steps,
                  rounds=args.rounds, step_s={n: statistics.median(t) for n, t in times.items()},
                  rounds_s=times, compile_s={n: r['compile_s'] for n, r in runs.items()},
                  test_pass_s=time_test_pass(runs[names[0]], images))
    if args.loop:
        result['loop_ms'] = loop_times(runs[names[0]], args.loop, args.batch_size)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
