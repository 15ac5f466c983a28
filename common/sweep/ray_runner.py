"""Run a sweep's unfinished runs as Ray tasks: on a local Ray started here, or on a cluster.

Local (the default): Ray starts with this machine's CPUs and GPUs, bound to the
loopback interface only (node address 127.0.0.1, no dashboard, no usage statistics,
and a proxy on a closed loopback port for the cloud-metadata probes Ray's helper
process makes with `requests`), so nothing leaves the machine. With ``address``,
the sweep joins an existing cluster (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others); the repository and the log folder must then be
at the same path on every machine (a shared filesystem). A cluster that cannot be
reached within ``connect_timeout`` seconds stops the sweep with exit code 2 and what
was tried (Ray itself would retry for ever). A loopback address (127.0.0.1:PORT,
localhost:PORT) of a head that answers on no other address of this machine (its nodes
run on loopback) is joined on loopback, with the local guards; Ray alone would look
for it at this machine's network address and retry for ever.

Each run is one task needing ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs
(fractions pack several runs on one GPU); Ray reruns a task whose worker or machine
died (``max_retries``), and the task resumes from the run folder. Ctrl-C cancels the
tasks: each sends its train.py SIGTERM, which writes a checkpoint; a second Ctrl-C
stops waiting for them.
"""
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import sys
import threading
import time

from common import REPO_ROOT
from common.run import locks
from common.sweep import runstatus, task
from common.sweep.progress import Display

LOOPBACK = '127.0.0.1'
CLOSED_PORT_PROXY = 'http://127.0.0.1:9'
# Set in this process before Ray starts (inherited by its processes); each train.py
# gets the user's values back (task.child_env).
LOCAL_GUARD_ENV = {
    'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER': '0',   # node address from loopback, no outside probe
    'RAY_USAGE_STATS_ENABLED': '0',
    'http_proxy': CLOSED_PORT_PROXY, 'https_proxy': CLOSED_PORT_PROXY,
    'HTTP_PROXY': CLOSED_PORT_PROXY, 'HTTPS_PROXY': CLOSED_PORT_PROXY,
    'no_proxy': 'localhost,127.0.0.1,::1', 'NO_PROXY': 'localhost,127.0.0.1,::1',
}
# Ray sets it for its workers; train.py gets the user's value (or none), as by hand.
RAY_SET_ENV = ('OMP_NUM_THREADS',)
CONNECT_TIMEOUT_S = 30.0   # --connect-timeout's default
CONNECT_FIXES = ('the usual causes: the head is not started (`ray start --head --port PORT` on it), '
                 'a wrong host or port (the head prints the address to join), or a firewall between '
                 'this machine and the head; a head on this machine answers at 127.0.0.1:PORT. '
                 '--connect-timeout sets how long to try')
SIOCGIFADDR = 0x8915


class ClusterUnreachable(RuntimeError):
    """The Ray cluster of --address did not answer; the message says what was tried."""


def host_and_port(address):
    """(host, port) of HOST:PORT or ray://HOST:PORT, or None (``auto``, no port)."""
    rest = address.split('://', 1)[-1]
    host, _, port = rest.rpartition(':')
    if not host or not port.isdigit():
        return None
    return host.strip('[]'), int(port)


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def own_addresses():
    """This machine's IPv4 addresses but loopback, read from its interfaces (Linux; no
    traffic)."""
    found = []
    for _, name in socket.if_nameindex():
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack('256s', name.encode()[:15]))
        except OSError:   # no IPv4 address on it
            continue
        address = socket.inet_ntoa(packed[20:24])
        if not ipaddress.ip_address(address).is_loopback:
            found.append(address)
    return found


def head_on_loopback_only(port):
    """Whether the head at 127.0.0.1:``port`` answers on none of this machine's other
    addresses: then its nodes run on loopback, and the driver must join there."""
    for address in own_addresses():
        try:
            socket.create_connection((address, port), timeout=1.0).close()
            return False
        except OSError:
            continue
    return True


