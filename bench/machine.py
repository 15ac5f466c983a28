"""The machine a benchmark ran on, and how busy the rest of it was (bench/step_time.py,
bench/feed.py)."""
import os
import platform
import time

import numpy as np
import tensorflow.compat.v1 as tf


class MachineLoad:
    """CPU time used by other processes while a phase ran (from /proc/stat)."""

    def __enter__(self):
        self.wall, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_cpu()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        busy = _busy_seconds() - self.busy if self.busy is not None else float('nan')
        own = _own_cpu() - self.own
        self.result = {'wall_s': wall, 'own_cpu_cores': own / wall,
                       'other_cpu_cores': max(0.0, busy - own) / wall}
        return False


def _busy_seconds():
    try:
        fields = [float(v) for v in open('/proc/stat').readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def _own_cpu():
    t = os.times()
    return t.user + t.system


def machine():
    info = {'platform': platform.platform(), 'python': platform.python_version(),
            'tensorflow': tf.__version__, 'numpy': np.__version__, 'cpu_count': os.cpu_count(),
            'date': time.strftime('%Y-%m-%d %H:%M:%S %z')}
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                info['cpu'] = line.split(':', 1)[1].strip()
                break
        for line in open('/proc/meminfo'):
            if line.startswith('MemTotal'):
                info['memory_gb'] = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    info['gpu'] = bool(tf.config.list_physical_devices('GPU'))
    return info
