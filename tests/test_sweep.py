"""Sweeps on a local Ray (issue 14), end to end on the learnable fixture.

One sweep of 1 configuration x 2 seeds plus a run whose data train.py rejects runs
once, in a subprocess, as a user starts it; one of its train.py processes is killed
with SIGKILL mid-run. Then: the logs of each configuration's first seed equal the same
train.py command run by hand (in the test process; the killed one resumed with --resume), the rejected run
failed once while the others finished, nothing but loopback was contacted, a second
`run` starts nothing, and `status` and `table` agree with the run folders and with `common.compare summary`.
"""
import csv
import io
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

import pytest

from conftest import ROOT, train_in_process
from sweep_helpers import (assert_only_loopback, guarded_env, log_texts, loopback_only_network, sweep_cmd,
                           toml_value)

QUICK = dict(width=0.125, batch_size=16, base_lr=0.01, bn_zero_debias=True, max_iters=120,
             eval_every=40, ckpt_every=20)
CONFIGS = [('random_projection', dict(pd=40, pn=20), 'pd40_pn20')]   # published: the authors' row
SEEDS = (1, 2)
KILLED = ('random_projection', 'pd40_pn20', 1)
BAD = ('angle_projection', 'pd7_pn1_iter1', 1)       # not published; its data refused: train.py exits 2
BAD_MESSAGE = f'expected {"0" * 32}: the file is corrupted'   # the train pickle's md5 it is given

def sweep_file(path, fixture_flags, with_bad_run):
    data_dir, md5 = fixture_flags[1], fixture_flags[3]
    lines = ['name = "tiny"', f'seeds = {list(SEEDS)}', 'retries = 2', '[flags]',
             f'data_dir = {json.dumps(data_dir)}', f'data_md5 = {json.dumps(md5)}']
    lines += [f'{k} = {toml_value(v)}' for k, v in QUICK.items()]
    for entry, flags, _ in CONFIGS:
        lines += ['[[run]]', f'entry = "{entry}"',
                  'flags = { ' + ', '.join(f'{k} = {toml_value(v)}' for k, v in flags.items()) + ' }']
    if with_bad_run:
        # Flags train.py would refuse stop the sweep file itself; what only a run finds
        # (its data, here) fails that run.
        bad_md5 = ','.join('train=' + '0' * 32 if p.startswith('train=') else p for p in md5.split(','))
        lines += ['[[run]]', f'entry = "{BAD[0]}"', f'flags = {{ pd = 7, data_md5 = {json.dumps(bad_md5)} }}',
                  f'seeds = [{BAD[2]}]']
    path.write_text('\n'.join(lines) + '\n')
    return path


def hand_argv(fixture_flags, flags, seed, log_dir):
    """The command line a user types for one run (the sweep's flag order)."""
    argv = list(fixture_flags)
    for k, v in {**QUICK, **flags}.items():
        argv += [f'--{k}'] if v is True else [f'--{k}', str(v)]
    return argv + ['--random_seed', str(seed), '--log_dir', str(log_dir)]


def run_folder(logs, entry, configuration, seed):
    return logs / 'tiny' / f'seed{seed}' / entry / configuration


@pytest.fixture(scope='module', autouse=True)
def isolated():
    """This module's Ray (started by its sweeps) sees loopback only (sweep_helpers)."""
    return loopback_only_network()


