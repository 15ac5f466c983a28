"""Sweep files (issue 14): what a run's command line is, and bad files stopping before
anything starts with the file, the entry and the problem; the shipped sweeps; the
table of a sweep not started yet; the progress display. No Ray, no training here."""
import csv
import io
import subprocess
import sys

import pytest

from common.sweep import sweepfile
from common.sweep.progress import Display
from conftest import ROOT, subprocess_env

GOOD = '''
name = "s"
seeds = [1, 2]
[flags]
max_iters = 50
width = 0.25
[[run]]
entry = "random_projection"
flags = { pd = 8, pn = 2, base_lr = 0.05, bn_zero_debias = true }
[[run]]
entry = "mhe"
flags = { model_name = "half_mhe", power_s = "a1" }
seeds = [7]
'''


def write(tmp_path, text, name='s.toml'):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_runs_get_the_flags_a_user_would_type(tmp_path):
    sweep = sweepfile.load(write(tmp_path, GOOD), log_root=tmp_path / 'logs', overrides={'width': 0.5})
    assert sweep.folder == tmp_path / 'logs' / 's'
    assert [r.run_id for r in sweep.runs] == ['seed1/random_projection/pd8_pn2', 'seed2/random_projection/pd8_pn2',
                                              'seed7/mhe/half_mhe_a1']
    rp = sweep.runs[0]
    # [flags], then the entry's, the command line's override in place, then seed and folder.
    assert rp.command() == ['python', 'random_projection/train.py', '--max_iters', '50', '--width', '0.5',
                            '--pd', '8', '--pn', '2', '--base_lr', '0.05', '--bn_zero_debias',
                            '--random_seed', '1', '--log_dir', str(sweep.folder / 'seed1' / 'random_projection')]
    assert rp.run_dir == sweep.folder / 'seed1' / 'random_projection' / 'pd8_pn2'
    assert (rp.flags.pd, rp.flags.width, rp.flags.bn_zero_debias, rp.flags.variant) == \
        (8, 0.5, True, 'random_projection')
    assert sweep.runs[2].flags.power_s == 'a1' and sweep.runs[2].flags.random_seed == 7
    assert [(label, len(runs)) for label, _, _, runs in sweep.rows] == [
        ('random_projection/pd8_pn2', 2), ('mhe/half_mhe_a1', 1)]


def test_a_named_entry_tells_apart_two_entries_of_one_configuration(tmp_path):
    text = GOOD + '[[run]]\nentry = "random_projection"\nname = "lr0.01"\nflags = { pd = 8, pn = 2, base_lr = 0.01 }\n'
    sweep = sweepfile.load(write(tmp_path, text), log_root=tmp_path)
    named = sweep.runs[-1]
    assert named.run_id == 'seed2/lr0.01/random_projection/pd8_pn2'
    assert named.run_dir == tmp_path / 's' / 'seed2' / 'lr0.01' / 'random_projection' / 'pd8_pn2'


BAD_FILES = [
    ('entry = "random_projection"', 'entry = "random_projektion"',
     "run 1: unknown entry point 'random_projektion'; one of random_projection, angle_projection"),
    ('pd = 8, pn = 2,', 'pdd = 8, pn = 2,',
     "run 1 (random_projection): unknown flag 'pdd' for random_projection/train.py; its flags: "),
    ('pd = 8,', 'pd = "8",', "run 1 (random_projection): flag 'pd' must be an integer, got str '8'"),
    ('width = 0.25', 'width = "wide"', "run 1 (random_projection): flag 'width' must be a number, got str"),
    ('bn_zero_debias = true', 'bn_zero_debias = 1', "flag 'bn_zero_debias' must be true or false, got int 1"),
    ('power_s = "a1"', 'power_s = "a3"', "run 2 (mhe): flag 'power_s' is 'a3'; one of 0, 1, 2, a0, a1, a2"),
    ('seeds = [7]', 'seeds = [7, 7]', 'run 2 (mhe): seeds: seed 7 is listed twice (a duplicate run)'),
    ('seeds = [7]', 'seeds = []', 'run 2 (mhe): seeds: seeds must be a non-empty list of integers'),
    ('max_iters = 50', 'random_seed = 3',
     "run 1 (random_projection): flag 'random_seed' is set by the sweep (give seeds"),
    ('max_iters = 50', 'log_dir = "x"', "flag 'log_dir' is set by the sweep"),
    ('name = "s"', 'nmae = "s"', "unknown key 'nmae'"),
    ('name = "s"', 'name = "a/b"', 'name must be a folder name'),
    ('[flags]', '[flag]', "unknown key 'flag'"),
    ('seeds = [1, 2]', 'seeds = "1, 2"', 'seeds: seeds must be a non-empty list of integers'),
    ('max_iters = 50', 'max_iters = 50\nmax_iters = 60', 'not valid TOML'),
    # Values train.py would refuse at its start: refused before anything starts.
    ('width = 0.25', 'width = 0', "run 1 (random_projection): --width must be in (0, 16], got 0"),
    ('max_iters = 50', 'max_iters = 50\nkeras_backend = "jax"',
     'run 1 (random_projection): --keras_backend jax chooses the backend of --engine keras; add --engine keras'),
    ('max_iters = 50', 'max_iters = 50\nengine = "keras"\nkeras_backend = "mxnet"',
     "flag 'keras_backend' is 'mxnet'; one of jax, tensorflow, torch"),
]