def start_ray(address=None, num_cpus=None, num_gpus=None, connect_timeout=CONNECT_TIMEOUT_S):
    """Start a local Ray (address None) or join a cluster; returns the env to restore in
    train.py. Raises ClusterUnreachable when the cluster does not answer in time."""
    restore = {key: os.environ.get(key) for key in RAY_SET_ENV}
    target = host_and_port(address) if address is not None else None
    if target is not None:
        _probe(address, *target, connect_timeout)
    on_loopback = address is None or (target is not None and is_loopback(target[0])
                                      and head_on_loopback_only(target[1]))
    if on_loopback:
        restore.update({key: os.environ.get(key) for key in LOCAL_GUARD_ENV})
        os.environ.update(LOCAL_GUARD_ENV)
    import ray
    if on_loopback:
        # Read once when Ray is imported: a Ray imported before this (in a test, say) would
        # otherwise take this machine's interface address for 127.0.0.1.
        import ray._private.ray_constants as ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False
    # The workers import common.sweep.task from this repository (same path on every machine).
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    runtime_env = {'env_vars': {'PYTHONPATH': os.pathsep.join(paths)}}
    if address is None:
        ray.init(address='local', num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 _node_ip_address=LOOPBACK, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env=runtime_env)
        return restore
    kwargs = dict(_node_ip_address=LOOPBACK) if on_loopback else {}
    _join(address, connect_timeout, log_to_driver=False, logging_level=logging.WARNING,
          runtime_env=runtime_env, **kwargs)
    return restore


def _probe(address, host, port, timeout):
    """A TCP connection to the head: a closed port or an unknown host fails at once."""
    try:
        socket.create_connection((host, port), timeout=min(timeout, 10.0)).close()
    except OSError as e:
        raise ClusterUnreachable(f'cannot reach the Ray cluster at {address}: a TCP connection to '
                                 f'{host}:{port} failed ({e}); {CONNECT_FIXES}') from None


def _join(address, timeout, **kwargs):
    """ray.init(address), given ``timeout`` seconds: Ray retries for ever, and a ray.init
    under way cannot be stopped, so a watchdog ends the process (exit code 2, with what
    was tried) if it has not joined by then."""
    import ray
    decided = threading.Lock()   # whoever takes it first, the join or the watchdog, decides

    def give_up():
        if not decided.acquire(blocking=False):
            return                 # joined meanwhile
        print(f'error: cannot reach the Ray cluster at {address}: its port answers, but joining it '
              f'(ray.init) did not finish within {timeout:g} s; {CONNECT_FIXES}', file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(2)
    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:   # noqa: BLE001 (any failure to join, reported with the address)
        raise ClusterUnreachable(f'cannot join the Ray cluster at {address}: {e}; {CONNECT_FIXES}') from e
    finally:
        watchdog.cancel()
    if not decided.acquire(blocking=False):   # the watchdog is exiting the process
        threading.Event().wait()


# Held by `sweep run` while it runs (common.run.locks): a second `sweep run` of the same
# sweep is refused, and a killed one leaves nothing stuck (the kernel releases it).
DRIVER_LOCK = 'sweep_driver.lock'
DRIVER_LOCK_WAIT_S = 3.0   # a `status` probing the lock holds it for an instant


def driver_alive(sweep_folder):
    """Whether a `sweep run` of this sweep is running (it holds the sweep's lock, on this
    machine or another sharing the folder). Never asked by that `sweep run` itself."""
    return locks.is_held(sweep_folder / DRIVER_LOCK)


def take_driver_lock(sweep_folder):
    """The sweep's lock, or None while another `sweep run` holds it."""
    sweep_folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + DRIVER_LOCK_WAIT_S
    while True:
        held = locks.acquire(sweep_folder / DRIVER_LOCK)
        if held is not None or time.monotonic() >= deadline:
            return held
        time.sleep(0.1)


def rows_of(specs, finished):
    """[(run_id, state, detail)] for the display: finished tasks' results, else the files."""
    rows = []
    for spec in specs:
        if spec.run_id in finished:
            result = finished[spec.run_id]
            rows.append((spec.run_id, result['state'], result['message']))
            continue
        state, detail = runstatus.state_of(spec, driver_alive=True)
        if state not in ('running', 'waiting', 'done'):
            state, detail = 'pending', ''
        rows.append((spec.run_id, state, detail))
    return rows


def run_sweep(sweep, address=None, gpus_per_run=None, cpus_per_run=1.0, num_cpus=None,
              num_gpus=None, display=None, connect_timeout=CONNECT_TIMEOUT_S):
    """Run every run of ``sweep`` that is not done; returns the exit code
    (0 all done, 1 some failed, 130 stopped by Ctrl-C)."""
    display = display or Display()
    todo = [s for s in sweep.runs if runstatus.disk_state(s).kind != 'done']
    done_before = len(sweep.runs) - len(todo)
    if not todo:
        display.message(f'{sweep.path}: all {len(sweep.runs)} runs are done; nothing to start '
                        f'(results: {sweep.command("table")})')
        return 0
    held = take_driver_lock(sweep.folder)
    if held is None:
        print(f'error: another `sweep run` of this sweep is running '
              f'({locks.holder(sweep.folder / DRIVER_LOCK)}); two would train the same runs at '
              f'once. Wait for it, or stop it with Ctrl-C', file=sys.stderr)
        return 2
    with held:
        return _run_locked(sweep, todo, done_before, address, gpus_per_run, cpus_per_run,
                           num_cpus, num_gpus, display, connect_timeout)


def _run_locked(sweep, todo, done_before, address, gpus_per_run, cpus_per_run, num_cpus,
                num_gpus, display, connect_timeout):
    display.message(f'{sweep.path}: {len(todo)} of {len(sweep.runs)} runs to run '
                    f'({done_before} done before), in {sweep.folder}')
    restore = start_ray(address, num_cpus, num_gpus, connect_timeout)
    import ray
    try:
        resources = ray.cluster_resources()
        cpus, gpus = resources.get('CPU', 0), resources.get('GPU', 0)
        if gpus_per_run is None:
            gpus_per_run = 1.0 if gpus > 0 else 0.0
        if gpus_per_run > gpus or cpus_per_run > cpus:
            print(f'error: each run needs {cpus_per_run:g} CPU(s) and {gpus_per_run:g} GPU(s), and '
                  f'this Ray has {cpus:g} CPUs and {gpus:g} GPUs; lower --cpus-per-run / '
                  f'--gpus-per-run (--gpus-per-run 0 trains on the CPU)', file=sys.stderr)
            return 2
        display.message(f'Ray: {cpus:g} CPUs, {gpus:g} GPUs; each run takes {cpus_per_run:g} CPU(s) '
                        f'and {gpus_per_run:g} GPU(s)')
        remote = ray.remote(task.run_to_completion).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=sweep.retries,
            retry_exceptions=False)
        pending = {}
        for spec in todo:
            runstatus.mark_queued(spec.run_dir)
            pending[remote.remote(spec, sweep.retries, gpus_per_run, restore)] = spec
        return _wait(sweep, pending, display)
    finally:
        ray.shutdown()


