"""The training loop's bookkeeping, the same for every engine (docs/protocol.md
sections 4 to 6): the run's data and files, the iterations with their log lines,
test passes, checkpoints, SIGINT/SIGTERM and non-finite stops, and progress.

An engine (``common.tf1_engine.training``, the TF1 graph; ``common.keras_engine``, Keras 3)
supplies what it computes: ``train_step(x, y, lr) -> (fit, reg, thom, thomf, acc)`` (or a
function giving them, see ``run_loop``),
``test_line(iteration)``, ``checkpoint(iteration)`` and ``scalars(iteration, **values)``.
No TensorFlow here.
"""
import math
import signal
import sys
import time

import numpy as np

from common.data import cifar, pipeline
from common.run import locks, runlog, runstate
from common.paper.schedule import learning_rate

LOG_EVERY = 100
RESTART_ADVICE = ('lower --base_lr or check the input data, and start a new run without '
                  '--resume (a resume would replay the same steps)')
# What a run whose last checkpoint cannot be restored says (either engine).
CHECKPOINT_ADVICE = ('the run cannot resume from it: put back the checkpoint folder as the run '
                     'left it, or start a new run without --resume')


class NonFiniteLoss(RuntimeError):
    """A logged term, or a weight about to be saved, became NaN or inf."""


def load_dataset(flags, dataset=None):
    """(train_x, train_y, test_x, test_y): ``dataset`` checked, or CIFAR-100 from
    --data_dir; raises cifar.DataError with the problem and the fix."""
    if dataset is None:
        dataset = cifar.load_cifar100(flags.data_dir, **md5_kwargs(flags))
    train_x, train_y, test_x, test_y = dataset
    for name, images in (('train', train_x), ('test', test_x)):
        if np.asarray(images).dtype != np.uint8:
            raise ValueError(f'dataset: the {name} images are {np.asarray(images).dtype}, '
                             f'expected uint8 [n, 32, 32, 3] (pixel values 0..255)')
    return train_x, np.asarray(train_y, np.int64), test_x, np.asarray(test_y, np.int64)


def md5_kwargs(flags):
    """Expected checksums: the official ones unless --data_md5 names others."""
    sums = cifar.parse_md5_flag(getattr(flags, 'data_md5', None))
    kwargs = {'file_md5': {k: sums[k] for k in ('train', 'test') if k in sums}} if sums else {}
    if 'archive' in sums:
        kwargs['archive_md5'] = sums['archive']
    return kwargs


def open_run(flags, run_name):
    """(the run's files, its lock held), or (files, None) while another train.py writes it.

    The lock is held while this process writes the run: a second train.py (a sweep's
    retry, a --resume typed twice) cannot write beside it, and the kernel releases it
    however this process exits."""
    run_dir = flags.log_dir / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    files = runstate.latest_run(run_dir) if flags.resume else runstate.new_run(run_dir)
    return files, locks.acquire(files.lock_file)


def run_with_data_and_lock(flags, run_name, dataset, device_line, run):
    """What every engine does first: say where it trains, load the data, take the run's
    files and lock; then ``run(files, train_x, train_y, test_x, test_y)`` with the lock
    held -> its exit code. Exit code 2, with the message, for bad data; 75
    (runstate.BUSY_EXIT) for a run that another train.py is writing."""
    print(device_line, flush=True)
    try:
        arrays = load_dataset(flags, dataset)
    except cifar.DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    files, held = open_run(flags, run_name)
    if held is None:
        print(f'error: {runstate.busy_message(files)}', file=sys.stderr)
        return runstate.BUSY_EXIT
    with held:
        return run(files, *arrays)


def prepare_run_files(flags, files, run_name, checkpoint_iteration=None, record=None):
    """The run's files at its start -> the iteration it starts at. A resume (from
    ``checkpoint_iteration``, restored by the engine) drops the log lines written after
    that checkpoint; a new run gets its folder for checkpoints, empty logs, its flags
    (with ``record``, see runstate.save_flags)."""
    if flags.resume:
        for path in (files.train_log, files.test_log):
            runstate.truncate_log(path, checkpoint_iteration)
        print(f'resuming run {files.index:02d} at iteration {checkpoint_iteration}', flush=True)
        start = checkpoint_iteration
    else:
        start = 0
        files.checkpoint_dir.mkdir()
        files.train_log.touch()
        files.test_log.touch()
        runstate.save_flags(files, flags, run_name, record)
    print(f'logs: {files.train_log} and {files.test_log.name}', flush=True)
    return start


