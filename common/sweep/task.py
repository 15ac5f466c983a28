"""One sweep run, as executed by a Ray worker: the real train.py in a subprocess, until it is done.

The worker starts ``python <entry>/train.py ARGV`` from the repository root (adding
``--resume`` when the run has a checkpoint short of --max_iters), its output appended to
the run folder's sweep_output.txt. Then, by train.py's exit code:

    0                 done
    2                 a bad flag, missing data, ...: a retry cannot fix it; failed, with
                      train.py's message (the other runs go on)
    75                another train.py took the run's lock after the wait below (a user's
                      --resume, say): not an attempt; wait for it as below, then start again
    1 + non-finite    a non-finite loss: a resume would replay it; failed
    130, 143          stopped by SIGINT/SIGTERM after writing its checkpoint (Ctrl-C on
                      the sweep); the next `sweep run` resumes it
    anything else     the process died (SIGKILL, out of memory, a crash): resumed from
                      its last checkpoint with --resume, at most ``retries`` times

A worker that is stopped (Ray cancels the task on Ctrl-C, or the worker exits) sends
train.py SIGTERM and waits for its checkpoint. If the worker itself is killed (its node
lost, the sweep's driver killed), Ray ends train.py with it, or else the kernel sends
train.py SIGTERM (PR_SET_PDEATHSIG) and it checkpoints and exits. A task Ray reruns
(max_retries), on any node, or a new `sweep run` starts, first waits
until no train.py holds the run's lock (common.run.locks: a train.py still checkpointing
after its worker died, on this machine or another, or one started by hand), for as long
as that one runs, so that it never writes beside one (the run's state says what it waits
for); then it resumes from the shared run folder. The kernel releases the lock however
its holder ends, so the wait ends with it.

The run's sweep_state.json records each attempt (host, Ray node, pid, the command), the
iteration it resumed from and why the attempt before it ended, for the sweep's display
and `status`.
"""
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from common import REPO_ROOT
from common.run import locks, runstate
from common.sweep import runstatus

PERMANENT_EXIT = 2
STOPPED_EXITS = (128 + signal.SIGINT, 128 + signal.SIGTERM)
# train.py's message for a non-finite loss or weights (common.run.loop.RESTART_ADVICE).
NON_FINITE = 'start a new run without --resume'
STOP_WAIT_S = 600
POLL_S = 0.2
WAIT_POLL_S = 1.0   # how often a run waiting for another train.py looks at its lock
_ERROR_LINE = re.compile(r'(^|: )error: ')


def _die_with_parent():
    """In the child before exec: SIGTERM when the worker dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# Where runs share a GPU (--gpus-per-run below 1), each takes GPU memory as it needs it:
# JAX would otherwise take 75% of the GPU at its first operation and TensorFlow (the
# Keras engine's backend; the TF1 engine's session already grows) all of it, and the
# second run on the GPU would fail for want of memory. A value the user set stands.
SHARED_GPU_ENV = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false', 'TF_FORCE_GPU_ALLOW_GROWTH': 'true'}


def child_env(restore_env, cuda_visible_devices, shares_gpu=False):
    """The worker's environment, with the variables Ray (or the sweep's loopback guard)
    changed put back as the user had them, and the GPU(s) Ray gave this run;
    ``shares_gpu``: memory taken as needed (SHARED_GPU_ENV)."""
    env = dict(os.environ)
    for key, value in restore_env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env['CUDA_VISIBLE_DEVICES'] = cuda_visible_devices
    env.setdefault('PYTHONUNBUFFERED', '1')
    if shares_gpu:
        for key, value in SHARED_GPU_ENV.items():
            env.setdefault(key, value)
    return env


def visible_gpus(gpus_per_run):
    """CUDA_VISIBLE_DEVICES for this run: the GPU(s) Ray assigned, or '' (the CPU)."""
    if not gpus_per_run:
        return ''
    assigned = os.environ.get('CUDA_VISIBLE_DEVICES')
    if assigned:
        return assigned
    import ray
    return ','.join(str(i) for i in ray.get_gpu_ids())


def failure_message(output_path, start_offset):
    """train.py's error lines of the attempt that began at ``start_offset`` (else its last lines)."""
    try:
        with open(output_path, 'rb') as f:
            f.seek(start_offset)
            lines = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return ''
    errors = [line.strip() for line in lines if _ERROR_LINE.search(line)]
    return ' | '.join(errors[-3:]) if errors else ' | '.join(line.strip() for line in lines[-5:])


def this_node():
    """The Ray node this task runs on (its id, shortened), or '' outside Ray."""
    try:
        import ray
        return ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else ''
    except Exception:   # noqa: BLE001 (a display detail; never fail a run for it)
        return ''


def exit_reason(code):
    """'exit code 1', or 'killed by SIGKILL' for a negative code."""
    if code < 0:
        try:
            return f'killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'killed by signal {-code}'
    return f'exit code {code}'


