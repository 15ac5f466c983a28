"""A day-long run survives (issue 5): SIGKILL then --resume, SIGTERM, a
non-finite loss, and bad flags, each in a real subprocess on the fixture."""
import signal
import subprocess
import sys
import time

import pytest

from common import runlog
from conftest import ROOT, run_train, subprocess_env

ITERS = ['--max_iters', '400', '--eval_every', '100', '--ckpt_every', '50']
QUICK = ['--width', '0.125', '--batch_size', '16', '--base_lr', '0.003']
# variant -> (its extra flags, its configuration folder)
RESUMED = {'random_projection': ([], 'pd40_pn20'),
           'adversarial_projection': (['--pd', '5', '--iters', '3'], 'pd5_pn1_iter3')}


def log_lines(run_dir, index=0):
    return ((run_dir / f'log_train_{index:02d}.txt').read_text().splitlines(),
            (run_dir / f'log_test_{index:02d}.txt').read_text().splitlines())


@pytest.fixture(scope='module')
def straight_runs(cifar_fixture, tmp_path_factory):
    """Run A of each variant: 400 iterations without interruption (made once, when asked)."""
    runs = {}

    def straight(variant='random_projection'):
        if variant not in runs:
            extra, config = RESUMED[variant]
            log_dir = tmp_path_factory.mktemp('straight')
            out = run_train(variant, *cifar_fixture, *QUICK, *extra, *ITERS, '--log_dir', str(log_dir))
            assert out.returncode == 0, out.stderr[-3000:]
            train, test = log_lines(log_dir / config)
            assert [line.split(':')[0] for line in train] == [f'====iter_{i}' for i in (0, 100, 200, 300)]
            assert [line.split(':')[0] for line in test] == [f'++++iter_{i}' for i in (100, 200, 300, 399)]
            runs[variant] = (train, test)
        return runs[variant]
    return straight


@pytest.fixture
def straight_run(straight_runs):
    return straight_runs('random_projection')


def start_and_interrupt(args, log_dir, sig, after_line, variant='random_projection'):
    """Start train.py, wait for ``after_line`` in its train log, send ``sig``."""
    env_args = [sys.executable, 'train.py', *args, '--log_dir', str(log_dir)]
    proc = subprocess.Popen(env_args, cwd=ROOT / variant, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = log_dir / RESUMED[variant][1] / 'log_train_00.txt'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and after_line in log.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be interrupted'
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize('variant', sorted(RESUMED))
def test_sigkill_then_resume_gives_the_same_logs(straight_runs, cifar_fixture, tmp_path, variant):
    # RP: the draws are replayed; AdvP: its P matrices come back from the checkpoint.
    extra, config = RESUMED[variant]
    args = [*cifar_fixture, *QUICK, *extra, *ITERS]
    code, _, _ = start_and_interrupt(args, tmp_path, signal.SIGKILL, '====iter_200', variant)
    assert code == -signal.SIGKILL
    run_dir = tmp_path / config
    killed_train, _ = log_lines(run_dir)
    assert killed_train[-1].startswith('====iter_200')
    resumed = run_train(variant, *args, '--log_dir', str(tmp_path), '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resuming run 00 at iteration' in resumed.stdout
    # Same files appended, every line once, equal to the uninterrupted run's.
    assert sorted(p.name for p in run_dir.glob('log_*')) == ['log_test_00.txt', 'log_train_00.txt']
    assert log_lines(run_dir) == straight_runs(variant)
    # Only the last two checkpoints are kept, the final one among them.
    kept = sorted(p.name for p in (run_dir / 'checkpoints_00').glob('*.index'))
    assert kept == ['ckpt-350.index', 'ckpt-400.index']


def test_sigterm_checkpoints_and_exits_cleanly_then_resumes(straight_run, cifar_fixture, tmp_path):
    args = [*cifar_fixture, *QUICK, *ITERS]
    code, stdout, stderr = start_and_interrupt(args, tmp_path, signal.SIGTERM, '====iter_100')
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert 'Traceback' not in stderr
    assert 'SIGTERM: checkpoint saved at iteration' in stderr and '--resume' in stderr
    run_dir = tmp_path / 'pd40_pn20'
    stopped_at = int(stderr.split('checkpoint saved at iteration ')[1].split(';')[0])
    assert (run_dir / 'checkpoints_00' / f'ckpt-{stopped_at}.index').exists()
    resumed = run_train('random_projection', *args, '--log_dir', str(tmp_path), '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'resuming run 00 at iteration {stopped_at}' in resumed.stdout
    assert log_lines(run_dir) == straight_run
    assert len(list((run_dir / 'tensorboard_00').glob('events.out.tfevents.*'))) == 2


def test_tensorboard_events_hold_the_logged_scalars(straight_run, cifar_fixture, tmp_path):
    out = run_train('random_projection', *cifar_fixture, *QUICK, '--max_iters', '101',
                    '--eval_every', '100', '--log_dir', str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    import tensorflow as tf
    tags = {}
    for path in (tmp_path / 'pd40_pn20' / 'tensorboard_00').glob('events.out.tfevents.*'):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, round(value.simple_value, 4)))
    assert set(tags) == {'fit', 'reg', 'thom', 'thomf', 'lr', 'train_acc', 'test_acc'}
    # Iteration 100 is also the last: one test line for it, not two.
    assert [step for step, _ in tags['fit']] == [0, 100] and [s for s, _ in tags['test_acc']] == [100]
    train, test = log_lines(tmp_path / 'pd40_pn20')
    assert f"fit={tags['fit'][1][1]:.4f}" in train[1]
    assert tags['lr'][0][1] == 0.003


def finite_checkpoint(prefix):
    import numpy as np
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(prefix))
    values = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map()]
    return all(np.all(np.isfinite(v)) for v in values if np.issubdtype(np.asarray(v).dtype, np.floating))


