"""common.run.runlog: the writer's lines, log indices, and the reader on the authors'
reference logs (docs/protocol.md section 7 figures), on this project's format, and on
broken input (cut-off, empty, missing, garbage, binary)."""
import numpy as np
import pytest

from common import REPO_ROOT
from common.run import runlog
from common.run.runlog import LogError

REF = REPO_ROOT / 'logs' / 'authors'   # the authors' published logs, shipped with the repository



def _reference_files():
    return sorted(REF.rglob('log_*_??.txt'))


# --------------------------------------------------------------------------- reference logs

def test_every_reference_log_parses():
    files = _reference_files()
    assert len(files) >= 2 * 16  # 3 CoMHE + 13 MHE runs (as shipped), train and test each
    for path in files:
        if path.name.startswith('log_train_'):
            records = runlog.read_train_log(path)
            assert records and all(set(r) == {'iter', 'fit', 'reg', 'thom', 'thomf', 'acc'} for r in records)
            n_lines = sum(1 for line in path.read_text().splitlines() if line.strip())
            assert len(records) == n_lines, path
        else:
            records = runlog.read_test_log(path)
            n_lines = sum(1 for line in path.read_text().splitlines() if line.strip())
            assert len(records) == n_lines, path
            assert all(0.0 <= acc <= 1.0 for _, acc in records)


def test_every_reference_run_reads():
    runs = runlog.find_runs(REF)
    assert len(runs) >= 16
    for folder in runs:
        run = runlog.read_run(folder)
        assert run.indices == [0]
        assert run.last_iter in (74999, 42499)
        iters = [r['iter'] for r in run.train]
        assert iters == sorted(iters) and iters[-1] in (74900, 42400)


@pytest.mark.parametrize('rel, final, best', [
    ('comhe/random_projection/pd40_pn20', 0.7559, 0.7572),
    ('comhe/angle_projection/pd30_pn1_iter1', 0.7513, 0.7525),
    ('comhe/adversarial_projection/pd30_pn1_iter10', 0.7474, 0.7483),
    ('mhe/baseline', 0.6974, 0.7003),
    ('mhe/half_mhe_2', 0.7399, 0.7404),
])
def test_reference_figures_match_spec_section_7(rel, final, best):
    run = runlog.read_run(REF / rel)
    assert run.final_test_acc == final
    assert run.best_test_acc == best
    assert run.name == rel


def test_random_projection_reference_details():
    run = runlog.read_run(REF / 'comhe/random_projection/pd40_pn20')
    assert run.best_test_iter == 73000
    assert run.last_iter == 74999
    assert len(run.train) == 750 and len(run.test) == 150
    assert run.train[0] == dict(iter=0, fit=6.3621, reg=1.1871, thom=5.1348, thomf=5.0269, acc=0.0078)
    assert run.test[-1] == (74999, 0.7559)
    assert run.final_fit == 0.1133


def test_mhe_formats_short_train_lines_and_imclass_test_line():
    baseline = runlog.read_run(REF / 'mhe/baseline')
    assert baseline.train[0] == dict(iter=100, fit=9.1382, reg=1.2358, thom=None, thomf=None, acc=0.0078)
    assert all(r['thom'] is None and r['thomf'] is None for r in baseline.train)
    # the last test line is "++++iter_42499: test acc=0.6974 imclass acc=0.0880"
    assert baseline.test[-1] == (42499, 0.6974)
    assert baseline.last_iter == 42499
    half = runlog.read_run(REF / 'mhe/half_mhe_2')
    assert half.train[0]['thom'] == 5.0373 and half.train[0]['thomf'] == 4.9677


def test_read_run_from_a_single_file_finds_its_sibling():
    folder = REF / 'comhe/angle_projection/pd30_pn1_iter1'
    for name in ('log_train_00.txt', 'log_test_00.txt'):
        run = runlog.read_run(folder / name)
        assert len(run.train) == 750 and len(run.test) == 150
        assert run.final_test_acc == 0.7513
        assert run.name == 'comhe/angle_projection/pd30_pn1_iter1 [00]'


# --------------------------------------------------------------------------- writer