def _wait(sweep, pending, display):
    import ray
    finished, attempts_seen = {}, {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                spec = pending.pop(ref)
                finished[spec.run_id] = _result(ref, spec)
            for spec in pending.values():
                _say_if_resumed(spec, attempts_seen, display)
            display.update(rows_of(sweep.runs, finished))
    except KeyboardInterrupt:
        display.message('stopping: each running train.py gets SIGTERM and writes its checkpoint '
                        '(Ctrl-C again to stop waiting); run the same command again to continue')
        for ref in pending:
            ray.cancel(ref)
        try:
            _wait_stopped(pending.values())
        except KeyboardInterrupt:
            pass
        display.update(rows_of(sweep.runs, finished), final=True)
        return 130
    display.update(rows_of(sweep.runs, finished), final=True)
    failed = [r for r in finished.values() if r['state'] != 'done']
    for result in failed:
        display.message(f"failed: {result['run_id']} after {result['attempts']} attempt(s): {result['message']}")
    display.message(f'results: {sweep.command("table")}; each run: {sweep.command("status")}')
    return 1 if failed else 0


def _say_if_resumed(spec, attempts_seen, display):
    """A line when a run starts again after its train.py died or its node was lost."""
    record = runstatus.read_state(spec.run_dir)
    attempt = record.get('attempt')
    if record.get('state') != 'running' or attempt is None or attempts_seen.get(spec.run_id) == attempt:
        return
    attempts_seen[spec.run_id] = attempt
    if record.get('last_failure') and 'resumed_from' in record:
        display.message(f"{spec.run_id}: {record['last_failure']}; attempt {attempt} resumes it "
                        f"from iteration {record['resumed_from']} on {record.get('host', '?')}")


def _wait_stopped(specs, timeout=task.STOP_WAIT_S):
    """Until no cancelled run is still running (each writes 'stopped' once train.py exited)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(runstatus.read_state(s.run_dir).get('state') != 'running' for s in specs):
            return
        time.sleep(0.5)


def _result(ref, spec):
    """A finished task's result; a task Ray gave up on (worker or machine lost) is failed."""
    import ray
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        message = f'Ray gave up on the task: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
        runstatus.write_state(spec.run_dir, state='failed', message=message)
        return dict(run_id=spec.run_id, state='failed', message=message, attempts=None)
