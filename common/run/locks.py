"""Locks that a killed process cannot leave held.

POSIX record locks (``fcntl.lockf``): the kernel releases one when its process
exits, however it exits (SIGKILL included), and an NFS server releases those of a
client machine that is lost. train.py holds one on its run while it writes
(``common.run.runstate``), and `sweep run` one on its sweep folder (``common.sweep``).

A POSIX lock belongs to a process and goes as soon as that process closes *any*
descriptor of the file. So the holder opens the lock file once and keeps it open
(writing who it is into it through that descriptor), and a process never probes
or reads a lock it may hold itself.
"""
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path


class Held:
    """A lock this process holds; ``release()`` (or the process's exit) lets it go."""

    def __init__(self, path, fd):
        self.path, self._fd = Path(path), fd

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def acquire(path, record=True):
    """Take the lock at ``path`` (the file is created) without waiting: a Held, or None
    while another process holds it. With ``record``, this host and pid are written into
    the file, for holder()."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):   # held by another process
            return None
        # ENOLCK and the like: a filesystem without locks (NFS without its lock service)
        # would read as 'held' for ever; say so instead.
        raise OSError(e.errno, f'cannot lock {path} ({e.strerror}): the filesystem does not support '
                               'POSIX locks; put the logs on one that does (a local disk, NFSv4, NFSv3 '
                               'with its lock service)') from None
    if record:
        text = json.dumps(dict(host=socket.gethostname(), pid=os.getpid(), since=time.time()))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (text + '\n').encode(), 0)
    return Held(path, fd)


def is_held(path):
    """Whether a process holds the lock at ``path`` (False where there is no such file).
    Never ask about a lock this process holds: the probe would release it."""
    if not Path(path).exists():
        return False
    probe = acquire(path, record=False)
    if probe is None:
        return True
    probe.release()
    return False


def holder(path):
    """'pid P on HOST since TIME' of the lock's holder, as it recorded itself."""
    try:
        record = json.loads(Path(path).read_text())
        since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['since']))
        return f"pid {record['pid']} on {record['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return 'another process'


def wait_until_free(path, timeout, poll=0.2):
    """Wait until no process holds the lock at ``path``; True if it is free within
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_held(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True
