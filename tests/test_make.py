"""`make venv` chooses TensorFlow with or without its CUDA libraries: by whether
nvidia-smi answers, or by GPU=0|1 (a dry run of make, with a fake nvidia-smi)."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='make is not installed')


def dry_run(tmp_path, smi_answers, *args):
    """The commands `make -n venv` would run, with an nvidia-smi on PATH that answers
    (exit 0, lists a GPU) or fails (exit 9, as without a driver), into a venv in tmp_path."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / 'nvidia-smi'
    smi.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-0)"\n' if smi_answers
                   else '#!/bin/sh\nexit 9\n')
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    env.pop('GPU', None)
    return subprocess.run(['make', '-n', 'venv', f'VENV={tmp_path / "venv"}', *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('smi_answers, args, chosen', [
    (True, (), 'requirements-gpu.txt'),
    (False, (), 'requirements-dev.txt'),
    (True, ('GPU=0',), 'requirements-dev.txt'),
    (False, ('GPU=1',), 'requirements-gpu.txt'),
])
def test_make_venv_installs_cuda_where_a_driver_answers_or_as_told(tmp_path, smi_answers, args, chosen):
    out = dry_run(tmp_path, smi_answers, *args)
    assert out.returncode == 0, out.stderr
    installs = [line for line in out.stdout.splitlines() if 'pip install -r' in line]
    assert len(installs) == 1 and installs[0].endswith(f'pip install -r {chosen}'), out.stdout
    gpu = '1' if chosen == 'requirements-gpu.txt' else '0'
    assert f'touch {tmp_path / "venv"}/.installed-gpu{gpu}' in out.stdout


def test_the_gpu_requirements_are_the_cpu_ones_plus_tensorflow_with_cuda():
    lines = [line.strip() for line in (ROOT / 'requirements-gpu.txt').read_text().splitlines()
             if line.strip() and not line.startswith('#')]
    assert lines[0] == '-r requirements-dev.txt'
    assert [line for line in lines[1:] if line.startswith('tensorflow')] == ['tensorflow[and-cuda]>=2.16,<3']
    tf_cpu = [line for line in (ROOT / 'requirements.txt').read_text().splitlines()
              if line.startswith('tensorflow')]
    assert tf_cpu == ['tensorflow>=2.16,<3']   # the same versions either way


def test_a_python_older_than_3_11_stops_make_venv_before_it_creates_anything(tmp_path):
    old = tmp_path / 'python3.10'
    old.write_text('#!/bin/sh\nexec python3 -c "import sys; sys.exit(1)"\n')   # as 3.10 answers the check
    old.chmod(0o755)
    out = subprocess.run(['make', 'venv', f'VENV={tmp_path / "venv"}', f'PYTHON={old}', 'GPU=0'], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f'{old} is missing or older than Python 3.11' in out.stderr
    assert 'make venv PYTHON=python3.11' in out.stderr
    assert not (tmp_path / 'venv').exists()


def test_a_bad_gpu_value_stops_make_with_the_choices(tmp_path):
    out = dry_run(tmp_path, True, 'GPU=yes')
    assert out.returncode != 0
    assert 'GPU=yes: use GPU=1 (TensorFlow with CUDA) or GPU=0 (without)' in out.stderr
