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


CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def isolate_network():
    """Move this process into a network namespace of its own holding only loopback, up
    (unshare(2) with CLONE_NEWNET, which needs root or CAP_SYS_ADMIN; Linux). It takes
    the calling thread, the one that runs the tests, and every process it starts from
    then on: Ray's servers and workers, the sweep's driver, each train.py. There a
    connection to anything but loopback fails at once, whatever makes it (Ray's C++
    core included, which the audit hook of NETWORK_GUARD does not see).

    Returns None, or why the namespace could not be made (the caller keeps the hook)."""
    import ctypes
    import fcntl
    import os
    import socket
    import struct
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            return f'unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}'
    except (OSError, AttributeError) as e:
        return f'unshare(2) is not available: {e}'
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack('16sh', fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack('16sh', b'lo', 0)))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack('16sh', b'lo', flags | IFF_UP))
    interfaces = [name for _, name in socket.if_nameindex()]
    assert interfaces == ['lo'], f'the new network namespace holds {interfaces}'
    return None


def loopback_only_network():
    """For a module fixture of the tests that start servers: isolate_network(), or a
    warning saying why not (the audit hook of NETWORK_GUARD still logs and fails any
    connection off the machine that Python makes)."""
    import warnings
    reason = isolate_network()
    if reason is not None:
        warnings.warn(f'the Ray tests run without a network namespace of their own ({reason}); '
                      'only the audit hook watches their connections', stacklevel=2)
    return reason