@pytest.fixture(scope='module')
def sweep(cifar_fixture, tmp_path_factory):
    """The sweep, run once: a train.py SIGKILLed mid-run, a bad run; then the same commands by hand."""
    base = tmp_path_factory.mktemp('sweep')
    full = sweep_file(base / 'tiny.toml', cifar_fixture, with_bad_run=True)
    (base / 'good').mkdir()
    good = sweep_file(base / 'good' / 'tiny.toml', cifar_fixture, with_bad_run=False)
    env, net_log = guarded_env(base)
    logs = base / 'logs'
    started = time.time()
    proc = subprocess.Popen([sys.executable, '-m', 'common.sweep', 'run', str(full), '--log_dir', str(logs)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = run_folder(logs, *KILLED)
    killed_pid = None
    while time.time() - started < 400 and proc.poll() is None:
        try:
            state = json.loads((killed / 'sweep_state.json').read_text())
            logged = (killed / 'log_test_00.txt').read_text()
        except (OSError, ValueError):
            state, logged = {}, ''
        if state.get('state') == 'running' and '++++iter_40:' in logged:
            killed_pid = state['pid']
            os.kill(killed_pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=600)
    hand = base / 'hand'

    # The first seed of each configuration (the killed run among them), run in this
    # process as train.py runs it (tests/test_resume.py shows both give the same logs);
    # the second seeds differ from them by --random_seed alone.
    by_hand = {}
    for entry, flags, configuration in CONFIGS:
        log_dir = hand / f'seed{SEEDS[0]}' / entry
        assert train_in_process(entry, *hand_argv(cifar_fixture, flags, SEEDS[0], log_dir)) == 0
        by_hand[entry, SEEDS[0]] = log_texts(log_dir / configuration)
    return dict(code=proc.returncode, output=output, logs=logs, full=full, good=good, env=env,
                killed_pid=killed_pid, by_hand=by_hand, net_log=net_log, fixture=cifar_fixture)


def test_sweep_runs_equal_the_same_train_py_commands_by_hand(sweep):
    assert sweep['code'] == 1, sweep['output'][-3000:]          # 1: one run failed
    for entry, flags, configuration in CONFIGS:
        for seed in SEEDS:
            run_dir = run_folder(sweep['logs'], entry, configuration, seed)
            if seed == SEEDS[0]:
                assert log_texts(run_dir) == sweep['by_hand'][entry, seed], run_dir
            else:   # finished, and another run than the first seed's
                train, test = log_texts(run_dir)
                assert train.startswith('====iter_0:') and '++++iter_119:' in test
                assert [train, test] != sweep['by_hand'][entry, SEEDS[0]]
            state = json.loads((run_dir / 'sweep_state.json').read_text())
            assert state['state'] == 'done'
            # The command is the one typed by hand, with the sweep's --log_dir.
            first = (run_dir / 'sweep_output.txt').read_text().split('\n### ')[1].splitlines()[0]
            typed = shlex.join(['python', f'{entry}/train.py',
                                *hand_argv(sweep['fixture'], flags, seed, run_dir.parent)])
            assert first.endswith(f"attempt 1 on {os.uname().nodename}: CUDA_VISIBLE_DEVICES='' {typed}")
            assert sorted(p.name for p in run_dir.iterdir()) == [
                'checkpoints_00', 'flags_00.json', 'log_test_00.txt', 'log_train_00.txt',
                'sweep_output.txt', 'sweep_state.json', 'tensorboard_00', 'train_00.lock']


def test_a_killed_train_py_is_resumed_and_its_logs_equal_an_uninterrupted_run(sweep):
    assert sweep['killed_pid'] is not None, 'the run finished before it could be killed'
    run_dir = run_folder(sweep['logs'], *KILLED)
    output = (run_dir / 'sweep_output.txt').read_text()
    attempts = output.split('\n### ')[1:]
    assert len(attempts) == 2
    assert '--resume' not in attempts[0] and attempts[1].splitlines()[0].endswith(' --resume')
    assert 'resuming run 00 at iteration ' in attempts[1]
    state = json.loads((run_dir / 'sweep_state.json').read_text())
    host = os.uname().nodename
    assert state['attempts'] == 2 and state['last_failure'] == f'attempt 1 on {host}: killed by SIGKILL'
    resumed = int(attempts[1].split('resuming run 00 at iteration ')[1].split()[0])
    assert state['resumed_from'] == resumed
    # The sweep said so while it ran.
    run_id = 'seed{2}/{0}/{1}'.format(*KILLED)
    assert (f'{run_id}: attempt 1 on {host}: killed by SIGKILL; attempt 2 resumes it from '
            f'iteration {resumed} on {host}') in sweep['output']
    assert log_texts(run_dir) == sweep['by_hand'][KILLED[0], KILLED[2]]


def test_a_run_train_py_rejects_fails_once_while_the_others_finish(sweep):
    run_dir = run_folder(sweep['logs'], *BAD)
    state = json.loads((run_dir / 'sweep_state.json').read_text())
    assert state['state'] == 'failed' and state['attempts'] == 1
    assert 'exit code 2' in state['message'] and BAD_MESSAGE in state['message']
    assert (run_dir / 'sweep_output.txt').read_text().count('\n### ') == 1
    assert f'failed: seed1/{BAD[0]}/{BAD[1]} after 1 attempt(s): exit code 2' in sweep['output']
    assert '3 runs: 0 pending, 0 running, 2 done, 1 failed' in sweep['output']


def test_nothing_but_loopback_was_contacted(sweep):
    assert_only_loopback(sweep['net_log'], train_processes=4)    # 2 runs, 1 retry, 1 bad run


def snapshot(folder):
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob('*') if p.is_file()}


def test_a_second_run_of_a_finished_sweep_starts_nothing(sweep):
    before = snapshot(sweep['logs'])
    again = sweep_cmd('run', sweep['good'], '--log_dir', sweep['logs'], env=sweep['env'])
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'all 2 runs are done; nothing to start' in again.stdout
    # The commands it points to repeat the options that found the sweep's folder.
    assert f"(results: python -m common.sweep table {sweep['good']} --log_dir {sweep['logs']})" in again.stdout
    assert sweep['output'].rstrip().endswith(
        f"results: python -m common.sweep table {sweep['full']} --log_dir {sweep['logs']}; "
        f"each run: python -m common.sweep status {sweep['full']} --log_dir {sweep['logs']}")
    assert 'Ray:' not in again.stdout and snapshot(sweep['logs']) == before


def test_status_prints_every_run(sweep):
    out = sweep_cmd('status', sweep['full'], '--log_dir', sweep['logs'])
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split(None, 2)[1:] for line in out.stdout.splitlines()[1:-1]}
    host = os.uname().nodename
    for entry, _, configuration in CONFIGS:
        for seed in SEEDS:
            state, detail = lines[f'seed{seed}/{entry}/{configuration}']
            assert state == 'done' and detail.startswith('120 iterations (log index 00)')
            if (entry, configuration, seed) == KILLED:   # its attempts, and why the first ended
                resumed = json.loads((run_folder(sweep['logs'], *KILLED) / 'sweep_state.json')
                                     .read_text())['resumed_from']
                assert detail.endswith(f'[attempts: 2; last failure: attempt 1 on {host}: killed by '
                                       f'SIGKILL; resumed from iteration {resumed}]')
            else:
                assert detail == '120 iterations (log index 00)'
    state, message = lines[f'seed1/{BAD[0]}/{BAD[1]}']
    assert state == 'failed' and BAD_MESSAGE in message
    assert out.stdout.splitlines()[-1] == '3 runs: 0 pending, 0 running, 2 done, 1 failed'


