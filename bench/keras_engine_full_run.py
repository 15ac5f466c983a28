"""One complete run of ``train.py --engine keras`` on a synthetic CIFAR-100-format set
(CIFAR-100 itself cannot travel to a borrowed GPU machine), timed end to end.

    # RP, full width, batch 128, 75,000 iterations:
    KERAS_BACKEND=jax python bench/keras_engine_full_run.py --out DIR
    # a smoke test: width 1/8, batch 16, 300 iterations:
    KERAS_BACKEND=jax python bench/keras_engine_full_run.py --out DIR --quick

The set: 50,000 training and 10,000 test images of 100 classes in the format of the
python release (common.data.cifar_fixture: a colour and stripe pattern per class plus noise,
so the run learns), written to a temporary folder with its md5s passed to train.py.
The run: ``<variant>/train.py --engine keras`` with the protocol's defaults (75,000
iterations, a test pass every 500, a checkpoint every 2,500), in a subprocess.

Writes to --out: the run's train and test logs, its standard output and error
(``run.txt``: the device line, progress), and ``full_run.md`` / ``.json``: the wall
time from start to exit, the time to the first log line (start-up and compilation),
the iterations per second after it, the last test accuracy, the machine and the command.
A run stopped by --timeout still writes all of these, with the iteration it reached.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.data.cifar_fixture import write_cifar100_archive
from common.paper.schedule import FULL_ITERS

VARIANTS = ('random_projection', 'angle_projection', 'adversarial_projection')
TRAIN_LINE = re.compile(r'^====iter_(\d+):')


def card():
    try:
        return subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True,
                              timeout=30).stdout.strip() or 'nvidia-smi printed nothing'
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'no nvidia-smi ({e.__class__.__name__})'


def run(args, data_dir, md5, log_dir, out, deadline):
    """train.py in a subprocess, its output copied to out/run.txt as it comes ->
    dict(exit_code (None when stopped by --timeout), wall_s, first_line_s, last_iteration,
    iterations_per_s between the first and the last train line). ``deadline``: a
    time.perf_counter() at which the run is stopped, or None."""
    command = [sys.executable, str(ROOT / args.variant / 'train.py'), '--engine', 'keras',
               '--data_dir', str(data_dir), '--data_md5', md5, '--log_dir', str(log_dir),
               '--width', str(args.width), '--batch_size', str(args.batch_size),
               '--max_iters', str(args.max_iters), *args.train_args]
    start = time.perf_counter()
    first = last = None     # (seconds, iteration) of the first and the last train line
    with open(out / 'run.txt', 'w') as text:
        text.write(' '.join(command) + '\n')
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'), cwd=ROOT)
        # SIGTERM at the limit: the run checkpoints and stops, as a user's Ctrl-C would.
        stopped = threading.Event()

        def stop():
            stopped.set()
            proc.terminate()
        limit = threading.Timer(max(1.0, deadline - time.perf_counter()), stop) if deadline else None
        if limit:
            limit.daemon = True
            limit.start()
        for line in proc.stdout:
            text.write(line)
            match = TRAIN_LINE.match(line)
            if match:
                last = (time.perf_counter() - start, int(match.group(1)))
                first = first or last
        code = proc.wait()
        if limit:
            limit.cancel()
    rate = (last[1] - first[1]) / (last[0] - first[0]) if first and last[0] > first[0] else None
    return dict(exit_code=None if stopped.is_set() and code != 0 else code, wall_s=time.perf_counter() - start,
                first_line_s=first and first[0], last_iteration=last and last[1],
                iterations_per_s=rate)


def last_test_accuracy(path):
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return lines[-1] if lines else None


def report(result):
    r = result
    rate = (f"{r['iterations_per_s']:.1f} iterations/s from the first to the last train line "
            f"(test passes and checkpoints included)" if r['iterations_per_s']
            else 'no rate (fewer than two train lines)')
    ended = ('finished' if r['exit_code'] == 0 else
             f"stopped by the {r['timeout_s']} s limit" if r['exit_code'] is None else
             f"exited with {r['exit_code']}")
    return '\n'.join([
        f"# `train.py --engine keras` end to end: {r['variant']}, width {r['width']}, batch "
        f"{r['batch_size']}, {r['max_iters']} iterations", '',
        f"`{r['machine']['command']}`", '',
        f"- {ended}; wall time {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min) from start to exit, "
        f"the synthetic set's writing ({r['data_s']:.0f} s) not included",
        f"- first train line after {r['first_line_s'] or 0:.0f} s (start-up, data, compilation); "
        f"last iteration logged: {r['last_iteration']}; {rate}",
        f"- last test line: `{r['last_test_line']}`",
        f"- data: synthetic CIFAR-100 format, {r['train_images']} training and {r['test_images']} "
        f"test images, 100 classes (common.data.cifar_fixture)",
        f"- machine: {r['machine']['card']}; {r['machine']['processor']} ({r['machine']['cpus']} CPUs); "
        f"Python {r['machine']['python']}; KERAS_BACKEND={r['machine']['backend']}; {r['machine']['date']}",
    ]) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, required=True, help='folder for the logs and the report')
    p.add_argument('--variant', choices=VARIANTS, default='random_projection')
    p.add_argument('--width', type=float, default=1.0)
    p.add_argument('--batch_size', type=int, default=128)
    p.add_argument('--max_iters', type=int, default=FULL_ITERS)
    p.add_argument('--train_images', type=int, default=50000)
    p.add_argument('--test_images', type=int, default=10000)
    p.add_argument('--timeout', type=float, default=0,
                   help='stop the run (SIGTERM) this many s after this script started')
    p.add_argument('--quick', action='store_true',
                   help='width 0.125, batch 16, 300 iterations, 2,000 + 500 images')
    p.add_argument('train_args', nargs='*', help='more train.py flags, after --')
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.batch_size, args.max_iters = 0.125, 16, 300
        args.train_images, args.test_images = 2000, 500
        args.train_args = args.train_args or ['--eval_every', '100', '--ckpt_every', '100']
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.timeout if args.timeout else None   # the set's writing counts too
    with tempfile.TemporaryDirectory() as tmp:
        info = write_cifar100_archive(Path(tmp) / 'data', args.train_images, args.test_images,
                                      n_classes=100, seed=0)
        data_s = time.perf_counter() - start
        md5 = info['data_md5']
        log_dir = Path(tmp) / 'logs'
        try:
            outcome = run(args, Path(tmp) / 'data', md5, log_dir, args.out, deadline)
        finally:     # the logs, whatever happened to the run
            logs = sorted(log_dir.glob('*/log_*_00.txt'))
            for path in logs:
                (args.out / path.name).write_bytes(path.read_bytes())
        test_log = next((p for p in logs if p.name.startswith('log_test')), Path('missing'))
        result = dict(
            variant=args.variant, width=args.width, batch_size=args.batch_size, max_iters=args.max_iters,
            train_images=args.train_images, test_images=args.test_images, timeout_s=args.timeout,
            data_s=data_s, **outcome, last_test_line=last_test_accuracy(test_log),
            machine=dict(card=card(), processor=platform.processor() or platform.machine(),
                         cpus=os.cpu_count(), python=platform.python_version(),
                         backend=os.environ.get('KERAS_BACKEND', 'tensorflow (Keras default)'),
                         date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                         command=' '.join(['python', *sys.argv[:1], *(argv or sys.argv[1:])])))
    (args.out / 'full_run.json').write_text(json.dumps(result, indent=1) + '\n')
    (args.out / 'full_run.md').write_text(report(result))
    print(report(result))
    return 0 if result['exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
