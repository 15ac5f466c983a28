"""Locks a killed process cannot leave held (common/run/locks.py): a run's lock, which
train.py holds while it writes, and a sweep's, which `sweep run` holds."""
import io
import signal
import subprocess
import sys

import pytest

from common.run import config, locks, runstate
from conftest import ROOT, entry_flags, load_entry_point

HOLD = '''
import sys, time
from common.run import locks
held = locks.acquire(sys.argv[1])
print('held' if held else 'busy', flush=True)
time.sleep(120)
'''


@pytest.fixture
def holder_process():
    """``start(path)``: a process holding the lock at ``path`` (killed at the end)."""
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, '-c', HOLD, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True, env={'PYTHONPATH': str(ROOT)})
        procs.append(proc)
        assert proc.stdout.readline().strip() == 'held'
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_lock_is_held_until_its_process_is_killed(tmp_path, holder_process):
    path = tmp_path / 'x.lock'
    assert not locks.is_held(path)                       # no file: free, and nothing created
    assert not path.exists()
    proc = holder_process(path)
    assert locks.is_held(path) and locks.acquire(path) is None
    assert locks.holder(path).startswith(f'pid {proc.pid} on ')
    assert not locks.wait_until_free(path, timeout=0.3, poll=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert locks.wait_until_free(path, timeout=5)        # the kernel released it
    with locks.acquire(path) as held:
        assert held is not None
    assert not locks.is_held(path)


def test_resume_is_refused_while_another_train_py_writes_the_run(tmp_path, holder_process):
    module = load_entry_point('random_projection')
    flags = entry_flags(module, '--log_dir', str(tmp_path))
    flags.variant = module.VARIANT
    files = runstate.new_run(tmp_path / config.run_name(flags))
    files.checkpoint_dir.mkdir(parents=True)
    files.train_log.touch()
    (files.checkpoint_dir / 'checkpoint').write_text('model_checkpoint_path: "ckpt-40"\n')
    runstate.save_flags(files, flags, config.run_name(flags))
    proc = holder_process(files.lock_file)
    with pytest.raises(config.RunBusy, match=rf'--resume: run 00 in .* is being written by another '
                                             rf'train.py \(pid {proc.pid} on .*\); wait until it ends'):
        config.check_run_folder(entry_flags(module, '--log_dir', str(tmp_path), '--resume'))
    # Its own exit code (not 2, a permanent error): a sweep waits and starts it again.
    with pytest.raises(SystemExit) as exited:
        config.parse('', module.VARIANT, module.DEFAULTS, ['--log_dir', str(tmp_path), '--resume'])
    assert exited.value.code == runstate.BUSY_EXIT == 75
    proc.kill()
    proc.wait()
    config.check_run_folder(entry_flags(module, '--log_dir', str(tmp_path), '--resume'))


def test_a_second_sweep_run_is_refused_while_one_holds_the_sweep_and_not_after_it_was_killed(
        tmp_path, capsys, holder_process):
    from common.sweep import ray_runner, sweepfile
    from common.sweep.progress import Display
    (tmp_path / 's.toml').write_text('name = "s"\nseeds = [1]\n[[run]]\nentry = "mhe"\n')
    sweep = sweepfile.load(tmp_path / 's.toml', log_root=tmp_path / 'logs')
    sweep.folder.mkdir(parents=True)
    proc = holder_process(sweep.folder / ray_runner.DRIVER_LOCK)
    assert ray_runner.driver_alive(sweep.folder)
    assert ray_runner.run_sweep(sweep, display=Display(out=io.StringIO(), tty=False)) == 2
    assert f'another `sweep run` of this sweep is running (pid {proc.pid} on ' in capsys.readouterr().err
    assert [p.name for p in sweep.folder.iterdir()] == [ray_runner.DRIVER_LOCK]    # nothing started
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not ray_runner.driver_alive(sweep.folder)
    with ray_runner.take_driver_lock(sweep.folder) as held:   # what the next `sweep run` takes
        assert held is not None


def test_a_sweep_retry_waits_for_the_train_py_of_an_earlier_attempt_as_long_as_it_runs(
        tmp_path, holder_process, monkeypatch):
    """Never beside a live writer, however long it runs (no give-up time), and saying what
    it waits for: in the run's output and state, and so in `status`."""
    import threading
    import time
    from common.sweep import runstatus, task
    run_dir = tmp_path / 'run'
    files = runstate.new_run(run_dir)
    run_dir.mkdir()
    files.train_log.touch()

    class Spec:
        flags = None
    spec = Spec()
    spec.run_dir = run_dir
    output = run_dir / 'sweep_output.txt'
    task.wait_for_previous_writer(spec, output)          # nobody holds it: at once
    assert not output.exists()
    proc = holder_process(files.lock_file)
    monkeypatch.setattr(task, 'WAIT_POLL_S', 0.02)
    waiter = threading.Thread(target=task.wait_for_previous_writer, args=(spec, output, 2))
    waiter.start()
    time.sleep(1.0)                                       # 50 polls: more than any give-up bound
    assert waiter.is_alive()
    said = f'waiting for another train.py to stop writing run 00 (pid {proc.pid} on '
    assert said in output.read_text()
    monkeypatch.setattr(runstatus, 'disk_state', lambda spec: runstatus.DiskState('new', 0))
    state, detail = runstatus.state_of(spec, driver_alive=True)
    assert state == 'waiting' and detail.startswith(said)
    proc.kill()
    proc.wait()
    waiter.join(timeout=5)
    assert not waiter.is_alive()


FAKE_TRAIN = '''
import pathlib, sys
folder = pathlib.Path(sys.argv[1])
starts = len(list(folder.glob('start_*')))
(folder / f'start_{starts}').touch()
if starts < int(sys.argv[2]):    # refused as train.py is when another one holds the run
    print('error: ' + sys.argv[3], flush=True)
    sys.exit(75)
(folder / 'trained').touch()
'''


def test_a_sweep_start_refused_because_another_train_py_took_the_run_waits_and_goes_on(
        tmp_path, monkeypatch):
    # The race: the run's lock free when the task looked, taken (a user's --resume, say)
    # before its train.py started: exit code 75, not a failure of the run, however often.
    refusals = 5
    from common.sweep import runstatus, task
    run_dir = tmp_path / 'run'
    files = runstate.new_run(run_dir)
    run_dir.mkdir()
    script = tmp_path / 'train.py'
    script.write_text(FAKE_TRAIN)

    class Spec:
        entry, run_id, flags = 'random_projection', 'run', None
    spec = Spec()
    spec.run_dir, spec.script = run_dir, script
    spec.argv = [str(tmp_path), str(refusals), runstate.busy_message(files)]
    monkeypatch.setattr(runstatus, 'disk_state', lambda spec: runstatus.DiskState(
        'done' if (tmp_path / 'trained').exists() else 'new', 0))
    monkeypatch.setattr(task, 'POLL_S', 0.01)
    monkeypatch.setattr(task, 'WAIT_POLL_S', 0.01)
    result = task.run_to_completion(spec, retries=0, gpus_per_run=0, restore_env={})
    assert result['state'] == 'done', result
    assert len(list(tmp_path.glob('start_*'))) == refusals + 1
    assert result['attempts'] == 1    # the refused starts are not attempts: a budget of 0 was enough


def test_a_new_run_racing_for_the_same_log_index_exits_busy(tmp_path, holder_process, capsys):
    """Two train.py starting together take the same new log index: the second finds its
    lock held and exits 75 (runstate.BUSY_EXIT), which a sweep waits on, before writing."""
    import numpy as np
    from common.run import loop
    module = load_entry_point('random_projection')
    flags = entry_flags(module, '--log_dir', str(tmp_path))
    run_dir = tmp_path / config.run_name(flags)
    run_dir.mkdir()
    proc = holder_process(runstate.new_run(run_dir).lock_file)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    ran = []
    code = loop.run_with_data_and_lock(flags, config.run_name(flags), (images, [0, 1], images, [0, 1]), 'device: CPU',
                      lambda *args: ran.append(args) or 0)
    assert code == runstate.BUSY_EXIT and ran == []
    assert f'is being written by another train.py (pid {proc.pid} on ' in capsys.readouterr().err


def test_a_lock_of_a_new_run_without_logs_is_waited_for_too(tmp_path, holder_process):
    """A train.py that took train_01.lock for a new run and has not written its logs yet
    (building its graph) still holds the run folder: a sweep's retry waits for it."""
    from common.sweep import task
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    runstate.new_run(run_dir).train_log.touch()            # run 00, not held
    assert task.held_run_lock(run_dir) is None
    proc = holder_process(run_dir / 'train_01.lock')
    assert task.held_run_lock(run_dir) == run_dir / 'train_01.lock'
    proc.kill()
    proc.wait()
    assert task.held_run_lock(run_dir) is None


def test_a_filesystem_without_locks_is_an_error_not_a_held_lock(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, 'No locks available')
    monkeypatch.setattr(fcntl, 'lockf', no_locks)
    with pytest.raises(OSError, match='does not support POSIX locks'):
        locks.acquire(tmp_path / 'x.lock')