def test_status_with_other_options_than_the_run_says_why_a_run_is_pending(sweep):
    out = sweep_cmd('status', sweep['good'], '--log_dir', sweep['logs'], '--max_iters', '60')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()[1:-1]
    assert len(lines) == 2 and all(line.split()[1] == 'pending' for line in lines)
    assert all('  its folder holds a run made with --max_iters 120; give the options the `run` had to see '
               'it, or `sweep run` starts a new one' in line for line in lines), lines   # (+ the attempts)


def compare_summary(run_dir):
    out = subprocess.run([sys.executable, '-m', 'common.compare', 'summary', str(run_dir), '--csv'],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    [row] = [r for r in csv.DictReader(io.StringIO(out.stdout)) if r['role'] == 'run']
    return float(row['final_test_acc']), float(row['best_test_acc'])


def test_table_numbers_equal_compare_summary_of_each_run(sweep, tmp_path):
    out = sweep_cmd('table', sweep['full'], '--log_dir', sweep['logs'], '--csv', '--out', tmp_path)
    assert out.returncode == 0, out.stderr
    data_dir = sweep['fixture'][1]
    assert (f"note: runs of this sweep use other data than CIFAR-100's official files ({data_dir}) and width "
            f"0.125 (the paper's network is 1.0): the authors' columns are their CIFAR-100 figures") in out.stderr
    rows = {r['configuration']: r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert list(rows) == [f'{e}/{c}' for e, _, c in CONFIGS] + [f'{BAD[0]}/{BAD[1]}']
    for entry, _, configuration in CONFIGS:
        row = rows[f'{entry}/{configuration}']
        finals, bests = zip(*(compare_summary(run_folder(sweep['logs'], entry, configuration, s))
                              for s in SEEDS))
        assert (row['seeds_done'], row['seeds']) == ('2', '2')
        assert row['final_mean'] == f'{statistics.fmean(finals):.4f}'
        assert row['final_std'] == f'{statistics.stdev(finals):.4f}'
        assert row['best_mean'] == f'{statistics.fmean(bests):.4f}'
        assert row['best_std'] == f'{statistics.stdev(bests):.4f}'
        assert finals[0] != finals[1] or bests[0] != bests[1]      # the seeds differ
    authors = compare_summary(ROOT / 'logs' / 'authors' / 'comhe' / 'random_projection' / 'pd40_pn20')
    row = rows['random_projection/pd40_pn20']
    assert (row['authors_final'], row['authors_best']) == \
        tuple(f'{a:.4f}' for a in authors)
    bad = rows[f'{BAD[0]}/{BAD[1]}']
    assert (bad['seeds_done'], bad['final_mean']) == ('0', '')
    assert bad['authors_final'] == ''      # not published
    assert (tmp_path / 'table.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (tmp_path / 'table.md').read_text().startswith('| configuration | seeds done | final test acc (mean) |')
