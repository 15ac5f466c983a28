"""The files of one run inside its configuration folder, and what a resume needs.

A run is one log index NN (docs/protocol.md section 6) and owns, in the configuration folder:

    log_train_NN.txt, log_test_NN.txt   the logs
    checkpoints_NN/                     the last two checkpoints (tf.train.Saver)
    tensorboard_NN/                     event files
    flags_NN.json                       the flags it was started with
    train_NN.lock                       held by the train.py writing the run (common.run.locks),
                                        with its host and pid

A checkpoint at iteration k holds the state after iterations 0 .. k-1, whose
log lines are all written; k == max_iters means the run finished. Resuming
from k drops any log line of an iteration >= k (written after the checkpoint,
before the run died) and a last line cut short, then appends.

No TensorFlow here: the flag checks use it before TensorFlow starts.
"""
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.run import locks, runlog

# Flags that change what a run computes; a resume must not change them.
TRAINING_FLAGS = ('variant', 'base_lr', 'batch_size', 'random_seed', 'pd', 'pn', 'pnd', 'iters',
                  'max_iters', 'eval_every', 'width', 'model_name', 'power_s', 'bn_zero_debias',
                  'lookahead_decay', 'engine')
OFFICIAL_DATA = 'official CIFAR-100'   # flags_NN.json's data md5 record without --data_md5
_ITER = re.compile(r'^(?:====|\+\+\+\+)iter_(\d+):')


@dataclass
class RunFiles:
    run_dir: Path
    index: int

    @property
    def train_log(self):
        return runlog.log_paths(self.run_dir, self.index)[0]

    @property
    def test_log(self):
        return runlog.log_paths(self.run_dir, self.index)[1]

    @property
    def checkpoint_dir(self):
        return self.run_dir / f'checkpoints_{self.index:02d}'

    @property
    def tensorboard_dir(self):
        return self.run_dir / f'tensorboard_{self.index:02d}'

    @property
    def flags_file(self):
        return self.run_dir / f'flags_{self.index:02d}.json'

    @property
    def lock_file(self):
        return self.run_dir / f'train_{self.index:02d}.lock'

    def checkpoint_iteration(self):
        """The iteration of the newest checkpoint, or None (read from TF's state file)."""
        state = self.checkpoint_dir / 'checkpoint'
        if not state.is_file():
            return None
        match = re.search(r'model_checkpoint_path: "[^"]*-(\d+)"', state.read_text())
        return int(match.group(1)) if match else None


def new_run(run_dir):
    return RunFiles(Path(run_dir), runlog.next_log_index(run_dir))


def run_locks(run_dir):
    """The run locks (``RunFiles.lock_file``) in a configuration folder, newest index first:
    those of runs with logs and any a train.py took for a new run before writing them."""
    return sorted(Path(run_dir).glob('train_*.lock'), reverse=True)


def latest_run(run_dir):
    """The newest run of a configuration folder, or None."""
    if not Path(run_dir).is_dir():
        return None
    index = runlog.latest_log_index(run_dir)
    return None if index is None else RunFiles(Path(run_dir), index)


BUSY = 'is being written by another train.py'
# train.py's exit code when another train.py holds the run (EX_TEMPFAIL of sysexits.h):
# not a failure of the run, so a sweep waits for that one to end and starts again.
BUSY_EXIT = 75


def busy_message(files):
    """Why a run cannot be written now: another train.py holds its lock."""
    return (f'run {files.index:02d} in {files.run_dir} {BUSY} '
            f'({locks.holder(files.lock_file)}); wait until it ends, or stop it, then run again')


def check_writable(folder):
    """Raise OSError unless ``folder`` exists or can be created, and files can be written there.

    Creates nothing that stays: the probe file goes into the nearest existing folder."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OSError(f'{existing} is a file, not a folder')
    fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=existing)
    os.close(fd)
    os.remove(probe)


def save_flags(files, flags, configuration=None, record=None):
    """The training flags, and the configuration folder's name (which common.compare.authors reads);
    ``record``: more for the record (not compared on resume), such as the Keras backend."""
    values = {k: v for k, v in vars(flags).items() if k in TRAINING_FLAGS}
    values.update(record or {})
    # What it trained on, for the record only (not a training flag: a resume may
    # find the same files elsewhere).
    if getattr(flags, 'data_dir', None) is not None:
        values['data'] = {'dir': str(Path(flags.data_dir).absolute()),
                          'md5': getattr(flags, 'data_md5', None) or OFFICIAL_DATA}
    if configuration is not None:
        values['configuration'] = configuration
    files.flags_file.write_text(json.dumps(values, indent=1, sort_keys=True) + '\n')


def recorded(files, key):
    """The value ``key`` has in the run's flags file (None where it has none)."""
    if not files.flags_file.is_file():
        return None
    return json.loads(files.flags_file.read_text()).get(key)


def changed_flags(files, flags):
    """The training flags whose value differs from the run's: [(name, now, then)]."""
    if not files.flags_file.is_file():
        return []
    saved = json.loads(files.flags_file.read_text())
    # Runs started before --bn_zero_debias existed always debiased their BN averages.
    saved.setdefault('bn_zero_debias', True)
    # AP runs from before --lookahead_decay existed had P's decay in the look-ahead.
    saved.setdefault('lookahead_decay', True)
    # Runs from before --engine existed are the TF1 graph's (its checkpoints).
    saved.setdefault('engine', 'tf1')
    changed = [(k, getattr(flags, k), v) for k, v in saved.items()
               if hasattr(flags, k) and getattr(flags, k) != v]
    # A Keras run's backend is on record, not a flag; --keras_backend, where given, must match it.
    backend = getattr(flags, 'keras_backend', None)
    if backend is not None and saved.get('backend') not in (None, backend):
        changed.append(('keras_backend', backend, saved['backend']))
    return changed


def truncate_log(path, iteration):
    """Keep the whole lines of iterations < ``iteration``; atomic rewrite."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        match = _ITER.match(line)
        if line.endswith('\n') and match and int(match.group(1)) < iteration:
            kept.append(line)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    with os.fdopen(fd, 'w') as f:
        f.writelines(kept)
    os.replace(tmp, path)
