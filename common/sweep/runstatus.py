"""Where a sweep's run stands, read from its folder (a shared filesystem on a cluster).

Beside train.py's own files (logs, checkpoints_NN/, tensorboard_NN/, flags_NN.json)
the sweep keeps in each run folder:

    sweep_state.json    the run's last known state: queued, running (with host, Ray node,
                        pid, attempt), done, failed (with train.py's message), stopped;
                        and, once an attempt died, why (last_failure) and the iteration
                        the next attempt resumed from (resumed_from)
    sweep_output.txt    train.py's stdout and stderr, every attempt, each after a line
                        with the command

A run is *done* when its newest log index was started with the run's flags and its
checkpoint is at --max_iters; *unfinished* when it has a checkpoint before that
(the sweep resumes it); else it starts a new log index. No TensorFlow here.
"""
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common.run import runstate

STATE_FILE = 'sweep_state.json'
OUTPUT_FILE = 'sweep_output.txt'
# train.py's stdout line every 100 iterations: "====iter_N: ...  [123 img/s, ETA 0h01m02s]"
_PROGRESS = re.compile(r'^====iter_(\d+):.*\[(?:(\d+) img/s, ETA (\S+)|starting)\]\s*$')


@dataclass
class DiskState:
    kind: str            # done | unfinished | new (nothing to resume: start a new log index)
    iteration: int       # the newest checkpoint's iteration (0 when none)
    index: int = None    # the log index it is in


def disk_state(spec):
    """What the files say of a run (see the module docstring)."""
    files = runstate.latest_run(spec.run_dir)
    if files is None or not files.flags_file.is_file() or runstate.changed_flags(files, spec.flags):
        return DiskState('new', 0)
    done = files.checkpoint_iteration()
    if done is None:
        return DiskState('new', 0)
    kind = 'done' if done >= spec.flags.max_iters else 'unfinished'
    return DiskState(kind, done, files.index)


def read_state(run_dir):
    """The sweep's record of a run (a dict, empty when there is none or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_state(run_dir, **record):
    """Replace the record atomically (a reader never sees half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record.setdefault('time', time.time())
    fd, tmp = tempfile.mkstemp(prefix=f'.{STATE_FILE}.', dir=run_dir)
    with os.fdopen(fd, 'w') as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write('\n')
    os.replace(tmp, run_dir / STATE_FILE)


def mark_queued(run_dir):
    """Queued by a new `sweep run`. A record still 'running', 'retrying' or 'waiting' (its attempt was
    lost with the worker, node or driver) is kept as 'interrupted', so the task knows; a
    record already queued by a `sweep run` that died too keeps what it kept."""
    record = read_state(run_dir)
    if record.get('state') in ('running', 'retrying', 'waiting'):
        write_state(run_dir, state='queued', interrupted=record)
    else:
        write_state(run_dir, state='queued', **{k: record[k] for k in
                                                ('interrupted', 'last_failure', 'resumed_from')
                                                if k in record})


def attempts_note(record):
    """'  [attempts: 2; last failure: ...; resumed from iteration 40]', or '' for a run
    whose attempts never died."""
    record = record.get('interrupted', record) if record.get('state') == 'queued' else record
    if not record.get('last_failure'):
        return ''
    note = f"attempts: {record.get('attempts', record.get('attempt', '?'))}; " \
           f"last failure: {record['last_failure']}"
    if 'resumed_from' in record:
        note += f"; resumed from iteration {record['resumed_from']}"
    return f'  [{note}]'


def this_host():
    return socket.gethostname()


def progress(run_dir):
    """(iteration, ETA text) of a running run from the last progress line of its output,
    or (None, None)."""
    path = Path(run_dir) / OUTPUT_FILE
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return None, None
    for line in reversed(tail):
        if line.startswith('### '):      # the current attempt's header: nothing of it yet
            break
        m = _PROGRESS.match(line.strip())
        if m:
            return int(m.group(1)), m.group(3)
    return None, None


def state_of(spec, driver_alive=False):
    """(state, detail) for `status` and the progress display:
    done | running | waiting | failed | stopped | unfinished | pending."""
    disk = disk_state(spec)
    if disk.kind == 'done':
        return 'done', f'{disk.iteration} iterations (log index {disk.index:02d})'
    record = read_state(spec.run_dir)
    state = record.get('state')
    if state == 'running' and driver_alive:
        it, eta = progress(spec.run_dir)
        where = f"on {record.get('host', '?')} (attempt {record.get('attempt', 1)})"
        if it is None:
            return 'running', f'starting {where}'
        return 'running', f'iteration {it}/{spec.flags.max_iters}, ETA {eta or "?"} {where}'
    if state == 'waiting' and driver_alive:
        return 'waiting', record.get('message', '')
    if state == 'failed':
        return 'failed', record.get('message', '')
    if disk.kind == 'unfinished':
        what = 'stopped' if state == 'stopped' else 'unfinished'
        return what, f'checkpoint at iteration {disk.iteration}/{spec.flags.max_iters}; `sweep run` resumes it'
    files = runstate.latest_run(spec.run_dir)
    changed = runstate.changed_flags(files, spec.flags) if files is not None and files.flags_file.is_file() else []
    if changed:   # most often: status given other options than the run had
        made = ' '.join(f'--{name} {then}' for name, _, then in changed)
        return 'pending', (f'its folder holds a run made with {made}; give the options the `run` had '
                           f'to see it, or `sweep run` starts a new one')
    return 'pending', ''
