"""The authors' logs inside the repository (logs/authors/), the lookup of a run's
matching authors' run, the automatic comparison in ``common.compare`` and its
``paper`` table, and a guard against paths outside the repository."""
import csv
import io
import json
import re
import shutil
import subprocess

import pytest

from common import REPO_ROOT
from common.compare import authors
from test_compare import cli, make_run

AUTHORS = REPO_ROOT / 'logs' / 'authors'


def test_authors_logs_are_tracked_by_git():
    tracked = subprocess.run(['git', 'ls-files', 'logs/authors'], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    runs = {str(p.parent) for p in map(lambda s: REPO_ROOT / s, tracked) if p.name.startswith('log_')}
    assert len(runs) == 3 + 13     # three CoMHE runs, the MHE release's 13
    ignored = subprocess.run(['git', 'check-ignore', '-q', 'logs/authors/comhe/random_projection/'
                              'pd40_pn20/log_test_00.txt'], cwd=REPO_ROOT)
    assert ignored.returncode == 1   # not hidden by .gitignore's logs/*


@pytest.mark.parametrize('variant, configuration, expected', [
    ('random_projection', 'pd40_pn20', 'comhe/random_projection/pd40_pn20'),
    ('angle_projection', 'pd30_pn1_iter1', 'comhe/angle_projection/pd30_pn1_iter1'),
    ('adversarial_projection', 'pd30_pn1_iter10', 'comhe/adversarial_projection/pd30_pn1_iter10'),
    ('mhe', 'baseline', 'mhe/baseline'),
    ('mhe', 'half_mhe_a2', 'mhe/half_mhe_a2'),
    ('random_projection', 'pd40_pnd4', None),
    ('angle_projection', 'pd30_pn1_iter10', None),   # AdvP's configuration name, not AP's
])
def test_authors_run_dir(variant, configuration, expected):
    found = authors.authors_run_dir(variant, configuration)
    assert (found.relative_to(AUTHORS).as_posix() if found else None) == expected


def test_every_paper_row_has_the_authors_run():
    assert len(authors.PAPER_ROWS) == 1 + 6 + 6 + 3
    for _, variant, configuration in authors.PAPER_ROWS:
        assert authors.authors_run_dir(variant, configuration) is not None


def test_identify_from_flags_file_before_path(tmp_path):
    run_dir = tmp_path / 'somewhere' / 'seed7'
    run_dir.mkdir(parents=True)
    assert authors.identify(run_dir) is None
    (run_dir / 'flags_00.json').write_text(json.dumps({'variant': 'adversarial_projection',
                                                       'configuration': 'pd30_pn1_iter10'}))
    assert authors.identify(run_dir) == ('adversarial_projection', 'pd30_pn1_iter10')
    assert authors.reference_for(run_dir) == AUTHORS / 'comhe/adversarial_projection/pd30_pn1_iter10'
    by_path = tmp_path / 'logs' / 'mhe' / 'half_mhe_2'
    by_path.mkdir(parents=True)
    assert authors.identify(by_path) == ('mhe', 'half_mhe_2')
    assert authors.reference_for(by_path) == AUTHORS / 'mhe/half_mhe_2'
    # The authors' own runs have no reference.
    assert authors.reference_for(AUTHORS / 'comhe/random_projection/pd40_pn20') is None


def test_summary_compares_with_the_authors_run_by_itself(tmp_path):
    run = make_run(tmp_path, 'pd40_pn20', 0.75)
    r = cli('summary', run)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[2] == ('| comhe/random_projection/pd40_pn20 (reference) | 74999 | 0.7559 | 0.7572 | 73000 '
                        '| 0.1133 | – | – |')
    assert lines[3].startswith('| random_projection/pd40_pn20 | 2999 | 0.7500 | 0.7500 | 2999 |')
    assert lines[3].endswith('| -0.0059 | -0.0072 |')
    # Switched off, and overridden.
    r = cli('summary', run, '--no-reference', '--csv')
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [x['role'] for x in rows] == ['run'] and 'diff_final' not in rows[0]
    r = cli('summary', run, '--reference', AUTHORS / 'mhe' / 'baseline', '--csv')
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [x['run'] for x in rows] == ['mhe/baseline', 'random_projection/pd40_pn20']
    assert rows[1]['diff_final'] == '+0.0526'   # 0.75 - 0.6974


def test_summary_of_an_unpublished_configuration_says_so(tmp_path):
    run = make_run(tmp_path, 'pd40_pn7', 0.6)
    r = cli('summary', run, '--csv')
    assert r.returncode == 0, r.stderr
    assert [x['role'] for x in csv.DictReader(io.StringIO(r.stdout))] == ['run']
    assert r.stderr.strip() == 'note: the authors published no run of random_projection/pd40_pn7; a plain summary'


def test_plot_draws_the_authors_run(tmp_path, monkeypatch):
    from common.compare import summary
    run = make_run(tmp_path, 'pd30_pn1_iter1', 0.7)
    run = run.parent.rename(run.parent.parent / 'angle_projection') / run.name
    drawn = []
    monkeypatch.setattr(summary, 'plot_runs', lambda runs, refs, out, title=None: drawn.append((runs, refs)) or out)
    assert summary.main(['plot', str(run), '-o', str(tmp_path / 'c.png')]) == 0
    assert summary.main(['plot', str(run), '--no-reference', '-o', str(tmp_path / 'c.png')]) == 0
    (runs, refs), (_, no_refs) = drawn
    assert [r.path for r in runs] == [run] and no_refs == []
    assert [r.path for r in refs] == [AUTHORS / 'comhe/angle_projection/pd30_pn1_iter1']
    assert refs[0].final_test_acc == 0.7513


def test_paper_table_with_and_without_our_runs(tmp_path):
    r = cli('paper', '--logs', tmp_path, '--csv')
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 16
    by_config = {row['configuration']: row for row in rows}
    assert (by_config['random_projection/pd40_pn20']['authors_final'],
            by_config['random_projection/pd40_pn20']['authors_best']) == ('0.7559', '0.7572')
    assert by_config['mhe/baseline']['authors_final'] == '0.6974'
    assert by_config['mhe/baseline']['authors_iters'] == '42500'
    assert by_config['mhe/half_mhe_2']['authors_final'] == '0.7399'
    assert by_config['adversarial_projection/pd30_pn1_iter10']['authors_best'] == '0.7483'
    assert all(row['ours_final'] == '' for row in rows)
    # A run of ours lands beside the authors' figure.
    make_run(tmp_path.parent / 'x', 'pd40_pn20', 0.75)
    shutil.move(str(tmp_path.parent / 'x' / 'logs' / 'random_projection'), str(tmp_path))
    r = cli('paper', '--logs', tmp_path)
    assert r.returncode == 0, r.stderr
    [line] = [x for x in r.stdout.splitlines() if 'random_projection/pd40_pn20' in x]
    assert line == ('| CoMHE random projection | random_projection/pd40_pn20 | 75,000 | 0.7559 | 0.7572 '
                    '| 2999 | 0.7500 | 0.7500 | -0.0059 |')


def test_nothing_refers_to_a_path_outside_the_repository():
    # A user's clone has nothing beside it: no tracked file may point at the developers' shared folder.
    files = subprocess.run(['git', 'ls-files'], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    this_file = 'tests/test_authors.py'
    # Spelt in pieces, so that this file does not name the path it looks for.
    outside = ('..' + '/shared', 'shared' + '/reference_logs', 'shared' + '/SPEC', "parent / 'shared'")
    hits = []
    for name in files:
        path = REPO_ROOT / name
        if name == this_file or path.suffix in ('.png', '.npz', '.gz') or not path.is_file():
            continue
        text = path.read_text(errors='replace')
        hits += [f'{name}: {needle}' for needle in outside if needle in text]
        # The protocol is docs/protocol.md; "SPEC" named a file only the developers have.
        hits += [f'{name}: SPEC'] if re.search(r'\bSPEC\b', text) else []
    assert hits == []