def run_once(spec, argv, env, attempt, output_path, history):
    """One train.py process; returns (exit code, output offset where it began).
    ``history``: what the record says of the attempts before (resumed_from, last_failure)."""
    shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} " + shlex.join(
        ['python', f'{spec.entry}/train.py', *argv])
    where = dict(host=runstatus.this_host(), node=this_node())
    with open(output_path, 'a') as out:
        out.write(f'\n### {time.strftime("%Y-%m-%d %H:%M:%S")} attempt {attempt} on '
                  f'{where["host"]}: {shown}\n')
        out.flush()
        start = out.tell()
        proc = subprocess.Popen([sys.executable, str(spec.script), *argv], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        runstatus.write_state(spec.run_dir, state='running', attempt=attempt, pid=proc.pid,
                              command=shown, **where, **history)
        try:
            # Polled, not proc.wait(): Ray's cancel raises KeyboardInterrupt only between bytecodes.
            while proc.poll() is None:
                time.sleep(POLL_S)
            return proc.returncode, start
        except BaseException:
            # Cancelled (Ctrl-C on the sweep) or the worker is exiting: let train.py checkpoint.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            done = runstatus.disk_state(spec).kind == 'done'
            runstatus.write_state(spec.run_dir, state='done' if done else 'stopped', attempt=attempt,
                                  message=f'stopped by the sweep (exit code {proc.returncode})',
                                  **history)
            raise


def held_run_lock(run_dir):
    """A run lock (train_NN.lock) of the folder that a live train.py holds, or None: the
    newest run's, or one a train.py took for a new run before writing its logs."""
    return next((path for path in runstate.run_locks(run_dir) if locks.is_held(path)), None)


def wait_for_previous_writer(spec, output_path, attempt=0, history=()):
    """Until no train.py holds a lock of the run folder (an earlier attempt still
    checkpointing after its worker died, or a train.py started by hand): however long
    that one runs, never beside it. While it waits, the run's state is 'waiting', naming
    the holder (for `status` and the display), and its output says so; stopped while
    waiting (Ctrl-C on the sweep), the state says 'stopped'."""
    held = held_run_lock(spec.run_dir)
    if held is None:
        return
    message = (f'waiting for another train.py to stop writing run {held.stem.split("_")[-1]} '
               f'({locks.holder(held)}): an earlier attempt still checkpointing, or a run started by hand')
    with open(output_path, 'a') as out:
        out.write(f'### {message}\n')
    runstatus.write_state(spec.run_dir, state='waiting', attempt=attempt, message=message, **dict(history))
    try:
        while held is not None:
            locks.wait_until_free(held, WAIT_POLL_S * 10, poll=WAIT_POLL_S)
            held = held_run_lock(spec.run_dir)
    except BaseException:
        runstatus.write_state(spec.run_dir, state='stopped', attempt=attempt,
                              message='stopped by the sweep while waiting for another train.py', **dict(history))
        raise


def run_to_completion(spec, retries, gpus_per_run, restore_env):
    """Run (or resume) one run until done, failed or stopped -> dict(state, message, attempts)."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    output_path = spec.run_dir / runstatus.OUTPUT_FILE
    env = child_env(restore_env, visible_gpus(gpus_per_run), shares_gpu=0 < gpus_per_run < 1)
    record = runstatus.read_state(spec.run_dir)
    # Still 'running': Ray reruns the task, its worker lost (with its node, say) while
    # train.py ran; 'interrupted': a new `sweep run`, the one before having died
    # (SIGKILL) with the run under way. Either way the attempts go on counting.
    lost, record = ('its sweep driver died', record['interrupted']) if 'interrupted' in record \
        else ('its Ray worker or node was lost', record)
    attempt, history = 0, {}
    if record.get('state') == 'running':
        attempt = record.get('attempt', 0)
        on = record.get('host', '?') + (f" (node {record['node']})" if record.get('node') else '')
        history['last_failure'] = f'attempt {attempt} on {on}: {lost}'
    elif record.get('state') in ('retrying', 'waiting'):   # lost between two attempts
        attempt = record.get('attempt', 0)
        history['last_failure'] = record.get('last_failure', '')
    elif record.get('last_failure'):
        history['last_failure'] = record['last_failure']
    while True:
        wait_for_previous_writer(spec, output_path, attempt, history)
        disk = runstatus.disk_state(spec)
        if disk.kind == 'done':
            return _finish(spec, 'done', f'{disk.iteration} iterations', attempt, history)
        resuming = disk.kind == 'unfinished'
        argv = spec.argv + (['--resume'] if resuming else [])
        if attempt:
            history['resumed_from'] = disk.iteration if resuming else 0
        attempt += 1
        code, start = run_once(spec, argv, env, attempt, output_path, history)
        if code == 0:
            if runstatus.disk_state(spec).kind != 'done':
                return _finish(spec, 'failed', 'train.py exited 0 but its last checkpoint is not '
                               f'at --max_iters {spec.flags.max_iters}', attempt, history)
            continue
        if code == runstate.BUSY_EXIT:
            # Another train.py took the lock between the wait and this start: not a
            # failure of this run, nor an attempt; wait for that one to exit, then go on
            # (a pause first, in case it held the lock only for an instant).
            attempt -= 1
            time.sleep(WAIT_POLL_S)
            continue
        message = failure_message(output_path, start)
        if code in STOPPED_EXITS:
            return _finish(spec, 'stopped', f'exit code {code}: {message}', attempt, history)
        if code == PERMANENT_EXIT or (code == 1 and NON_FINITE in message):
            return _finish(spec, 'failed', f'exit code {code}: {message}', attempt, history)
        history['last_failure'] = f'attempt {attempt} on {runstatus.this_host()}: {exit_reason(code)}'
        # On disk at once: a worker lost before the next attempt starts keeps the real reason.
        runstatus.write_state(spec.run_dir, state='retrying', attempt=attempt, **history)
        if attempt > retries:
            return _finish(spec, 'failed', f'died {attempt} times (retries = {retries}); last '
                           f'{exit_reason(code)}: {message}', attempt, history)


def _finish(spec, state, message, attempts, history):
    runstatus.write_state(spec.run_dir, state=state, message=message, attempts=attempts, **history)
    return dict(run_id=spec.run_id, state=state, message=message, attempts=attempts, **history)