def test_writer_matches_the_spec_examples():
    assert (runlog.format_train_line(100, 9.13821, 1.21038, 0.015625, 5.03731, 4.96772)
            == '====iter_100: fit=9.1382, reg=1.2104, thom=5.0373, thomf=4.9677, acc=0.0156')
    assert (runlog.format_train_line(100, 9.1382, 1.2358, 0.0078125)
            == '====iter_100: fit=9.1382, reg=1.2358, acc=0.0078')
    assert runlog.format_test_line(500, 0.0898) == '++++iter_500: test acc=0.0898'
    assert runlog.format_test_line(np.int64(74999), np.float32(0.75594)) == '++++iter_74999: test acc=0.7559'
    with pytest.raises(ValueError):
        runlog.format_train_line(0, 1.0, 1.0, 0.5, thom=1.0)


def test_round_trip_full_and_short_format(tmp_path):
    rng = np.random.default_rng(0)
    train_path, test_path = runlog.log_paths(tmp_path, 0)
    expected, lines = [], []
    for k, it in enumerate(range(0, 2000, 100)):
        fit, reg, acc, thom, thomf = (np.float32(v) for v in rng.uniform(-2, 10, size=5))
        short = k % 3 == 0
        line = (runlog.format_train_line(it, fit, reg, acc) if short
                else runlog.format_train_line(it, fit, reg, acc, thom, thomf))
        lines.append(line)
        expected.append(dict(iter=it, fit=float(f'{fit:.4f}'), reg=float(f'{reg:.4f}'),
                             thom=None if short else float(f'{thom:.4f}'),
                             thomf=None if short else float(f'{thomf:.4f}'), acc=float(f'{acc:.4f}')))
    train_path.write_text('\n'.join(lines) + '\n')
    test_lines = [runlog.format_test_line(it, it / 10000.0) for it in (500, 1000, 1500, 1999)]
    test_path.write_text('\n'.join(test_lines) + '\n')

    got = runlog.read_train_log(train_path)
    assert got == expected
    # formatting the parsed values again gives the very same lines
    again = [runlog.format_train_line(r['iter'], r['fit'], r['reg'], r['acc'], r['thom'], r['thomf'])
             for r in got]
    assert again == lines
    assert runlog.read_test_log(test_path) == [(500, 0.05), (1000, 0.1), (1500, 0.15), (1999, 0.1999)]
    assert [runlog.format_test_line(*t) for t in runlog.read_test_log(test_path)] == test_lines


def test_log_paths_names():
    train, test = runlog.log_paths('some/run', 7)
    assert (train.name, test.name) == ('log_train_07.txt', 'log_test_07.txt')
    assert str(train.parent) == 'some/run'
    with pytest.raises(ValueError):
        runlog.log_paths('x', 100)


def test_next_log_index_never_overwrites(tmp_path):
    run_dir = tmp_path / 'pd40_pn20'
    assert runlog.next_log_index(run_dir) == 0          # folder not created yet
    assert runlog.latest_log_index(run_dir) is None
    run_dir.mkdir()
    for p in runlog.log_paths(run_dir, runlog.next_log_index(run_dir)):
        p.touch()
    assert runlog.next_log_index(run_dir) == 1
    assert runlog.latest_log_index(run_dir) == 0

    lone = tmp_path / 'lone'
    lone.mkdir()
    (lone / 'log_test_00.txt').write_text('')
    assert runlog.next_log_index(lone) == 1              # a lone test log counts as used
    (lone / 'log_train_02.txt').write_text('')
    assert runlog.next_log_index(lone) == 1              # first free index, gaps filled
    assert runlog.latest_log_index(lone) == 2
    (lone / 'notes.txt').write_text('not a log')
    (lone / 'log_train_5.txt').write_text('')            # not a two-digit index: ignored
    assert runlog.latest_log_index(lone) == 2


def test_next_log_index_when_all_are_used(tmp_path):
    for i in range(100):
        (tmp_path / f'log_train_{i:02d}.txt').touch()
    with pytest.raises(FileExistsError):
        runlog.next_log_index(tmp_path)


