"""bench/step_time.py at a tiny size (--quick), so that the benchmark cannot rot:
it runs end to end, writes the JSON (and the Markdown table) the README's
Performance section is made from, and the naive terms of bench/naive.py give
the same losses as ours on the same weights and draws."""
import copy
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, bench_env

CONFIGS = {('none', 'ours'), ('half_mhe', 'ours'), ('half_mhe', 'naive'), ('rp', 'ours'),
           ('rp', 'naive'), ('ap', 'ours'), ('ap', 'naive'), ('advp', 'ours'), ('advp', 'naive'),
           ('rp_draws', 'floor'), ('rp_draws_tf', 'floor'), ('rp_products', 'floor'),
           ('advp_products', 'floor')}
ROW_KEYS = {'config', 'impl', 'label', 'median_s', 'ratio', 'paired_ratio', 'p_steps_median_s',
            'p_iters', 'build_s', 'build_ratio', 'first_run_s', 'times_s', 'losses_after', 'finite'}


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    """(result, folder) of one `step_time.py --quick --json` run in a subprocess."""
    folder = tmp_path_factory.mktemp('bench')
    out = subprocess.run([sys.executable, str(ROOT / 'bench' / 'step_time.py'), '--quick',
                          '--json', str(folder / 'bench.json')],
                         cwd=folder, capture_output=True, text=True, timeout=600, env=bench_env())
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((folder / 'bench.json').read_text()), folder


def test_quick_benchmark_writes_its_json_and_naive_equals_ours(quick):
    result, folder = quick
    assert {'command', 'quick', 'machine', 'settings', 'step_time', 'scaling', 'end_to_end',
            'targets', 'markdown', 'total_s'} <= set(result)
    assert result['quick'] is True
    assert {'cpu_count', 'tensorflow', 'python'} <= set(result['machine'])

    rows = result['step_time']['rows']
    assert {(r['config'], r['impl']) for r in rows} == CONFIGS
    for row in rows:
        assert ROW_KEYS <= set(row), row['config']
        assert len(row['times_s']) == 2 and all(t > 0 for t in row['times_s'])
        assert row['finite'], row
    assert [r['ratio'] for r in rows if r['config'] == 'none'] == [1.0]
    assert {r['config']: r['p_iters'] for r in rows if r['impl'] == 'ours'} == \
        {'none': 0, 'half_mhe': 0, 'rp': 0, 'ap': 1, 'advp': 2}

    # Same weights, same draws: the naive terms give our losses, at the first
    # iteration and after one training step (so the gradients agree too).
    same = result['step_time']['same_losses']
    assert set(same) == {'half_mhe', 'rp', 'ap', 'advp'}
    for key, check in same.items():
        first, second = check['iterations']
        for name in ('fit', 'reg', 'thom', 'thomf'):
            assert math.isclose(first['ours'][name], first['naive'][name], rel_tol=1e-5), (key, name)
            assert math.isclose(second['ours'][name], second['naive'][name], rel_tol=1e-3), (key, name)
        assert first['ours']['thom'] > 0 and first['ours']['thomf'] > 0

    assert len(result['scaling']) == 4
    for row in result['scaling']:
        assert {'N', 'd', 'ours_s', 'naive_s', 'speedup'} <= set(row)
        assert row['value_rel_diff'] < 1e-5 and row['grad_rel_diff'] < 1e-4, row
    assert set(result['end_to_end']) == {'none', 'rp'}
    for row in result['end_to_end'].values():
        assert row['e2e_images_per_s'] > 0 and row['compute_images_per_s'] > 0
    assert {t['what'].split(' ')[0] for t in result['targets']} >= {'RP', 'AP', 'AdvP'}
    assert '| no energy |' in result['markdown']
    assert '| no energy |' in (folder / 'bench.md').read_text()


def test_repeated_runs_aggregate_to_medians_with_their_range(quick):
    from bench import step_report
    result, _ = quick
    slower = copy.deepcopy(result)
    for row in slower['step_time']['rows']:
        row['ratio'] *= 1.5
    merged = step_report.aggregate([result, slower, result])
    rows = {(r['config'], r['impl']): r for r in merged['step_time']['rows']}
    original = {(r['config'], r['impl']): r for r in result['step_time']['rows']}
    rp = rows['rp', 'ours']
    assert rp['ratio'] == original['rp', 'ours']['ratio']          # the median of three
    assert rp['ratio_runs'] == [original['rp', 'ours']['ratio'],
                                1.5 * original['rp', 'ours']['ratio'],
                                original['rp', 'ours']['ratio']]
    merged['total_s'] = 1.0
    targets = step_report.targets(merged)
    assert all(t['met_in_runs'].endswith('of 3') for t in targets)
    table = step_report.markdown({**merged, 'targets': targets})
    assert '| met in runs |' in table and ' (' in table


def test_the_torch_step_benchmark_runs(tmp_path):
    """bench/torch_step.py end to end at one round of one step: a row per configuration,
    the ratio of 'none' 1, the JSON beside the table."""
    from conftest import subprocess_env
    out = subprocess.run([sys.executable, str(ROOT / 'bench' / 'torch_step.py'), '--device', 'cpu',
                          '--rounds', '1', '--steps', '1', '--out', str(tmp_path / 'torch_step')],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / 'torch_step.json').read_text())
    assert set(result['ratio']) == {'none', 'rp', 'ap', 'advp'} and result['ratio']['none'] == 1.0
    assert all(math.isfinite(ms) and ms > 0 for ms in result['step_ms'].values())
    assert '| advp |' in (tmp_path / 'torch_step.md').read_text()