def report_non_finite(error, files):
    last = files.checkpoint_iteration()
    kept = f'the last good checkpoint is at iteration {last}' if last is not None \
        else 'no checkpoint was written'
    print(f'error: {error}\n{kept}; the logs so far are in {files.train_log.parent}', file=sys.stderr)
    return 1


def check_finite(iteration, values):
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLoss(
            f'non-finite loss at iteration {iteration}: {", ".join(bad)} = '
            f'{", ".join(str(values[b]) for b in bad)}; {RESTART_ADVICE}')


def duration(seconds):
    seconds = int(seconds)
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


class Progress:
    """images/s over the last log interval and the ETA, for stdout."""

    def __init__(self, start_iter, max_iters, batch_size):
        self.max_iters, self.batch_size = max_iters, batch_size
        self.last_iter, self.last_time = start_iter, time.perf_counter()

    def __call__(self, iteration):
        now = time.perf_counter()
        done = iteration - self.last_iter
        if done <= 0:
            return 'starting'
        per_iter = (now - self.last_time) / done
        self.last_iter, self.last_time = iteration, now
        eta = per_iter * (self.max_iters - 1 - iteration)
        return f'{self.batch_size / per_iter:.0f} img/s, ETA {duration(eta)}'


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag the loop checks between iterations,
    so that it can checkpoint and exit cleanly instead of dying mid-step."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def append(path, line):
    with open(path, 'a') as f:
        f.write(line + '\n')


def write_test_line(files, iteration, acc, scalars):
    """A test pass's line: to the test log, TensorBoard and stdout."""
    line = runlog.format_test_line(iteration, acc)
    append(files.test_log, line)
    scalars(iteration, test_acc=acc)
    print(line, flush=True)


def run_loop(flags, train_step, files, start, train_x, train_y, scalars, checkpoint, test_line,
             has_energy=True):
    """Iterations start .. max_iters - 1, then the final test line and checkpoint;
    returns the exit code (128 + signal number when stopped by SIGINT/SIGTERM).

    ``train_step(x, y, lr)`` gives the five logged values, or a function that gives
    them: an engine whose step runs asynchronously (JAX) returns one, and the loop asks
    for an iteration's values only once the next step is under way, so that checking
    and logging them and taking the next batch overlap the device's work. Before a test
    pass, a checkpoint, the last iteration and a stop, the loop first deals with the
    values of the step just taken, so every test line and checkpoint follows the same
    checks as when each step is waited for.

    Between two steps the host only takes a ready batch from the prefetcher,
    checks the four losses and, every LOG_EVERY iterations, writes the log line.
    ``has_energy`` False (the MHE baseline): the release's shorter train line."""
    progress = Progress(start, flags.max_iters, flags.batch_size)
    last = flags.max_iters - 1

    def finish(it, lr, values):
        fit, reg, thom, thomf, acc = values() if callable(values) else values
        check_finite(it, dict(fit=fit, reg=reg, thom=thom, thomf=thomf))
        if it % LOG_EVERY == 0:
            energy = (thom, thomf) if has_energy else (None, None)
            line = runlog.format_train_line(it, fit, reg, acc, *energy)
            append(files.train_log, line)
            scalars(it, fit=fit, reg=reg, thom=thom, thomf=thomf, lr=lr, train_acc=acc)
            print(f'{line}  [{progress(it)}]', flush=True)

    with pipeline.TrainBatchPrefetcher(train_x, train_y, flags.random_seed, flags.batch_size,
                                       start_iter=start) as batches, \
            StopSignals() as stop:
        pending = None           # (iteration, lr, values) of the step before this one
        for it in range(start, flags.max_iters):
            x, y = next(batches)
            lr = learning_rate(it, flags.base_lr, flags.max_iters)
            values = train_step(x, y, lr)
            if pending is not None:
                finish(*pending)             # while this iteration's step runs
            pending = (it, lr, values)
            test_due = it % flags.eval_every == 0 and 0 < it < last   # the last one comes below
            checkpoint_due = (it + 1) % flags.ckpt_every == 0
            if not (test_due or checkpoint_due or it == last or stop.signum is not None):
                continue
            finish(*pending)
            pending = None
            if test_due:
                test_line(it)
            if it == last:
                break            # a signal now: finishing costs only the final test
            if stop.signum is not None:
                checkpoint(it + 1)
                name = signal.Signals(stop.signum).name
                print(f'{name}: checkpoint saved at iteration {it + 1}; continue with the '
                      f'same command and --resume', file=sys.stderr, flush=True)
                return 128 + stop.signum
            if checkpoint_due:
                checkpoint(it + 1)
        test_line(last)
        checkpoint(flags.max_iters)
    return 0
