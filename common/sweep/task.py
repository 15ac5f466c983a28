"""One sweep run, as executed by a Ray worker: the real train.py in a subprocess, until it is done.

The worker starts ``python <entry>/train.py ARGV`` from the repository root (adding
``--resume`` when the run has a checkpoint short of --max_iters), its output appended to
the run folder's sweep_output.txt. Then, by train.py's exit code:

    0                 done
    2                 a bad flag, missing data, ...: a retry cannot fix it; failed, with
                      train.py's message (the other runs go on)
    1 + non-finite    a non-finite loss: a resume would replay it; failed
    130, 143          stopped by SIGINT/SIGTERM after writing its checkpoint (Ctrl-C on
                      the sweep); the next `sweep run` resumes it
    anything else     the process died (SIGKILL, out of memory, a crash): resumed from
                      its last checkpoint with --resume, at most ``retries`` times

A worker that is stopped (Ray cancels the task on Ctrl-C, or the worker exits) sends
train.py SIGTERM and waits for its checkpoint; if the worker itself is killed, the
kernel sends train.py SIGTERM (PR_SET_PDEATHSIG), so no train.py outlives its worker
to write beside a retry. A worker lost with its machine is rerun by Ray (max_retries),
and resumes in the same way from the shared run folder.
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
from common.sweep import runstatus

PERMANENT_EXIT = 2
STOPPED_EXITS = (128 + signal.SIGINT, 128 + signal.SIGTERM)
# train.py's message for a non-finite loss or weights (common.training.RESTART_ADVICE).
NON_FINITE = 'start a new run without --resume'
STOP_WAIT_S = 600
POLL_S = 0.2
_ERROR_LINE = re.compile(r'(^|: )error: ')


def _die_with_parent():
    """In the child before exec: SIGTERM when the worker dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_env(restore_env, cuda_visible_devices):
    """The worker's environment, with the variables Ray (or the sweep's loopback guard)
    changed put back as the user had them, and the GPU(s) Ray gave this run."""
    env = dict(os.environ)
    for key, value in restore_env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env['CUDA_VISIBLE_DEVICES'] = cuda_visible_devices
    env.setdefault('PYTHONUNBUFFERED', '1')
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


def run_once(spec, argv, env, attempt, output_path):
    """One train.py process; returns (exit code, output offset where it began)."""
    shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} " + shlex.join(
        ['python', f'{spec.entry}/train.py', *argv])
    with open(output_path, 'a') as out:
        out.write(f'\n### {time.strftime("%Y-%m-%d %H:%M:%S")} attempt {attempt} on '
                  f'{runstatus.this_host()}: {shown}\n')
        out.flush()
        start = out.tell()
        proc = subprocess.Popen([sys.executable, str(spec.script), *argv], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        runstatus.write_state(spec.run_dir, state='running', attempt=attempt, pid=proc.pid,
                              host=runstatus.this_host(), command=shown)
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
                                  message=f'stopped by the sweep (exit code {proc.returncode})')
            raise


def run_to_completion(spec, retries, gpus_per_run, restore_env):
    """Run (or resume) one run until done, failed or stopped -> dict(state, message, attempts)."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    output_path = spec.run_dir / runstatus.OUTPUT_FILE
    env = child_env(restore_env, visible_gpus(gpus_per_run))
    # Rerun by Ray after its worker or machine was lost mid-run: keep counting its attempts.
    record = runstatus.read_state(spec.run_dir)
    attempt = record.get('attempt', 0) if record.get('state') == 'running' else 0
    while True:
        disk = runstatus.disk_state(spec)
        if disk.kind == 'done':
            return _finish(spec, 'done', f'{disk.iteration} iterations', attempt)
        argv = spec.argv + (['--resume'] if disk.kind == 'unfinished' else [])
        attempt += 1
        code, start = run_once(spec, argv, env, attempt, output_path)
        if code == 0:
            if runstatus.disk_state(spec).kind != 'done':
                return _finish(spec, 'failed', 'train.py exited 0 but its last checkpoint is not '
                               f'at --max_iters {spec.flags.max_iters}', attempt)
            continue
        message = failure_message(output_path, start)
        if code in STOPPED_EXITS:
            return _finish(spec, 'stopped', f'exit code {code}: {message}', attempt)
        if code == PERMANENT_EXIT or (code == 1 and NON_FINITE in message):
            return _finish(spec, 'failed', f'exit code {code}: {message}', attempt)
        if attempt > retries:
            return _finish(spec, 'failed', f'died {attempt} times (retries = {retries}); last exit '
                           f'code {code}: {message}', attempt)


def _finish(spec, state, message, attempts):
    runstatus.write_state(spec.run_dir, state=state, message=message, attempts=attempts)
    return dict(run_id=spec.run_id, state=state, message=message, attempts=attempts)
