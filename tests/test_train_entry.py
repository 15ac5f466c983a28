"""Each train.py end to end, in a real subprocess, on the learnable fixture:
its logs parse back into docs/protocol.md section 6's format, it learns, and a second run
never overwrites the first."""
import json
import shutil
from pathlib import Path

import pytest

from common.run import device, locks, runlog
from conftest import ROOT, VARIANTS, run_train

QUICK = ['--width', '0.125', '--batch_size', '16', '--base_lr', '0.003']


@pytest.fixture(scope='module')
def end_to_end(cifar_fixture, tmp_path_factory):
    """``run(variant)``: (output, log folder) of that train.py's run, made once."""
    runs = {}

    def run(variant):
        if variant not in runs:
            log_dir = tmp_path_factory.mktemp(variant)
            # RP runs from its own folder, the others from the repository root. Debiased BN
            # averages: the release's (tests/test_release_fidelity.py) need thousands of
            # steps before the test accuracy says whether the network learned.
            cwd = ROOT / variant if variant == 'random_projection' else ROOT
            extra = ['--iters', '2'] if variant == 'adversarial_projection' else []   # 10: slow
            # Grappler on, as in a user's run (the other tests turn it off, see conftest.py).
            out = run_train(variant, *cifar_fixture, *QUICK, *extra, '--bn_zero_debias', '--max_iters',
                            '110', '--eval_every', '50', '--log_dir', str(log_dir), cwd=cwd,
                            env={'COMHE_GRAPPLER': '1'})
            assert out.returncode == 0, out.stderr[-3000:]
            runs[variant] = out, log_dir
        return runs[variant]
    return run


@pytest.mark.parametrize('variant', VARIANTS)
def test_train_py_runs_end_to_end_and_learns(variant, end_to_end, cifar_fixture):
    out, log_dir = end_to_end(variant)
    [run_dir] = [p for p in log_dir.iterdir() if p.is_dir()]
    expected_name = {'random_projection': 'pd40_pn20', 'angle_projection': 'pd30_pn1_iter1',
                     'adversarial_projection': 'pd30_pn1_iter2'}[variant]
    assert run_dir.name == expected_name
    assert sorted(p.name for p in run_dir.iterdir()) == [
        'checkpoints_00', 'flags_00.json', 'log_test_00.txt', 'log_train_00.txt', 'tensorboard_00',
        'train_00.lock']
    # The lock says who wrote the run last (common.run.locks); nobody holds it now.
    assert json.loads((run_dir / 'train_00.lock').read_text())['host']
    assert not locks.is_held(run_dir / 'train_00.lock')

    train_lines = (run_dir / 'log_train_00.txt').read_text().splitlines()
    assert [line.split(':')[0] for line in train_lines] == ['====iter_0', '====iter_100']
    run = runlog.read_run(run_dir)
    assert [r['iter'] for r in run.train] == [0, 100]
    assert [it for it, _ in run.test] == [50, 100, 109]
    for record, line in zip(run.train, train_lines):
        # Each line is exactly what the writer makes of its parsed values.
        assert runlog.format_train_line(record['iter'], record['fit'], record['reg'], record['acc'],
                                        record['thom'], record['thomf']) == line
        assert record['thom'] > 0 and record['thomf'] > 0
    # On the learnable fixture (10 classes, chance 0.1) the fit falls and the test accuracy rises.
    assert run.train[-1]['fit'] < run.train[0]['fit'] / 4
    assert run.final_test_acc > 0.5, run.test
    # stdout shows every log line with speed and ETA.
    assert '====iter_100:' in out.stdout and 'img/s, ETA' in out.stdout
    # The first line says where it trains (here, with no driver: the CPU, and why).
    first_line = out.stdout.splitlines()[0]
    if device.nvidia_driver_present():
        assert first_line.startswith('device: '), first_line
    else:
        assert first_line == 'device: CPU (no NVIDIA driver on this machine (nvidia-smi not found))'
    saved = json.loads((run_dir / 'flags_00.json').read_text())
    assert saved['bn_zero_debias'] is True
    # A record of what it trained on: here not CIFAR-100 but the fixture.
    assert saved['data'] == {'dir': str(Path(cifar_fixture[1]).absolute()), 'md5': cifar_fixture[3]}


def test_a_second_run_writes_the_next_index_and_keeps_the_first(end_to_end, cifar_fixture, tmp_path):
    _, first = end_to_end('random_projection')
    shutil.copytree(first, tmp_path, dirs_exist_ok=True)
    run_dir = tmp_path / 'pd40_pn20'
    before = {p.name: p.read_bytes() for p in run_dir.glob('log_*')}
    assert sorted(before) == ['log_test_00.txt', 'log_train_00.txt']
    second = run_train('random_projection', *cifar_fixture, *QUICK, '--max_iters', '2',
                       '--log_dir', str(tmp_path), cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in run_dir.glob('log_*')}
    assert sorted(after) == ['log_test_00.txt', 'log_test_01.txt', 'log_train_00.txt', 'log_train_01.txt']
    assert all(after[name] == data for name, data in before.items())
    assert after['log_test_01.txt'].decode().startswith('++++iter_1: test acc=')
    assert (run_dir / 'checkpoints_00' / 'ckpt-110.index').exists()
    assert (run_dir / 'checkpoints_01' / 'ckpt-2.index').exists()
