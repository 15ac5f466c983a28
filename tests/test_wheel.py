"""The library as a user installs it: the wheel built from this checkout (without
build isolation: nothing is downloaded), installed into a fresh virtual environment
outside the repository, whose other packages (PyTorch, JAX, Keras, NumPy) come from
this environment through a .pth file rather than being downloaded again. From a
folder outside the repository it runs the library's tests (tests/library, copied
there with their helpers) and the two examples against the installed copy, so
a file missing from the package fails here."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import NO_NETWORK_ENV, ROOT

LIBRARY_TESTS = ROOT / 'tests' / 'library'
HELPERS = tuple(ROOT / 'tests' / 'helpers' / name
                for name in ('numpy_oracle.py', 'float32_bound.py', 'loopback_only.py'))


def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'KERAS_BACKEND', 'PYTHONHOME')}
    env.update(NO_NETWORK_ENV)
    return env


def run(cmd, cwd, timeout=600):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, \
        f'{cmd} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}'
    return result.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(the fresh venv's python, a work folder outside the repository)."""
    work = tmp_path_factory.mktemp('wheel')
    assert ROOT not in work.parents
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', work / 'dist',
         ROOT], cwd=work)
    (wheel,) = (work / 'dist').glob('comhe-*.whl')
    run([sys.executable, '-m', 'venv', work / 'venv'], cwd=work)
    python = work / 'venv' / 'bin' / 'python'
    site = Path(run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], cwd=work).strip())
    (site / 'dependencies.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', wheel], cwd=work)
    return python, work


def test_installed_copy_is_used_from_any_folder(installed):
    python, work = installed
    out = run([python, '-c', 'import comhe, comhe.torch, comhe.jax, keras_comhe; '
               'print(comhe.__file__); print(keras_comhe.__file__); print(comhe.__version__)'], cwd=work)
    comhe_file, keras_file, version = out.split()
    for path in (comhe_file, keras_file):
        assert Path(path).is_relative_to(work / 'venv'), path
    assert re.fullmatch(r'\d+\.\d+\.\d+', version)
    # The library alone: not the reproduction, the benchmarks or the tests.
    listing = run([python, '-m', 'pip', 'show', '-f', 'comhe'], cwd=work)
    for folder in ('common/', 'bench/', 'tests/', 'experiments/'):
        assert folder not in listing


def test_library_tests_pass_on_the_installed_copy(installed):
    python, work = installed
    tests = work / 'tests'
    tests.mkdir()
    for path in [*LIBRARY_TESTS.glob('*.py'), *HELPERS]:
        shutil.copy(path, tests)
    out = run([python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', tests], cwd=work)
    assert re.search(r'\d+ passed', out) and 'failed' not in out, out[-2000:]


def windows(out):
    """(losses, energies [windows, layers], test accuracy) from an example's output."""
    rows = re.findall(r'step +\d+ +loss ([\d.]+) +energies ([\d. ]+)', out)
    losses = np.array([float(loss) for loss, _ in rows])
    energies = np.array([[float(e) for e in es.split()] for _, es in rows])
    accuracy = float(re.search(r'test accuracy ([\d.]+)', out).group(1))
    return losses, energies, accuracy


@pytest.mark.parametrize('example,method', [('torch_digits.py', 'rp'), ('jax_digits.py', 'advp')])
def test_examples_train_from_another_folder(installed, example, method):
    """As written (300 steps): the loss falls tenfold, every regularised layer's energy
    ends lower than in the first window, and the held-out accuracy passes 0.9."""
    python, work = installed
    out = run([python, ROOT / 'examples' / example, '--method', method], cwd=work)
    losses, energies, accuracy = windows(out)
    assert len(losses) == 6 and energies.shape == (6, 4), out
    assert losses[-1] < losses[0] / 10, out
    assert (energies[-1] < energies[0]).all(), out
    assert accuracy > 0.9, out
