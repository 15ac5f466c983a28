"""experiments/digits.py at a tiny size, in-process, into a temporary folder:
the digits data, the progress lines, and the table, chart and JSON it writes
(numbers in [0, 1], the table consistent with the JSON and the JSON with the
training logs)."""
import importlib.util
import json
import re

import numpy as np
import pytest

from common.run import runlog
from conftest import ROOT


@pytest.fixture(scope='module')
def digits():
    spec = importlib.util.spec_from_file_location('digits_experiment', ROOT / 'experiments' / 'digits.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_data_is_cifar_shaped_and_split_fixed(digits):
    train_x, train_y, test_x, test_y = digits.load_digits_dataset(500, 0)
    assert train_x.shape == (500, 32, 32, 3) and test_x.shape == (1297, 32, 32, 3)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert train_x.min() == 0 and train_x.max() == 255
    assert np.array_equal(train_x[..., 0], train_x[..., 2])          # grey in all channels
    assert np.array_equal(train_x[:, ::4, ::4], train_x[:, 3::4, 3::4])  # 4x4 blocks
    assert set(train_y) == set(range(10)) and set(test_y) == set(range(10))
    again = digits.load_digits_dataset(500, 0)
    assert np.array_equal(again[0], train_x) and np.array_equal(again[3], test_y)


def test_tiny_experiment_writes_table_chart_and_json(digits, tmp_path, capsys):
    out = tmp_path / 'results'
    methods = ['baseline', 'AdvP']
    code = digits.main(['--quick', '--iters', '4', '--eval_every', '2', '--advp_iters', '2',
                        '--methods', *methods, '--out', str(out), '--log_dir', str(tmp_path / 'logs')])
    assert code == 0
    captured = capsys.readouterr()
    assert 'run 2 of 2: AdvP, seed 0' in captured.err and 'ETA' in captured.err
    assert sorted(p.name for p in out.iterdir()) == ['digits.json', 'digits.md', 'digits.png']

    result = json.loads((out / 'digits.json').read_text())
    assert [r['method'] for r in result['runs']] == methods
    for run in result['runs']:
        assert run['exit_code'] == 0 and 0.0 <= run['test_acc'] <= 1.0
        # The accuracy is the run's own final test log line.
        logged = runlog.read_run(run['test_log'])      # absolute: tmp_path is outside the repo
        assert logged.final_test_acc == run['test_acc'] and logged.test[-1][0] == 3

    md = (out / 'digits.md').read_text()
    assert 'Command: `python experiments/digits.py --quick' in md and 'CPU cores' in md
    rows = {m.group(1): m for m in re.finditer(
        r'^\| (\S+) \| [^|]+ \| (\d+) \| ([\d.]+) \| ([\d.]+) \|', md, re.M)}
    assert list(rows) == methods
    summary = {s['method']: s for s in result['summary']}
    for method, m in rows.items():
        mean, std = float(m.group(3)), float(m.group(4))
        assert 0.0 <= mean <= 1.0 and std == 0.0                      # one seed
        assert mean == pytest.approx(summary[method]['mean'], abs=5e-5)
        [acc] = [r['test_acc'] for r in result['runs'] if r['method'] == method]
        assert mean == pytest.approx(acc, abs=5e-5)
    assert captured.out.startswith('| method |')

    import matplotlib.image
    image = matplotlib.image.imread(out / 'digits.png')
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10   # not blank


def test_quick_results_never_replace_the_committed_ones(digits):
    from common import REPO_ROOT
    assert digits.parse_args(['--quick']).out == REPO_ROOT / 'logs' / 'digits' / 'quick'
    assert digits.parse_args([]).out == REPO_ROOT / 'experiments' / 'results'