# --------------------------------------------------------------------------- reader, broken input

TRAIN = ['====iter_0: fit=6.3621, reg=1.1871, thom=5.1348, thomf=5.0269, acc=0.0078',
         '====iter_100: fit=9.0669, reg=1.2046, thom=5.1611, thomf=4.9647, acc=0.0156',
         '====iter_200: fit=9.2094, reg=1.0895, thom=5.1537, thomf=4.9595, acc=0.0000']


def test_cut_short_last_line_is_dropped(tmp_path):
    p = tmp_path / 'log_train_00.txt'
    p.write_text('\n'.join(TRAIN) + '\n' + '====iter_300: fit=9.0669, reg=0.99')
    got = runlog.read_train_log(p)
    assert [r['iter'] for r in got] == [0, 100, 200]
    assert got[2]['fit'] == 9.2094
    # a last number cut inside its decimals looks valid but is incomplete: dropped
    p.write_text('\n'.join(TRAIN) + '\n' + '====iter_300: fit=9.0669, reg=0.9901, acc=0.01')
    assert [r['iter'] for r in runlog.read_train_log(p)] == [0, 100, 200]
    q = tmp_path / 'log_test_00.txt'
    q.write_text('++++iter_500: test acc=0.0100\n++++iter_1000: test acc=0.01')
    assert runlog.read_test_log(q) == [(500, 0.01)]
    q.write_text('++++iter_500: test acc=0.0100\n++++it')
    assert runlog.read_test_log(q) == [(500, 0.01)]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    p = tmp_path / 'log_train_00.txt'
    p.write_text('\n'.join(TRAIN))
    assert [r['iter'] for r in runlog.read_train_log(p)] == [0, 100, 200]


def test_blank_lines_and_crlf_are_tolerated(tmp_path):
    p = tmp_path / 'log_train_00.txt'
    p.write_bytes(('\r\n'.join(TRAIN) + '\r\n\r\n').encode())
    assert [r['iter'] for r in runlog.read_train_log(p)] == [0, 100, 200]


def test_empty_missing_binary_and_garbage_raise_logerror(tmp_path):
    empty = tmp_path / 'log_train_00.txt'
    empty.write_text('')
    with pytest.raises(LogError, match=r'log_train_00\.txt: empty file'):
        runlog.read_train_log(empty)
    with pytest.raises(LogError, match='empty'):
        runlog.read_run(empty)
    with pytest.raises(LogError, match='no such file'):
        runlog.read_test_log(tmp_path / 'log_test_09.txt')
    with pytest.raises(LogError, match='no such file or folder'):
        runlog.read_run(tmp_path / 'nowhere')

    binary = tmp_path / 'bin' / 'log_train_00.txt'
    binary.parent.mkdir()
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(LogError, match='binary'):
        runlog.read_run(binary)

    garbage = tmp_path / 'junk' / 'log_train_00.txt'
    garbage.parent.mkdir()
    garbage.write_text('hello world\nthis is not a log\n')
    with pytest.raises(LogError, match=r'log_train_00\.txt, line 1: not a train log line'):
        runlog.read_run(garbage)
    with pytest.raises(LogError, match='not a train log line'):
        runlog.read_run(garbage.parent)
    one_word = tmp_path / 'log_test_03.txt'
    one_word.write_text('garbage')                     # no newline, not like a log line
    with pytest.raises(LogError, match='line 1: not a test log line'):
        runlog.read_test_log(one_word)


def test_bad_line_in_the_middle_is_reported_with_its_number(tmp_path):
    p = tmp_path / 'log_train_00.txt'
    p.write_text('\n'.join([TRAIN[0], '====iter_100: fit=oops', TRAIN[2]]) + '\n')
    with pytest.raises(LogError, match='line 2'):
        runlog.read_train_log(p)
    q = tmp_path / 'log_test_00.txt'
    q.write_text('\n'.join(TRAIN) + '\n')
    with pytest.raises(LogError, match=r'line 1: not a test log line \(it is a train log line\)'):
        runlog.read_test_log(q)


