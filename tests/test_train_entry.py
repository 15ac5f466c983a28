"""Each train.py end to end, in a real subprocess, on the learnable fixture:
its logs parse back into docs/protocol.md section 6's format, it learns, and a second run
never overwrites the first."""
import pytest

from common import runlog
from conftest import ROOT, VARIANTS, run_train

QUICK = ['--width', '0.25', '--batch_size', '32', '--base_lr', '0.003']


@pytest.mark.parametrize('variant', VARIANTS)
def test_train_py_runs_end_to_end_and_learns(variant, cifar_fixture, tmp_path):
    # RP runs from its own folder, the others from the repository root.
    cwd = ROOT / variant if variant == 'random_projection' else ROOT
    out = run_train(variant, *cifar_fixture, *QUICK, '--max_iters', '300', '--eval_every', '100',
                    '--log_dir', str(tmp_path), cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    [run_dir] = [p for p in tmp_path.iterdir() if p.is_dir()]
    expected_name = {'random_projection': 'pd40_pn20', 'angle_projection': 'pd30_pn1_iter1',
                     'adversarial_projection': 'pd30_pn1_iter10'}[variant]
    assert run_dir.name == expected_name
    assert sorted(p.name for p in run_dir.iterdir()) == [
        'checkpoints_00', 'flags_00.json', 'log_test_00.txt', 'log_train_00.txt', 'tensorboard_00']

    train_lines = (run_dir / 'log_train_00.txt').read_text().splitlines()
    assert [line.split(':')[0] for line in train_lines] == ['====iter_0', '====iter_100', '====iter_200']
    run = runlog.read_run(run_dir)
    assert [r['iter'] for r in run.train] == [0, 100, 200]
    assert [it for it, _ in run.test] == [100, 200, 299]
    for record, line in zip(run.train, train_lines):
        # Each line is exactly what the writer makes of its parsed values.
        assert runlog.format_train_line(record['iter'], record['fit'], record['reg'], record['acc'],
                                        record['thom'], record['thomf']) == line
        assert record['thom'] > 0 and record['thomf'] > 0
    # On the learnable fixture (10 classes, chance 0.1) the fit falls and the test accuracy rises.
    assert run.train[-1]['fit'] < run.train[0]['fit'] / 4
    # Twice chance: with the release's biased BN averages after only 300 steps the test
    # accuracy is noisy (AP: 0.32 before issue 13, 0.285 after, from float32 rounding alone).
    assert run.final_test_acc > 0.2, run.test
    # stdout shows every log line with speed and ETA.
    assert '====iter_100:' in out.stdout and 'img/s, ETA' in out.stdout


def test_a_second_run_writes_the_next_index_and_keeps_the_first(cifar_fixture, tmp_path):
    args = [*cifar_fixture, *QUICK, '--max_iters', '2', '--log_dir', str(tmp_path)]
    first = run_train('random_projection', *args)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / 'pd40_pn20'
    before = {p.name: p.read_bytes() for p in run_dir.glob('log_*')}
    assert sorted(before) == ['log_test_00.txt', 'log_train_00.txt']
    second = run_train('random_projection', *args, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in run_dir.glob('log_*')}
    assert sorted(after) == ['log_test_00.txt', 'log_test_01.txt', 'log_train_00.txt', 'log_train_01.txt']
    assert all(after[name] == data for name, data in before.items())
    assert after['log_test_01.txt'].decode().startswith('++++iter_1: test acc=')
    assert (run_dir / 'checkpoints_00' / 'ckpt-2.index').exists()
    assert (run_dir / 'checkpoints_01' / 'ckpt-2.index').exists()
