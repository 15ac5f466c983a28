"""A day-long run fails safely (issue 5): TensorBoard holds what the logs say, a
non-finite loss stops with a clear message before bad weights are saved, SIGTERM in
the last iteration still finishes the run, and bad flags fail before anything is
written. (SIGKILL, SIGTERM and --resume: tests/test_resume.py.)"""
import signal

import pytest

from common.run import runlog
from conftest import run_train, train_in_process
from test_resume import QUICK, log_lines


@pytest.mark.parametrize('engine', ['tf1', 'keras'])
def test_tensorboard_events_hold_the_logged_scalars(cifar_fixture, tmp_path, engine):
    assert train_in_process('random_projection', *cifar_fixture, *QUICK, '--max_iters', '101',
                            '--eval_every', '100', '--log_dir', str(tmp_path), '--engine', engine) == 0
    # Read as TensorBoard reads them (`tensorboard --logdir logs/`).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / 'pd40_pn20' / 'tensorboard_00')).Reload()
    tags = {tag: [(e.step, round(e.value, 4)) for e in events.Scalars(tag)]
            for tag in events.Tags()['scalars']}
    assert set(tags) == {'fit', 'reg', 'thom', 'thomf', 'lr', 'train_acc', 'test_acc'}
    # Iteration 100 is also the last: one test line for it, not two.
    assert [step for step, _ in tags['fit']] == [0, 100] and [s for s, _ in tags['test_acc']] == [100]
    train, test = log_lines(tmp_path / 'pd40_pn20')
    assert f"fit={tags['fit'][1][1]:.4f}" in train[1]
    assert f"{tags['test_acc'][0][1]:.4f}" in test[0]
    assert tags['lr'][0][1] == 0.003


def finite_checkpoint(folder, iteration, engine):
    import numpy as np
    if engine == 'keras':
        with np.load(folder / f'ckpt-{iteration}.npz') as f:
            values = list(f.values())
    else:
        import tensorflow as tf
        reader = tf.train.load_checkpoint(str(folder / f'ckpt-{iteration}'))
        values = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map()]
    return all(np.all(np.isfinite(v)) for v in values if np.issubdtype(np.asarray(v).dtype, np.floating))


@pytest.mark.parametrize('ckpt_every,bad,in_process,engine', [
    ('2500', 'loss', False, 'tf1'), ('1', 'weights', True, 'tf1'),
    ('2500', 'loss', True, 'keras'), ('1', 'weights', True, 'keras')])
def test_non_finite_values_stop_with_a_clear_message(cifar_fixture, tmp_path, capsys, ckpt_every, bad,
                                                     in_process, engine):
    # An absurd lr: after the first update the weights are finite but so large that
    # reg overflows. With a checkpoint due right after it, that is caught before the
    # weights are saved; else the next loss is. Either way the checkpoint named
    # as good is the finite one of iteration 0.
    argv = [*cifar_fixture, '--width', '0.125', '--batch_size', '16', '--base_lr', '1e30',
            '--max_iters', '300', '--ckpt_every', ckpt_every, '--log_dir', str(tmp_path),
            '--engine', engine]
    if in_process:   # train() returns the exit code; it does not raise
        code, stderr = train_in_process('random_projection', *argv), capsys.readouterr().err
    else:
        out = run_train('random_projection', *argv)
        code, stderr = out.returncode, out.stderr
        assert 'Traceback' not in stderr
    assert code == 1
    if bad == 'loss':
        assert 'error: non-finite loss at iteration 1: ' in stderr, stderr[-3000:]
        message = stderr.split('error: non-finite loss')[1]
        assert any(f'{term} = ' in message.split(';')[0] for term in ('fit', 'reg', 'thom', 'thomf'))
    else:
        assert 'error: the update of iteration 0 left weights that cannot be saved (' in stderr, \
            stderr[-3000:]
        assert 'reg = inf' in stderr
    assert 'lower --base_lr' in stderr and 'start a new run' in stderr
    assert 'the last good checkpoint is at iteration 0' in stderr
    run_dir = tmp_path / 'pd40_pn20'
    assert finite_checkpoint(run_dir / 'checkpoints_00', 0, engine)
    assert not list((run_dir / 'checkpoints_00').glob('ckpt-1.*'))
    run = runlog.read_run(run_dir)        # the logs so far parse
    assert run.train[0]['iter'] == 0


def run_in_process(cifar_fixture, log_dir, signal_at, max_iters=30):
    """RP's train.py in this process, sending itself SIGTERM during iteration ``signal_at``."""
    import os
    from common.run import loop
    schedule = loop.learning_rate

    def learning_rate(iteration, *args):
        if iteration == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return schedule(iteration, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, 'learning_rate', learning_rate)
        return train_in_process('random_projection', *cifar_fixture, *QUICK, '--pn', '2',
                                '--max_iters', str(max_iters), '--eval_every', '10',
                                '--log_dir', str(log_dir))


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


def test_a_tf1_checkpoint_that_is_not_the_runs_state_at_its_iteration_is_refused(cifar_fixture, tmp_path,
                                                                               capsys):
    """As the Keras engine's (test_keras_engine.py): a checkpoint cut short or holding another
    step than its name says stops the resume with exit code 2 and the fix, not a traceback."""
    import shutil
    args = [*cifar_fixture, '--width', '0.125', '--batch_size', '8', '--eval_every', '100', '--pn', '2',
            '--log_dir', str(tmp_path), '--max_iters', '6', '--ckpt_every', '3']
    assert train_in_process('random_projection', *args) == 0
    folder = tmp_path / 'pd40_pn2' / 'checkpoints_00'
    data = {p.name.replace('ckpt-6', 'ckpt-3'): p.read_bytes() for p in folder.glob('ckpt-6.*')}
    for p in folder.glob('ckpt-*'):
        p.unlink()
    (folder / 'checkpoint').write_text('model_checkpoint_path: "ckpt-3"\n'
                                       'all_model_checkpoint_paths: "ckpt-3"\n')
    for name, content in data.items():       # step 6's state under the name of step 3
        (folder / name).write_bytes(content)
    capsys.readouterr()
    assert train_in_process('random_projection', *args, '--resume') == 2
    err = capsys.readouterr().err
    assert 'ckpt-3 holds the state after step 6, not 3' in err and 'the run cannot resume from it' in err
    (data_file,) = folder.glob('ckpt-3.data-*')
    data_file.write_bytes(data_file.read_bytes()[:100])   # cut short, as by a full disk
    assert train_in_process('random_projection', *args, '--resume') == 2
    err = capsys.readouterr().err
    assert 'ckpt-3 cannot be restored (' in err and 'start a new run without --resume' in err
    shutil.rmtree(folder)
