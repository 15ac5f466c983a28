"""What the sweep tests share (tests/test_sweep.py, tests/test_sweep_cluster.py): the
loopback guard loaded by every process of a sweep, the commands, the logs compared."""
import json
import subprocess
import sys

from conftest import ROOT, subprocess_env

# Loaded by every Python process of the sweep (driver, Ray's processes and workers,
# train.py): records each one, and any connection, datagram or name lookup that is not
# for this machine.
NETWORK_GUARD = '''
import os, sys
_log = os.environ.get('SWEEP_TEST_NET_LOG')
if _log:
    import ipaddress, socket

    def _local(host):
        if isinstance(host, bytes):
            host = host.decode()
        if host in (None, '', 'localhost', socket.gethostname()):
            return True
        try:
            return ipaddress.ip_address(str(host).split('%')[0]).is_loopback
        except ValueError:
            return False

    def _hook(event, args):
        host = None
        if event in ('socket.connect', 'socket.sendto'):
            sock, address = args[0], args[-1]
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host = address[0]
        elif event == 'socket.getaddrinfo':
            host = args[0]
        if host is not None and not _local(host):
            with open(_log, 'a') as f:
                f.write(f'{os.getpid()} {event} {host!r} {" ".join(sys.argv[:1])}\\n')

    with open(_log + '.loaded', 'a') as f:
        f.write(f'{os.getpid()} {" ".join(sys.argv[:1])}\\n')
    sys.addaudithook(_hook)
'''


def toml_value(value):
    return 'true' if value is True else json.dumps(value)


def guarded_env(base):
    """(environment, network log) for a sweep's processes: every Python process of the sweep
    (driver, Ray's processes and workers, train.py) loads the guard from ``base/guard``."""
    guard = base / 'guard'
    guard.mkdir()
    # The guard, and the train.py processes' sitecustomize (only one is loaded).
    train_site = (ROOT / 'tests' / 'train_site' / 'sitecustomize.py').read_text()
    (guard / 'sitecustomize.py').write_text(NETWORK_GUARD + train_site)
    net_log = base / 'network.log'
    return dict(subprocess_env(), PYTHONPATH=str(guard), SWEEP_TEST_NET_LOG=str(net_log)), net_log


def assert_only_loopback(net_log, train_processes):
    """The guard was in the driver, Ray's helper and worker processes and every train.py,
    and none of them contacted anything but this machine."""
    loaded = (net_log.parent / (net_log.name + '.loaded')).read_text()
    assert 'default_worker.py' in loaded       # Ray's workers (its helper processes too, Ray 2.60)
    assert loaded.count('train.py') >= train_processes
    assert not net_log.exists(), net_log.read_text()


def sweep_cmd(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, '-m', 'common.sweep', *map(str, args)], cwd=ROOT,
                          env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)


def log_texts(run_dir):
    return [(run_dir / f'log_{k}_00.txt').read_text() for k in ('train', 'test')]
