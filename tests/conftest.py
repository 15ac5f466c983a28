"""Shared test set-up: quiet TensorFlow, the repository on sys.path, and a
fresh compat.v1 graph + session fixture."""
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow in this process and the processes it starts:
# - one thread per pool: make test runs two workers on two cores, and TensorFlow's
#   spinning pools of two threads each then only get in each other's way;
# - no graph optimisation (common.tf1_engine.training.session_config): each new session call of a
#   small CPU graph starts seconds sooner.
#   The end-to-end train.py runs (test_train_entry.py) and the one-call P-step parity
#   (test_feed.py) run with it, as a user's run does.
TEST_TF_ENV = {'TF_NUM_INTRAOP_THREADS': '1', 'TF_NUM_INTEROP_THREADS': '1', 'COMHE_GRAPPLER': '0'}
for _name, _value in TEST_TF_ENV.items():
    os.environ.setdefault(_name, _value)
ROOT = Path(__file__).resolve().parent.parent
TRAIN_SITE = ROOT / 'tests' / 'train_site'   # see train_env()
# tests/helpers/ is on sys.path (pytest.ini; the scripts of tests/scripts/ put it there)

import pytest
import tensorflow.compat.v1 as tf

import loopback_only
from common.data import cifar
from common.data import cifar_fixture as cf


# Tests never send traffic off the machine: in this process a connection to
# anything but loopback fails the test; subprocesses get proxies on a closed
# loopback port (urllib honours them), so a download attempt there fails at once.
NO_NETWORK_ENV = {'http_proxy': 'http://127.0.0.1:9', 'https_proxy': 'http://127.0.0.1:9',
                  'HTTP_PROXY': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9',
                  'no_proxy': '', 'NO_PROXY': ''}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    loopback_only.patch(monkeypatch)


@pytest.fixture
def session():
    """A session on a new graph; ops built inside the test go into that graph."""
    graph = tf.Graph()
    from common.tf1_engine.training import session_config
    with graph.as_default(), tf.Session(graph=graph, config=session_config()) as sess:
        yield sess


VARIANTS = ('random_projection', 'angle_projection', 'adversarial_projection')


def load_entry_point(variant):
    """Import ``<variant>/train.py`` as a module (its __main__ block does not run)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'{variant}_train', ROOT / variant / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry_flags(module, *argv):
    """The flags a train.py would parse from ``argv``."""
    from common.run import config
    return config.build_parser('', module.VARIANT, module.DEFAULTS).parse_args(list(argv))


@pytest.fixture(scope='session')
def cifar_fixture(tmp_path_factory):
    """A small learnable CIFAR-100-format archive and the flags that load it."""
    from common.data.cifar_fixture import write_cifar100_archive
    data_dir = tmp_path_factory.mktemp('cifar')
    info = write_cifar100_archive(data_dir, n_train=500, n_test=200, n_classes=10, seed=0)
    return ['--data_dir', str(data_dir), '--data_md5', info['data_md5']]


# The default fixture archive (500 train, 200 test images, 10 classes) and what it loads to,
# once per test module: tests/test_data.py and tests/test_pipeline.py.
@pytest.fixture(scope='module')
def fixture(tmp_path_factory):
    return cf.write_cifar100_archive(tmp_path_factory.mktemp('fixture_src'))


@pytest.fixture(scope='module')
def loaded(fixture, tmp_path_factory):
    d = tmp_path_factory.mktemp('loaded')
    shutil.copy(fixture['archive'], d)
    return cifar.load_cifar100(d, download=False, **md5s(fixture))


def md5s(info):
    return dict(archive_md5=info['archive_md5'], file_md5=info['file_md5'])


def subprocess_env():
    """The environment of a subprocess: quiet, on the CPU, no network."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='', **NO_NETWORK_ENV)


def train_env():
    """subprocess_env() for a train.py (or other TensorFlow-only) process: without the
    optional imports it never uses (tests/train_site/sitecustomize.py)."""
    return dict(subprocess_env(), PYTHONPATH=str(TRAIN_SITE))


def bench_env():
    """The whole environment of a benchmark subprocess (bench/*.py --quick): quiet, on the
    CPU, the tests' TensorFlow settings, without the optional imports."""
    return {'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': '', 'PATH': '/usr/bin:/bin',
            'PYTHONPATH': str(TRAIN_SITE), **TEST_TF_ENV}


def run_train(variant, *argv, cwd=None, timeout=300, env=(), **popen):
    """Run ``<variant>/train.py`` in a real subprocess (from its folder by default),
    in train_env() updated with ``env``."""
    import subprocess
    cwd = ROOT / variant if cwd is None else cwd
    script = (ROOT / variant / 'train.py').relative_to(cwd) if cwd == ROOT else 'train.py'
    return subprocess.run([sys.executable, str(script), *argv], cwd=cwd, env=dict(train_env(), **dict(env)),
                          capture_output=True, text=True, timeout=timeout, **popen)


def train_in_process(variant, *argv):
    """``<variant>/train.py argv`` run in this process (its ``entry.main``): the same
    flags, graph and logs as the subprocess, without starting Python and TensorFlow
    again for each run. For tests of what a run computes; tests of the command line
    itself use run_train."""
    from common import entry
    module = load_entry_point(variant)
    return entry.main(module.__doc__, module.VARIANT, module.DEFAULTS, module.terms, list(argv))


def graph_terms_of(module, flags):
    """The entry point's TF1 hooks (``build_graph``'s keyword arguments) for ``flags``."""
    from common.tf1_engine.terms import graph_terms
    return graph_terms(module.terms(flags))


# make test runs the files on two workers (pytest-xdist, --dist loadfile, no reordering),
# each file on one, in collection order: the slowest first (measured, 2-core machine), so
# that the two workers finish together. Files not listed follow in their usual order.
SLOWEST_FIRST = ('test_keras_engine.py', 'test_resume.py', 'test_feed.py', 'test_wheel.py', 'test_bench.py',
                 'test_keras_comhe.py', 'test_sweep.py', 'test_sweep_cluster.py',
                 'test_train_entry.py', 'test_training_graph.py', 'test_tf1_idiom.py',
                 'test_run_failures.py', 'test_mhe.py', 'test_digits.py',
                 'test_release_fidelity.py')


# The library's tests run against the installed wheel (test_wheel.py), not this checkout.
collect_ignore = ['library']


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: order kept within