def test_nonstandard_file_name_is_rejected_clearly(tmp_path):
    p = tmp_path / 'my_log.txt'
    p.write_text('\n'.join(TRAIN) + '\n')
    with pytest.raises(LogError, match='not a log file name'):
        runlog.read_run(p)


# --------------------------------------------------------------------------- read_run on this project's folders

def _write(path, lines):
    path.write_text(''.join(line + '\n' for line in lines))


def _train(iters, fit=1.0):
    return [runlog.format_train_line(i, fit, 0.5, 0.25, 1.0, 2.0) for i in iters]


def _test(iters, acc):
    return [runlog.format_test_line(i, acc) for i in iters]


def test_run_in_progress_with_no_test_lines_yet(tmp_path):
    run_dir = tmp_path / 'logs' / 'random_projection' / 'pd40_pn20'
    run_dir.mkdir(parents=True)
    train, test = runlog.log_paths(run_dir, 0)
    _write(train, _train(range(0, 400, 100)))
    test.touch()                                   # created empty by the training loop
    run = runlog.read_run(run_dir)
    assert run.name == 'random_projection/pd40_pn20'
    assert run.test == [] and run.final_test_acc is None and run.best_test_iter is None
    assert run.last_iter == 300 and run.final_fit == 1.0
    train.write_text('')                           # both empty: nothing to read
    with pytest.raises(LogError, match='has the run just started'):
        runlog.read_run(run_dir)


def test_folder_merges_a_resumed_run(tmp_path):
    # index 00 ran to iteration 1200 and was killed; index 01 resumed from a checkpoint at 1000
    _write(tmp_path / 'log_train_00.txt', _train(range(0, 1300, 100), fit=2.0))
    _write(tmp_path / 'log_test_00.txt', _test([500, 1000], 0.1))
    _write(tmp_path / 'log_train_01.txt', _train(range(1000, 2000, 100), fit=1.0))
    _write(tmp_path / 'log_test_01.txt', _test([1000, 1500, 1999], 0.3))
    run = runlog.read_run(tmp_path)
    assert run.indices == [0, 1]
    assert [r['iter'] for r in run.train] == list(range(0, 2000, 100))
    assert [r['fit'] for r in run.train] == [2.0] * 10 + [1.0] * 10
    assert run.test == [(500, 0.1), (1000, 0.3), (1500, 0.3), (1999, 0.3)]
    # one file named: that index only
    assert runlog.read_run(tmp_path / 'log_test_00.txt').test == [(500, 0.1), (1000, 0.1)]


def test_folder_fresh_restart_replaces_earlier_attempt(tmp_path):
    _write(tmp_path / 'log_train_00.txt', _train(range(0, 3000, 100), fit=2.0))
    _write(tmp_path / 'log_test_00.txt', _test([500, 1000, 1500, 2000, 2500], 0.1))
    _write(tmp_path / 'log_train_01.txt', _train(range(0, 300, 100), fit=1.0))
    (tmp_path / 'log_test_01.txt').touch()
    run = runlog.read_run(tmp_path)
    assert [r['iter'] for r in run.train] == [0, 100, 200]
    assert run.test == [] and run.last_iter == 200


def test_lines_rewritten_in_the_same_file_replace_old_ones(tmp_path):
    lines = _train(range(0, 600, 100), fit=2.0) + _train(range(300, 800, 100), fit=1.0)
    _write(tmp_path / 'log_train_00.txt', lines)
    run = runlog.read_run(tmp_path)
    assert [(r['iter'], r['fit']) for r in run.train] == (
        [(0, 2.0), (100, 2.0), (200, 2.0)] + [(i, 1.0) for i in range(300, 800, 100)])


def test_folder_of_runs_is_not_a_run(tmp_path):
    run_dir = tmp_path / 'comhe' / 'pd40_pn20'
    run_dir.mkdir(parents=True)
    _write(run_dir / 'log_train_00.txt', _train([0]))
    with pytest.raises(LogError, match=r'no log_train_NN\.txt.*run folder\(s\) below it, e\.g\. pd40_pn20'):
        runlog.read_run(tmp_path / 'comhe')
    assert runlog.find_runs(tmp_path) == [run_dir]
