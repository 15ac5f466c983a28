"""Defaults that reproduce the release's behaviour (docs/protocol.md sections 2, 3 and 5), and
the flags that deviate from it: batch-norm averages that are not zero-debiased, AdvP's
seed, AP's look-ahead without P's decay, and --resume refusing to mix the modes."""
import json

import pytest

from common.run import runlog
from conftest import ROOT, entry_flags, graph_terms_of, load_entry_point, run_train, train_in_process


@pytest.mark.parametrize('variant, seed', [('random_projection', 345), ('angle_projection', 345),
                                           ('adversarial_projection', 3456), ('mhe', 345)])
def test_release_default_seed_per_variant(variant, seed):
    module = load_entry_point(variant)
    flags = entry_flags(module)
    assert flags.random_seed == seed and flags.bn_zero_debias is False
    assert entry_flags(module, '--random_seed', '7').random_seed == 7


def test_early_test_accuracy_is_low_with_the_release_bn_and_not_with_the_flag(cifar_fixture, tmp_path):
    # The release's averages start at 0: at iteration 50 they are 1 - 0.999^50 = 0.05 of
    # the debiased ones, so the test-time normalisation is far off while training learns.
    common = [*cifar_fixture, '--model_name', 'baseline', '--width', '0.125', '--batch_size', '16',
              '--base_lr', '0.003', '--max_iters', '100', '--eval_every', '50']
    curves, train_logs = {}, {}
    for extra in ([], ['--bn_zero_debias']):
        log_dir = tmp_path / ('debiased' if extra else 'release')
        assert train_in_process('mhe', *common, '--log_dir', str(log_dir), *extra) == 0
        run_dir = log_dir / 'baseline'
        assert json.loads((run_dir / 'flags_00.json').read_text())['bn_zero_debias'] == bool(extra)
        run = runlog.read_run(run_dir)
        curves[bool(extra)] = dict(run.test)
        train_logs[bool(extra)] = (run_dir / 'log_train_00.txt').read_text()
    # Training normalises with the batch moments: its log is the same in both modes.
    assert train_logs[False] == train_logs[True] and train_logs[False].startswith('====iter_0:')
    release, debiased = curves[False], curves[True]
    assert sorted(release) == sorted(debiased) == [50, 99]
    # Measured: release 0.1 at 50, debiased 0.765 (10 classes, chance 0.1).
    assert release[50] < 0.3 and debiased[50] > 0.6, curves
    assert debiased[99] > release[99]


def test_resume_refuses_to_mix_the_bn_modes(cifar_fixture, tmp_path):
    common = [*cifar_fixture, '--model_name', 'baseline', '--width', '0.125', '--batch_size', '8',
              '--eval_every', '10', '--log_dir', str(tmp_path)]
    assert train_in_process('mhe', *common, '--max_iters', '20') == 0
    # A longer --max_iters makes the finished run resumable; the BN mode must not change.
    out = run_train('mhe', *common, '--resume', '--bn_zero_debias', '--max_iters', '40', cwd=ROOT)
    assert out.returncode == 2
    assert '--max_iters is 40, the run used 20' in out.stderr
    assert '--bn_zero_debias is True, the run used False' in out.stderr


def test_a_run_from_before_the_flag_counts_as_debiased(tmp_path):
    from common.run import runstate
    files = runstate.RunFiles(tmp_path, 0)
    files.flags_file.write_text(json.dumps({'base_lr': 0.1, 'width': 0.5}))
    flags = entry_flags(load_entry_point('random_projection'), '--width', '0.5')
    assert runstate.changed_flags(files, flags) == [('bn_zero_debias', False, True)]
    flags = entry_flags(load_entry_point('random_projection'), '--width', '0.5', '--bn_zero_debias')
    assert runstate.changed_flags(files, flags) == []


def test_ap_lookahead_is_the_releases_unless_flagged(monkeypatch):
    # The release differentiates the angle loss alone in the look-ahead; --lookahead_decay
    # adds P's scaled decay (docs/protocol.md section 3). The entry point passes it on.
    from common.paper import projections
    module = load_entry_point('angle_projection')
    seen = []
    monkeypatch.setattr(projections, 'learned_projection_term', lambda *args: seen.append(args))
    for argv, want in (((), False), (('--lookahead_decay',), True)):
        flags = entry_flags(module, *argv)
        assert flags.lookahead_decay is want
        graph_terms_of(module, flags)['hidden_term']('W', type('ctx', (), {'lr': 'lr'}))
        assert seen.pop() == ('W', 30, 'lr', 'angle', 1, want)
    assert not hasattr(entry_flags(load_entry_point('adversarial_projection')), 'lookahead_decay')


def test_an_ap_run_from_before_the_flag_had_the_decay_in_its_lookahead(tmp_path):
    from common.run import runstate
    files = runstate.RunFiles(tmp_path, 0)
    files.flags_file.write_text(json.dumps({'base_lr': 0.1, 'bn_zero_debias': False}))
    module = load_entry_point('angle_projection')
    assert runstate.changed_flags(files, entry_flags(module)) == [('lookahead_decay', False, True)]
    assert runstate.changed_flags(files, entry_flags(module, '--lookahead_decay')) == []
    assert runstate.changed_flags(files, entry_flags(load_entry_point('random_projection'))) == []
