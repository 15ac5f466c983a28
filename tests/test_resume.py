"""A day-long run survives (issue 5): SIGKILL then --resume, SIGTERM then --resume,
and --resume refusing a changed or finished run, each in a real subprocess on the
fixture. (Non-finite values and bad flags: tests/test_run_failures.py.)"""
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_train, train_env, train_in_process

ITERS = ['--max_iters', '120', '--eval_every', '40', '--ckpt_every', '20']
QUICK = ['--width', '0.125', '--batch_size', '16', '--base_lr', '0.003']
# variant -> (its extra flags, its configuration folder)
RESUMED = {'random_projection': ([], 'pd40_pn20'),
           'adversarial_projection': (['--pd', '5', '--iters', '3'], 'pd5_pn1_iter3')}


def log_lines(run_dir, index=0):
    return ((run_dir / f'log_train_{index:02d}.txt').read_text().splitlines(),
            (run_dir / f'log_test_{index:02d}.txt').read_text().splitlines())


@pytest.fixture(scope='module')
def straight_runs(cifar_fixture, tmp_path_factory):
    """Run A of each variant: 120 iterations without interruption (made once, when asked).
    It runs in this process; the tests compare its logs with those of train.py
    subprocesses, so they also show that both give the same."""
    runs = {}

    def straight(variant='random_projection'):
        if variant not in runs:
            extra, config = RESUMED[variant]
            log_dir = tmp_path_factory.mktemp('straight')
            assert train_in_process(variant, *cifar_fixture, *QUICK, *extra, *ITERS,
                                    '--log_dir', str(log_dir)) == 0
            train, test = log_lines(log_dir / config)
            assert [line.split(':')[0] for line in train] == [f'====iter_{i}' for i in (0, 100)]
            assert [line.split(':')[0] for line in test] == [f'++++iter_{i}' for i in (40, 80, 119)]
            runs[variant] = (train, test)
        return runs[variant]
    return straight


@pytest.fixture
def straight_run(straight_runs):
    return straight_runs('random_projection')


def start_and_interrupt(args, log_dir, sig, after_line, variant='random_projection'):
    """Start train.py, wait for ``after_line`` in its train or test log, send ``sig``."""
    env_args = [sys.executable, 'train.py', *args, '--log_dir', str(log_dir)]
    proc = subprocess.Popen(env_args, cwd=ROOT / variant, env=train_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = log_dir / RESUMED[variant][1] / f"log_{'test' if after_line.startswith('+') else 'train'}_00.txt"
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
def test_sigkill_then_resume_gives_the_same_logs(straight_runs, cifar_fixture, tmp_path, capsys, variant):
    # RP: the draws are replayed; AdvP: its P matrices come back from the checkpoint.
    extra, config = RESUMED[variant]
    args = [*cifar_fixture, *QUICK, *extra, *ITERS]
    code, _, _ = start_and_interrupt(args, tmp_path, signal.SIGKILL, '++++iter_40', variant)
    assert code == -signal.SIGKILL
    run_dir = tmp_path / config
    _, killed_test = log_lines(run_dir)
    assert killed_test[0].startswith('++++iter_40') and len(killed_test) < 3   # killed mid-run
    # The resume in this process (test_sigterm... resumes with train.py itself).
    assert train_in_process(variant, *args, '--log_dir', str(tmp_path), '--resume') == 0
    assert 'resuming run 00 at iteration' in capsys.readouterr().out
    # Same files appended, every line once, equal to the uninterrupted run's.
    assert sorted(p.name for p in run_dir.glob('log_*')) == ['log_test_00.txt', 'log_train_00.txt']
    assert log_lines(run_dir) == straight_runs(variant)
    # Only the last two checkpoints are kept, the final one among them.
    kept = sorted(p.name for p in (run_dir / 'checkpoints_00').glob('*.index'))
    assert kept == ['ckpt-100.index', 'ckpt-120.index']


def test_sigterm_checkpoints_and_exits_cleanly_then_resumes(straight_run, cifar_fixture, tmp_path):
    args = [*cifar_fixture, *QUICK, *ITERS]
    code, stdout, stderr = start_and_interrupt(args, tmp_path, signal.SIGTERM, '++++iter_40')
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


def test_resume_refuses_changed_or_finished_runs(cifar_fixture, tmp_path, capsys):
    # In this process: the refusals are the flag checks' (exit 2 before TensorFlow is
    # imported, as test_run_failures.py's bad flags show for the train.py command).
    args = [*cifar_fixture, *QUICK, '--eval_every', '100', '--log_dir', str(tmp_path)]
    assert train_in_process('random_projection', *args, '--max_iters', '3') == 0
    capsys.readouterr()
    for extra, message in ((['--max_iters', '3'], 'is finished (3 iterations)'),
                           (['--max_iters', '5'], '--max_iters is 5, the run used 3')):
        with pytest.raises(SystemExit) as exit_info:
            train_in_process('random_projection', *args, *extra, '--resume')
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
