"""A sweep on a real multi-node Ray cluster under faults (docs/sweeps.md).

A cluster of a head and three one-CPU worker nodes on this machine, on loopback
(tests/scripts/ray_cluster.py, Ray's own ray.cluster_utils.Cluster), runs a sweep of
2 runs through `python -m common.sweep run --address`, as a user joins a cluster:

1. the worker node of the first run is killed (all its processes, SIGKILL) mid-run:
   Ray reruns the run on another node, which resumes it from its last checkpoint;
2. then the sweep's driver is killed with SIGKILL mid-run: every train.py stops (its
   worker dies, it checkpoints), and the same command again finishes the sweep, while
   a third `sweep run` of it is refused.

Each run's logs then equal, byte for byte, the same train.py command run by hand
without faults, and nothing but loopback was contacted.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, train_in_process
from sweep_helpers import (assert_only_loopback, guarded_env, log_texts, loopback_only_network, sweep_cmd,
                           toml_value)

QUICK = dict(width=0.125, batch_size=16, base_lr=0.01, bn_zero_debias=True, max_iters=120,
             eval_every=40, ckpt_every=20)
ENTRY, FLAGS, CONFIGURATION = 'random_projection', dict(pd=40, pn=20), 'pd40_pn20'
SEEDS = (1, 2)
# The cluster's processes find their node address on loopback, and send no usage statistics.
CLUSTER_ENV = {'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER': '0', 'RAY_USAGE_STATS_ENABLED': '0'}


def write_sweep(path, fixture_flags):
    data_dir, md5 = fixture_flags[1], fixture_flags[3]
    lines = ['name = "cluster"', f'seeds = {list(SEEDS)}', 'retries = 3', '[flags]',
             f'data_dir = {json.dumps(data_dir)}', f'data_md5 = {json.dumps(md5)}']
    lines += [f'{k} = {toml_value(v)}' for k, v in QUICK.items()]
    lines += ['[[run]]', f'entry = "{ENTRY}"',
              'flags = { ' + ', '.join(f'{k} = {toml_value(v)}' for k, v in FLAGS.items()) + ' }']
    path.write_text('\n'.join(lines) + '\n')
    return path


def hand_argv(fixture_flags, seed, log_dir):
    argv = list(fixture_flags)
    for k, v in {**QUICK, **FLAGS}.items():
        argv += [f'--{k}'] if v is True else [f'--{k}', str(v)]
    return argv + ['--random_seed', str(seed), '--log_dir', str(log_dir)]


def state(run_dir):
    try:
        return json.loads((run_dir / 'sweep_state.json').read_text())
    except (OSError, ValueError):
        return {}


def logged_tests(run_dir):
    try:
        return (run_dir / 'log_test_00.txt').read_text()
    except OSError:
        return ''


def wait_for(condition, what, timeout=240, proc=None):
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f'waiting for {what}: the sweep ended first:\n{proc.stdout.read()[-3000:]}')
        if time.time() > deadline:
            raise AssertionError(f'waiting for {what}: not within {timeout} s')
        time.sleep(0.05)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) has stopped writing.
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.fixture(scope='module', autouse=True)
def isolated():
    """The cluster, the drivers and their runs see loopback only (sweep_helpers)."""
    return loopback_only_network()


@pytest.fixture(scope='module')
def faults(cifar_fixture, tmp_path_factory):
    base = tmp_path_factory.mktemp('cluster')
    # The driver joins at 127.0.0.1:PORT with no variable of Ray's set: `sweep run` puts
    # itself on loopback for a loopback address (without that, Ray took this machine's
    # interface address for 127.0.0.1 and retried for ever).
    env, net_log = guarded_env(base)
    env = {key: value for key, value in env.items() if key not in CLUSTER_ENV}
    cluster_env = dict(env, **CLUSTER_ENV)
    sweep = write_sweep(base / 'cluster.toml', cifar_fixture)
    logs = base / 'logs'
    runs = {seed: logs / 'cluster' / f'seed{seed}' / ENTRY / CONFIGURATION for seed in SEEDS}
    first = runs[SEEDS[0]]
    cluster = subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'scripts' / 'ray_cluster.py'), '3'],
                               cwd=ROOT, env=cluster_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = {}
    try:
        info = json.loads(cluster.stdout.readline())
        command = [sys.executable, '-m', 'common.sweep', 'run', str(sweep), '--log_dir', str(logs),
                   '--address', info['address']]
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        # 1. Lose the node of the first run once it has a checkpoint past iteration 40.
        wait_for(lambda: state(first).get('state') == 'running' and '++++iter_40:' in logged_tests(first),
                 'the first run at iteration 40', proc=driver)
        node = state(first)['node']
        [lost] = [i for i, w in enumerate(info['workers']) if w.startswith(node)]
        cluster.stdin.write(f'remove {lost}\n')
        cluster.stdin.flush()
        assert cluster.stdout.readline().strip() == f'removed {lost}'
        seen['lost_node'] = node
        # 2. Kill the driver once the run resumed elsewhere has gone on to iteration 80.
        wait_for(lambda: state(first).get('attempt') == 2 and '++++iter_80:' in logged_tests(first),
                 'the first run resumed on another node, at iteration 80', proc=driver)
        seen['resumed_on'] = state(first)['node']
        seen['pids'] = [state(r).get('pid') for r in runs.values() if state(r).get('state') == 'running']
        driver.kill()
        seen['first_output'] = driver.communicate(timeout=60)[0]
        # Every train.py of the dead driver's runs stops (its worker dies; it checkpoints).
        wait_for(lambda: not any(alive(pid) for pid in seen['pids']), 'the train.py processes to exit',
                 timeout=120)
        # 3. The same command again, and a third while it runs.
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: state(first).get('attempt') == 3, 'the first run resumed again', proc=driver)
        seen['third'] = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        seen['status_running'] = sweep_cmd('status', sweep, '--log_dir', logs, env=env)
        seen['second_output'] = driver.communicate(timeout=400)[0]
        seen['code'] = driver.returncode
        for name in ('first_output', 'second_output'):   # kept for a failure's post-mortem
            (base / f'{name}.txt').write_text(seen[name])
    finally:
        if cluster.poll() is None:
            cluster.stdin.write('quit\n')
            cluster.stdin.flush()
            try:
                cluster.wait(timeout=60)
            except subprocess.TimeoutExpired:
                cluster.kill()
    by_hand = {}
    for seed in SEEDS:
        log_dir = base / 'hand' / f'seed{seed}'
        assert train_in_process(ENTRY, *hand_argv(cifar_fixture, seed, log_dir)) == 0
        by_hand[seed] = log_texts(log_dir / CONFIGURATION)
    return dict(seen, runs=runs, by_hand=by_hand, net_log=net_log, sweep=sweep, logs=logs, env=env)


def test_every_run_ends_done_with_the_logs_of_a_run_without_faults(faults):
    assert faults['code'] == 0, faults['second_output'][-3000:]
    for seed, run_dir in faults['runs'].items():
        assert state(run_dir)['state'] == 'done'
        assert log_texts(run_dir) == faults['by_hand'][seed], run_dir


def test_a_run_on_a_lost_node_is_rerun_elsewhere_and_resumed(faults):
    first = faults['runs'][SEEDS[0]]
    assert faults['resumed_on'] != faults['lost_node']
    attempts = (first / 'sweep_output.txt').read_text().split('\n### ')[1:]
    heads = [a.splitlines()[0] for a in attempts if a.split(' ', 2)[-1].startswith('attempt')]
    assert len(heads) == 3 and '--resume' not in heads[0]
    assert all(h.endswith(' --resume') for h in heads[1:])
    resumed = [int(a.split('resuming run 00 at iteration ')[1].split()[0])
               for a in attempts if 'resuming run 00 at iteration ' in a]
    assert len(resumed) == 2 and 40 <= resumed[0] < resumed[1]
    # The display said when and where it died, from where it resumed and the attempt.
    assert (f'seed1/{ENTRY}/{CONFIGURATION}: attempt 1 on {os.uname().nodename} (node '
            f"{faults['lost_node']}): its Ray worker or node was lost; attempt 2 resumes it from "
            f'iteration {resumed[0]} on ') in faults['first_output']
    assert (f'seed1/{ENTRY}/{CONFIGURATION}: attempt 2 on {os.uname().nodename} (node '
            f"{faults['resumed_on']}): its sweep driver died; attempt 3 resumes it from "
            f'iteration {resumed[1]} on ') in faults['second_output']
    record = state(first)
    assert record['attempts'] == 3 and record['resumed_from'] == resumed[1]


def test_a_killed_driver_leaves_no_train_py_and_no_stuck_lock(faults):
    assert faults['pids'] and not any(alive(pid) for pid in faults['pids'])
    third = faults['third']
    assert third.returncode == 2
    assert 'error: another `sweep run` of this sweep is running (pid ' in third.stderr


def test_status_shows_attempts_and_the_last_failure(faults):
    out = faults['status_running']
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stdout.splitlines() if x.startswith(f'seed1/{ENTRY}/')]
    assert ' running ' in line and '[attempts: 3; last failure: attempt 2 on ' in line
    assert 'its sweep driver died; resumed from iteration ' in line
    final = sweep_cmd('status', faults['sweep'], '--log_dir', faults['logs'], env=faults['env'])
    assert final.stdout.splitlines()[-1] == '2 runs: 0 pending, 0 running, 2 done, 0 failed'


def test_nothing_but_loopback_was_contacted_on_the_cluster(faults):
    assert_only_loopback(faults['net_log'], train_processes=4)


def test_an_unreachable_cluster_stops_the_sweep_within_the_bound(tmp_path):
    """`sweep run --address` of a closed port stops at once, of a port that answers but is no
    Ray head after --connect-timeout: exit code 2, the address, what was tried and the fixes,
    nothing started (Ray alone would retry for ever)."""
    import socket
    import threading
    sweep = tmp_path / 's.toml'
    sweep.write_text('name = "s"\nseeds = [1]\n[[run]]\nentry = "mhe"\n')
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        closed = probe.getsockname()[1]
    start = time.monotonic()
    out = sweep_cmd('run', sweep, '--log_dir', tmp_path / 'logs', '--address', f'127.0.0.1:{closed}',
                    '--connect-timeout', '5', timeout=120)
    assert out.returncode == 2, out.stderr
    assert f'error: cannot reach the Ray cluster at 127.0.0.1:{closed}: a TCP connection' in out.stderr
    assert 'the head is not started' in out.stderr and time.monotonic() - start < 30
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(64)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(silent.accept()) for _ in range(64)], daemon=True).start()
    try:
        start = time.monotonic()
        out = sweep_cmd('run', sweep, '--log_dir', tmp_path / 'logs', '--address',
                        f'127.0.0.1:{silent.getsockname()[1]}', '--connect-timeout', '3', timeout=120)
        took = time.monotonic() - start
    finally:
        silent.close()
    assert out.returncode == 2, out.stderr
    assert 'joining it (ray.init) did not finish within 3 s' in out.stderr and 3 <= took < 30, (took, out.stderr)
    assert not list((tmp_path / 'logs' / 's').glob('seed*'))      # no run was started


@pytest.mark.parametrize('address, loopback_only, joins_on_loopback', [
    ('127.0.0.1:6379', True, True),       # nodes on loopback (as the test cluster's)
    ('127.0.0.1:6379', False, False),     # a head that answers at this machine's address too
    ('head.invalid:6379', True, False)])  # another machine
def test_which_address_joins_on_loopback(monkeypatch, address, loopback_only, joins_on_loopback):
    """127.0.0.1:PORT of a head whose nodes run on loopback: the driver's node address is
    loopback and Ray's reading of 127.0.0.1 as this machine's network address is off, with
    no variable set by the user; any other head joins as Ray would. (ray.init and the
    probes stubbed: nothing is contacted.)"""
    import ray
    import ray._private.ray_constants as ray_constants
    from common.sweep import ray_runner
    calls = {}
    monkeypatch.setattr(ray, 'init', lambda **kwargs: calls.update(kwargs))
    monkeypatch.setattr(ray_runner, '_probe', lambda *args: None)
    monkeypatch.setattr(ray_runner, 'head_on_loopback_only', lambda port: loopback_only)
    for key in ray_runner.LOCAL_GUARD_ENV:      # recorded, so that teardown puts each back as it was
        monkeypatch.setenv(key, 'recorded')
        monkeypatch.delenv(key)
    monkeypatch.setattr(ray_constants, 'ENABLE_RAY_CLUSTER', True)
    ray_runner.start_ray(address, connect_timeout=5)
    assert calls['address'] == address
    assert ('_node_ip_address' in calls) == joins_on_loopback == (not ray_constants.ENABLE_RAY_CLUSTER)
    assert ('RAY_USAGE_STATS_ENABLED' in os.environ) == joins_on_loopback
    assert ray_runner.host_and_port('ray://[::1]:10001') == ('::1', 10001)
    assert ray_runner.host_and_port('auto') is None