@pytest.mark.parametrize('ckpt_every,bad', [('2500', 'loss'), ('1', 'weights')])
def test_non_finite_values_stop_with_a_clear_message(cifar_fixture, tmp_path, ckpt_every, bad):
    # An absurd lr: after the first update the weights are so large that reg
    # overflows. With a checkpoint due right after it, that is caught before the
    # weights are saved; else the next loss is. Either way the checkpoint named
    # as good is the finite one of iteration 0.
    out = run_train('random_projection', *cifar_fixture, '--width', '0.125', '--batch_size', '16',
                    '--base_lr', '1e30', '--max_iters', '300', '--ckpt_every', ckpt_every,
                    '--log_dir', str(tmp_path))
    assert out.returncode == 1
    assert 'Traceback' not in out.stderr
    if bad == 'loss':
        assert 'error: non-finite loss at iteration 1: ' in out.stderr, out.stderr[-3000:]
        message = out.stderr.split('error: non-finite loss')[1]
        assert any(f'{term} = ' in message.split(';')[0] for term in ('fit', 'reg', 'thom', 'thomf'))
    else:
        assert 'error: the update of iteration 0 left weights that cannot be saved (' in out.stderr, \
            out.stderr[-3000:]
        assert 'reg = inf' in out.stderr
    assert 'lower --base_lr' in out.stderr and 'start a new run' in out.stderr
    assert 'the last good checkpoint is at iteration 0' in out.stderr
    run_dir = tmp_path / 'pd40_pn20'
    assert finite_checkpoint(run_dir / 'checkpoints_00' / 'ckpt-0')
    assert not (run_dir / 'checkpoints_00' / 'ckpt-1.index').exists()
    run = runlog.read_run(run_dir)        # the logs so far parse
    assert run.train[0]['iter'] == 0


def run_in_process(cifar_fixture, log_dir, signal_at, max_iters=30):
    """train() in this process, sending itself SIGTERM during iteration ``signal_at``."""
    import os
    from common import config, training
    from conftest import entry_flags, load_entry_point
    module = load_entry_point('random_projection')
    flags = entry_flags(module, *cifar_fixture, *QUICK, '--pn', '2', '--max_iters', str(max_iters),
                        '--eval_every', '10', '--log_dir', str(log_dir))
    schedule = training.learning_rate

    def learning_rate(iteration, *args):
        if iteration == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return schedule(iteration, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, 'learning_rate', learning_rate)
        return training.train(flags, config.run_name(flags), module.comhe_term(flags))


def test_sigterm_in_the_last_iteration_still_finishes_the_run(cifar_fixture, tmp_path):
    code = run_in_process(cifar_fixture, tmp_path, signal_at=29)
    assert code == 0
    run_dir = tmp_path / 'pd40_pn2'
    _, test = log_lines(run_dir)
    assert [line.split(':')[0] for line in test] == ['++++iter_10', '++++iter_20', '++++iter_29']
    assert (run_dir / 'checkpoints_00' / 'ckpt-30.index').exists()
    code = run_in_process(cifar_fixture, tmp_path / 'early', signal_at=12)
    assert code == 128 + signal.SIGTERM
    assert (tmp_path / 'early' / 'pd40_pn2' / 'checkpoints_00' / 'ckpt-13.index').exists()


BAD_FLAGS = [
    (['--pd', '0'], '--pd must be an integer >= 1'),
    (['--pn', '0'], '--pn must be an integer >= 1'),
    (['--batch_size', '0'], '--batch_size must be an integer >= 1'),
    (['--max_iters', '0'], '--max_iters must be an integer >= 1'),
    (['--pnd', '65'], '--pnd 65 gives no projection for a layer of 64 neurons'),
    (['--resume'], '--resume: nothing to resume in'),
    (['--data_md5', 'garbage'], "--data_md5: 'garbage' is not KEY=MD5"),
    (['--data_md5', 'trian=16019d7e3df5f24257cddd939b257f8d'], "--data_md5: 'trian="),
]


@pytest.mark.parametrize('argv,message', BAD_FLAGS)
def test_bad_flags_fail_up_front(argv, message, tmp_path):
    out = run_train('random_projection', *argv, '--log_dir', str(tmp_path / 'logs'))
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert not (tmp_path / 'logs').exists()


def test_bad_iters_flag(tmp_path):
    out = run_train('angle_projection', '--iters', '0', '--log_dir', str(tmp_path / 'logs'))
    assert out.returncode == 2 and '--iters must be an integer >= 1' in out.stderr
    assert not (tmp_path / 'logs').exists()


def test_unwritable_log_folder_fails_up_front(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    out = run_train('random_projection', '--log_dir', str(blocker / 'logs'))
    assert out.returncode == 2
    assert '--log_dir' in out.stderr and 'is a file, not a folder' in out.stderr
    assert blocker.read_text() == 'not a folder'


def test_resume_refuses_changed_or_finished_runs(straight_run, cifar_fixture, tmp_path):
    args = [*cifar_fixture, *QUICK, '--eval_every', '100', '--log_dir', str(tmp_path)]
    done = run_train('random_projection', *args, '--max_iters', '3')
    assert done.returncode == 0, done.stderr[-3000:]
    finished = run_train('random_projection', *args, '--max_iters', '3', '--resume')
    assert finished.returncode == 2 and 'is finished (3 iterations)' in finished.stderr
    changed = run_train('random_projection', *args, '--max_iters', '5', '--resume')
    assert changed.returncode == 2 and '--max_iters is 5, the run used 3' in changed.stderr