@pytest.mark.parametrize('old,new,message', BAD_FILES)
def test_a_bad_sweep_file_names_the_file_the_entry_and_the_problem(tmp_path, old, new, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(sweepfile.SweepFileError) as e:
        sweepfile.load(path, log_root=tmp_path / 'logs')
    assert str(e.value).startswith(str(path)) and message in str(e.value), str(e.value)


DUPLICATES = [
    # The same configuration twice: the same run folders.
    ('[[run]]\nentry = "mhe"\nflags = { model_name = "half_mhe", power_s = "a1" }\nseeds = [7]\n',
     'run 3 (mhe): duplicate run: seed 7 of mhe/half_mhe_a1 is also in run 2'),
    # Flags that differ without changing the configuration folder.
    ('[[run]]\nentry = "random_projection"\nflags = { pd = 8, pn = 2, base_lr = 0.5 }\n',
     'run 3 (random_projection): duplicate run: seed 1 of random_projection/pd8_pn2 is also in run 1'),
    # The same configuration with other seeds: one row each would be ambiguous.
    ('[[run]]\nentry = "mhe"\nflags = { model_name = "half_mhe", power_s = "a1" }\nseeds = [8]\n',
     'run 3 (mhe): duplicate run: configuration mhe/half_mhe_a1 is also run 2'),
]


@pytest.mark.parametrize('extra,message', DUPLICATES)
def test_duplicate_runs_are_refused(tmp_path, extra, message):
    with pytest.raises(sweepfile.SweepFileError) as e:
        sweepfile.load(write(tmp_path, GOOD + extra), log_root=tmp_path)
    assert message in str(e.value), str(e.value)


def sweep_cli(*args):
    return subprocess.run([sys.executable, '-m', 'common.sweep', *map(str, args)], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)


def test_a_bad_sweep_file_stops_the_command_before_anything_starts(tmp_path):
    path = write(tmp_path, GOOD.replace('pd = 8', 'pd = 8.5'))
    for command in ('run', 'status', 'table'):
        out = sweep_cli(command, path, '--log_dir', tmp_path / 'logs')
        assert out.returncode == 2
        assert out.stderr == f"error: {path}, run 1 (random_projection): flag 'pd' must be an integer, got float 8.5\n"
        assert not (tmp_path / 'logs').exists()
    missing = sweep_cli('run', tmp_path / 'nope.toml')
    assert missing.returncode == 2 and missing.stderr == f'error: {tmp_path / "nope.toml"}: no such sweep file\n'


@pytest.mark.parametrize('name,runs,rows', [('paper', 48, 16), ('ablation_pd_pn', 28, 14)])
def test_the_shipped_sweeps_are_valid(name, runs, rows, tmp_path):
    sweep = sweepfile.load(ROOT / 'sweeps' / f'{name}.toml', log_root=tmp_path)
    assert (sweep.name, len(sweep.runs), len(sweep.rows)) == (name, runs, rows)


def test_the_fixture_sweep_loads_what_its_comment_has_one_write(tmp_path):
    from common.data.cifar_fixture import write_cifar100_archive
    text = (ROOT / 'sweeps' / 'fixture_demo.toml').read_text()
    assert '.venv/bin/python -m common.cifar_fixture data/fixture' in text   # with its defaults
    sweep = sweepfile.load(ROOT / 'sweeps' / 'fixture_demo.toml', log_root=tmp_path)
    assert (len(sweep.runs), len(sweep.rows)) == (10, 5)
    assert f'data_md5 = "{write_cifar100_archive(tmp_path)["data_md5"]}"' in text


def test_the_paper_sweep_is_the_papers_comparison_with_the_release_defaults(tmp_path):
    from common.compare.authors import PAPER_ROWS
    sweep = sweepfile.load(ROOT / 'sweeps' / 'paper.toml', log_root=tmp_path)
    assert [(entry, config) for _, entry, config, _ in sweep.rows] == [(v, c) for _, v, c in PAPER_ROWS[-3:]] + \
        [(v, c) for _, v, c in PAPER_ROWS[:-3]]
    # The first seed of each row is the entry point's default: `python <entry>/train.py` + the row's flags.
    from common.sweep.sweepfile import entry_parser
    for _, entry, _, specs in sweep.rows:
        assert specs[0].seed == entry_parser(entry).get_default('random_seed')


def test_table_of_a_sweep_not_started_has_every_row_with_the_authors_figures(tmp_path):
    out = sweep_cli('table', ROOT / 'sweeps' / 'paper.toml', '--log_dir', tmp_path, '--csv')
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 16 and all((r['seeds_done'], r['seeds'], r['final_mean']) == ('0', '3', '') for r in rows)
    by_name = {r['configuration']: r for r in rows}
    # docs/protocol.md section 7's figures.
    assert by_name['random_projection/pd40_pn20']['authors_final'] == '0.7559'
    assert by_name['adversarial_projection/pd30_pn1_iter10']['authors_best'] == '0.7483'
    assert by_name['mhe/half_mhe_2']['authors_final'] == '0.7399'
    assert (tmp_path / 'paper' / 'table.png').is_file() and (tmp_path / 'paper' / 'table.csv').read_text() == out.stdout


ROWS = [('seed1/a', 'done', '120 iterations'), ('seed1/b', 'running', 'iteration 400/1000, ETA 0h00m10s'),
        ('seed2/a', 'pending', ''), ('seed2/b', 'failed', 'exit code 2: bad flag')]


def test_progress_as_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    display = Display(out=out, tty=False, every_s=3600)
    display.update(ROWS)
    display.update(ROWS)                      # nothing changed: nothing printed
    display.update(ROWS[:1] + ROWS[2:] + [('seed1/b', 'done', '')])   # seed1/b done: its line and the counts
    display.update(ROWS[:1] + ROWS[2:] + [('seed1/b', 'done', '')], final=True)   # the same: not again
    lines = out.getvalue().splitlines()
    assert [line.split('] ', 1)[1] for line in lines] == [
        'seed1/a: done, 120 iterations', 'seed1/b: running, iteration 400/1000, ETA 0h00m10s',
        'seed2/b: failed, exit code 2: bad flag', '4 runs: 1 pending, 1 running, 1 done, 1 failed',
        'seed1/b: done', '4 runs: 1 pending, 0 running, 2 done, 1 failed']


def test_progress_in_place_on_a_terminal():
    out = io.StringIO()
    display = Display(out=out, tty=True)
    display.update(ROWS)
    display.update(ROWS[:1] + [('seed1/b', 'done', '')] + ROWS[2:])
    first, second = out.getvalue().split('\x1b[J', 1)
    assert '4 runs: 1 pending, 1 running, 1 done, 1 failed' in first and 'seed1/b: running, iteration 400/1000' in first
    assert second.startswith('\x1b[3F')       # back over the 3 lines drawn, then redrawn
    assert '4 runs: 1 pending, 0 running, 2 done, 1 failed' in second and 'seed1/b' not in second


def test_a_running_runs_iteration_and_eta_come_from_its_current_attempts_output(tmp_path):
    from common.sweep import runstatus
    out = tmp_path / runstatus.OUTPUT_FILE
    out.write_text('### 2026-01-01 00:00:00 attempt 1 on vm: ...\nlogs: x\n'
                   '====iter_0: fit=7.0408, reg=0.1931, acc=0.0000  [starting]\n'
                   '====iter_100: fit=0.2558, reg=0.1946, acc=1.0000  [213 img/s, ETA 0h00m01s]\n'
                   '++++iter_119: test acc=0.1000\n')
    assert runstatus.progress(tmp_path) == (100, '0h00m01s')
    with open(out, 'a') as f:
        f.write('### 2026-01-01 00:01:00 attempt 2 on vm: ... --resume\nresuming run 00 at iteration 43\n')
    assert runstatus.progress(tmp_path) == (None, None)        # nothing of the new attempt yet


def test_a_run_interrupted_twice_keeps_its_attempts_and_last_failure(tmp_path):
    from common.sweep import runstatus
    runstatus.write_state(tmp_path, state='running', attempt=3, last_failure='attempt 2 on vm: killed by SIGKILL',
                          resumed_from=40)
    runstatus.mark_queued(tmp_path)      # a sweep run, which then dies before the run starts
    runstatus.mark_queued(tmp_path)      # the next one
    record = runstatus.read_state(tmp_path)
    assert record['state'] == 'queued' and record['interrupted']['attempt'] == 3
    assert runstatus.attempts_note(record) == \
        '  [attempts: 3; last failure: attempt 2 on vm: killed by SIGKILL; resumed from iteration 40]'
