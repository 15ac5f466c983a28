"""common.compare: the summary table (markdown and CSV), the plot, and the
command line's errors (missing path, empty file, garbage), run as
``python -m common.compare`` in a subprocess."""
import csv
import io
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np

from common import REPO_ROOT
from common.compare import summary
from common.run import runlog

REF = REPO_ROOT / 'logs' / 'authors'   # the authors' published logs, shipped with the repository
RP = REF / 'comhe' / 'random_projection' / 'pd40_pn20'
BASELINE = REF / 'mhe' / 'baseline'



def cli(*args):
    return subprocess.run([sys.executable, '-m', 'common.compare', *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def make_run(root, name, final_acc, n_iters=3000, seed=0):
    """A synthetic run folder written with the runlog writer."""
    rng = np.random.default_rng(seed)
    run_dir = root / 'logs' / 'random_projection' / name
    run_dir.mkdir(parents=True)
    train, test = runlog.log_paths(run_dir, runlog.next_log_index(run_dir))
    its = range(0, n_iters, 100)
    train.write_text(''.join(
        runlog.format_train_line(i, 9.0 * np.exp(-i / 800) + 0.1 + 0.05 * rng.random(), 1.0, 0.5, 5.0, 4.9)
        + '\n' for i in its))
    test_its = list(range(500, n_iters, 500)) + [n_iters - 1]
    accs = np.linspace(0.01, final_acc, len(test_its))
    test.write_text(''.join(runlog.format_test_line(i, a) + '\n' for i, a in zip(test_its, accs)))
    return run_dir


# --------------------------------------------------------------------------- summary

def test_summary_markdown_with_reference():
    r = cli('summary', RP, REF / 'mhe' / 'half_mhe_2', '--reference', BASELINE)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith('| run | last iter | final test acc | best test acc | best at iter | final fit')
    assert lines[2] == '| mhe/baseline (reference) | 42499 | 0.6974 | 0.7003 | 40000 | 0.3751 | – | – |'
    assert lines[3] == ('| comhe/random_projection/pd40_pn20 | 74999 | 0.7559 | 0.7572 | 73000 | 0.1133 '
                        '| +0.0585 | +0.0569 |')
    assert lines[4] == '| mhe/half_mhe_2 | 42499 | 0.7399 | 0.7404 | 40500 | 0.1757 | +0.0425 | +0.0401 |'
    assert len(lines) == 5


def test_summary_csv_and_folder_of_runs():
    r = cli('summary', REF / 'comhe', '--csv')
    assert r.returncode == 0, r.stderr
    rows = {row['run']: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert set(rows) == {'comhe/random_projection/pd40_pn20', 'comhe/angle_projection/pd30_pn1_iter1',
                         'comhe/adversarial_projection/pd30_pn1_iter10'}
    rp = rows['comhe/random_projection/pd40_pn20']
    assert (rp['last_iter'], rp['final_test_acc'], rp['best_test_acc'], rp['best_test_iter'], rp['final_fit']) == (
        '74999', '0.7559', '0.7572', '73000', '0.1133')
    assert rows['comhe/angle_projection/pd30_pn1_iter1']['final_test_acc'] == '0.7513'
    assert rows['comhe/angle_projection/pd30_pn1_iter1']['best_test_acc'] == '0.7525'
    assert rows['comhe/adversarial_projection/pd30_pn1_iter10']['final_test_acc'] == '0.7474'
    assert rows['comhe/adversarial_projection/pd30_pn1_iter10']['best_test_acc'] == '0.7483'


def test_summary_csv_differences_on_synthetic_runs(tmp_path):
    a = make_run(tmp_path, 'pd40_pn20', 0.75)
    b = make_run(tmp_path, 'pd40_pnd4', 0.70, n_iters=2000)
    r = cli('summary', a, '--reference', b, '--csv')
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x['run'], x['role']) for x in rows] == [('random_projection/pd40_pnd4', 'reference'),
                                                     ('random_projection/pd40_pn20', 'run')]
    ref, run = rows
    assert (ref['last_iter'], ref['final_test_acc'], ref['diff_final']) == ('1999', '0.7000', '')
    assert (run['last_iter'], run['final_test_acc'], run['best_test_iter']) == ('2999', '0.7500', '2999')
    assert (run['diff_final'], run['diff_best']) == ('+0.0500', '+0.0500')


def test_same_short_names_are_made_distinct(tmp_path):
    a = make_run(tmp_path / 'a', 'pd40_pn20', 0.75)
    b = make_run(tmp_path / 'b', 'pd40_pn20', 0.74)
    runs = summary.make_names_unique(summary.load_runs([a, b]))
    assert runs[0].name != runs[1].name
    assert [r.final_test_acc for r in runs] == [0.75, 0.74]


def test_a_run_on_other_data_or_width_is_noted_as_not_comparable(tmp_path):
    import json
    run_dir = make_run(tmp_path, 'pd40_pn20', 0.75)       # logs/random_projection/pd40_pn20
    flags = {'variant': 'random_projection', 'configuration': 'pd40_pn20', 'width': 1.0,
             'data': {'dir': '/data', 'md5': 'official CIFAR-100'}}
    (run_dir / 'flags_00.json').write_text(json.dumps(flags))
    for args in (['summary', run_dir], ['paper', '--logs', tmp_path / 'logs']):
        r = cli(*args)
        assert r.returncode == 0 and 'do not compare' not in r.stderr, r.stderr
    flags.update(width=0.25, data={'dir': '/tmp/fx', 'md5': 'train=' + 'a' * 32})
    (run_dir / 'flags_00.json').write_text(json.dumps(flags))
    unlike = ("trained on other data than CIFAR-100's official files (/tmp/fx) and width 0.25 (the paper's "
              "network is 1.0): its figures do not compare with the authors' CIFAR-100 ones")
    r = cli('summary', run_dir)
    assert r.returncode == 0 and f'note: {run_dir} {unlike}' in r.stderr, r.stderr
    assert '| comhe/random_projection/pd40_pn20 (reference) |' in r.stdout    # still compared
    r = cli('paper', '--logs', tmp_path / 'logs')
    assert r.returncode == 0 and f'note: ours of random_projection/pd40_pn20 {unlike}' in r.stderr, r.stderr


# --------------------------------------------------------------------------- plot

def test_plot_three_runs_and_a_reference(tmp_path):
    runs = [runlog.read_run(make_run(tmp_path / str(k), f'pd40_pn{k}', acc, seed=k))
            for k, acc in enumerate((0.75, 0.72, 0.70))]
    reference = runlog.read_run(make_run(tmp_path / 'ref', 'pd30_pn1_iter1', 0.74, n_iters=4000))
    out = summary.plot_runs(runs, [reference], tmp_path / 'plots' / 'curves.png')
    image = mpimg.imread(out)
    assert image.shape[:2] == (500, 1200)              # 12 x 5 in at 100 dpi
    rgb = image[..., :3]
    non_white = np.any(rgb < 0.95, axis=-1).mean()
    assert non_white > 0.03
    colours = np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50


def test_a_run_with_one_test_line_shows_as_a_point(tmp_path):
    run = runlog.read_run(make_run(tmp_path, 'pd40_pn20', 0.1, n_iters=300))
    assert len(run.test) == 1
    rgb = mpimg.imread(summary.plot_runs([run], [], tmp_path / 'short.png'))[..., :3]
    # The left panel's middle, away from the legend (lower right): where one point sits
    # when it sets both axes' ranges; a line through one point draws nothing there.
    middle = (rgb[150:350, 150:450] * 255).astype(int)
    blue = np.all(np.abs(middle - (31, 119, 180)) < 30, axis=-1)   # tab10's first colour
    assert blue.sum() > 10


def test_plot_cli_writes_png(tmp_path):
    out = tmp_path / 'ref.png'
    r = cli('plot', RP, '--reference', BASELINE, '-o', out)
    assert r.returncode == 0, r.stderr
    assert mpimg.imread(out).shape[:2] == (500, 1200)


# --------------------------------------------------------------------------- errors

def _assert_clean_error(r, *fragments):
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr
    assert r.stderr.startswith('error: ')
    for fragment in fragments:
        assert fragment in r.stderr


def test_missing_path(tmp_path):
    missing = tmp_path / 'no_such_run'
    _assert_clean_error(cli('summary', missing), str(missing), 'no such file or folder')
    _assert_clean_error(cli('plot', missing, '-o', tmp_path / 'x.png'), 'no such file or folder')
    assert not (tmp_path / 'x.png').exists()


def test_empty_file(tmp_path):
    empty = tmp_path / 'log_train_00.txt'
    empty.write_text('')
    _assert_clean_error(cli('summary', empty), str(empty), 'empty file')
    _assert_clean_error(cli('summary', tmp_path), 'no log lines', 'has the run just started')


def test_garbage_file(tmp_path):
    garbage = tmp_path / 'log_test_00.txt'
    garbage.write_text('accuracy was great\nreally\n')
    _assert_clean_error(cli('summary', garbage, '--csv'), str(garbage), 'line 1: not a test log line')
    binary = tmp_path / 'b' / 'log_train_00.txt'
    binary.parent.mkdir()
    binary.write_bytes(bytes(range(256)))
    _assert_clean_error(cli('plot', binary, '-o', tmp_path / 'x.png'), 'binary')


def test_output_must_be_a_png_file(tmp_path):
    run = make_run(tmp_path, 'pd40_pn20', 0.5)
    for bad in (tmp_path / 'curves.pdfx', tmp_path / 'curves', tmp_path):
        _assert_clean_error(cli('plot', run, '-o', bad), f'-o {bad}: name a .png file')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['logs']


def test_help():
    r = cli('--help')
    assert r.returncode == 0 and 'summary' in r.stdout and 'plot' in r.stdout
    r = cli('plot', '--help')
    assert r.returncode == 0 and '--reference' in r.stdout and '-o' in r.stdout
