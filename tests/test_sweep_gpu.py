"""GPU choice of a train.py (issue 14): --gpu_no sets CUDA_VISIBLE_DEVICES; without it an
inherited CUDA_VISIBLE_DEVICES (the GPU Ray gave a sweep run) stands, else GPU 0; and
--gpu_no is not a training flag, so a --resume on another GPU is allowed."""
import pytest

from common.run import config, runstate
from conftest import entry_flags, load_entry_point


def parse(tmp_path, *argv):
    module = load_entry_point('random_projection')
    return config.parse('', module.VARIANT, module.DEFAULTS, [*argv, '--log_dir', str(tmp_path)])


@pytest.mark.parametrize('inherited,argv,visible', [
    (None, [], '0'),                       # the release's default
    ('3', [], '3'),                        # a scheduler's choice stands
    ('', [], ''),                          # an inherited "no GPU" stands too
    ('3', ['--gpu_no', '1'], '1'),         # an explicit flag wins
    (None, ['--gpu_no', '0,1'], '0,1'),
])
def test_gpu_no_and_inherited_cuda_visible_devices(monkeypatch, tmp_path, inherited, argv, visible):
    if inherited is None:
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    else:
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', inherited)
    parse(tmp_path, *argv)
    import os
    assert os.environ['CUDA_VISIBLE_DEVICES'] == visible


def test_gpu_no_is_not_a_flag_that_blocks_resume(monkeypatch, tmp_path):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0')
    first = parse(tmp_path, '--gpu_no', '2')
    files = runstate.new_run(tmp_path / config.run_name(first))
    files.run_dir.mkdir()
    runstate.save_flags(files, first, config.run_name(first))
    again = entry_flags(load_entry_point('random_projection'), '--log_dir', str(tmp_path), '--gpu_no', '5')
    again.variant = first.variant
    assert 'gpu_no' not in runstate.TRAINING_FLAGS
    assert runstate.changed_flags(files, again) == []


def test_a_sweep_run_trains_on_the_gpu_ray_gave_it_with_the_users_environment(monkeypatch):
    from common.sweep import task
    # In a Ray task with GPUs, Ray has set CUDA_VISIBLE_DEVICES to the GPU(s) it assigned.
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '1')
    assert task.visible_gpus(0.25) == '1'
    assert task.visible_gpus(0) == ''              # a CPU run hides the GPUs
    # Ray's OMP_NUM_THREADS and the loopback guard's proxies go back to the user's values.
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.setenv('http_proxy', 'http://127.0.0.1:9')
    env = task.child_env({'OMP_NUM_THREADS': None, 'http_proxy': 'http://proxy.example:3128'}, '1')
    assert 'OMP_NUM_THREADS' not in env and env['http_proxy'] == 'http://proxy.example:3128'
    assert env['CUDA_VISIBLE_DEVICES'] == '1'
    assert 'XLA_PYTHON_CLIENT_PREALLOCATE' not in env   # a whole GPU: the backends' own defaults


def test_runs_that_share_a_gpu_take_its_memory_as_they_need_it(monkeypatch):
    from common.sweep import task
    monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE', raising=False)
    monkeypatch.setenv('TF_FORCE_GPU_ALLOW_GROWTH', 'false')   # the user's choice stands
    env = task.child_env({}, '0', shares_gpu=True)
    assert env['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false' and env['TF_FORCE_GPU_ALLOW_GROWTH'] == 'false'


FAKE_TRAIN = '''import json, os, sys
from pathlib import Path
keys = ('CUDA_VISIBLE_DEVICES', 'XLA_PYTHON_CLIENT_PREALLOCATE', 'TF_FORCE_GPU_ALLOW_GROWTH')
Path(sys.argv[1], 'env.json').write_text(json.dumps({k: os.environ.get(k) for k in keys}))
'''


@pytest.mark.parametrize('gpus_per_run, shares', [(0.5, True), (1, False)])
def test_a_sweep_run_on_part_of_a_gpu_gets_memory_as_needed(tmp_path, monkeypatch, gpus_per_run, shares):
    import json
    from common.sweep import runstatus, task
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0')       # as Ray sets it for a task with a GPU
    monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE', raising=False)
    monkeypatch.delenv('TF_FORCE_GPU_ALLOW_GROWTH', raising=False)
    script = tmp_path / 'train.py'
    script.write_text(FAKE_TRAIN)

    class Spec:
        entry, run_id, flags = 'random_projection', 'run', None
    spec = Spec()
    spec.run_dir, spec.script, spec.argv = tmp_path / 'run', script, [str(tmp_path)]
    monkeypatch.setattr(runstatus, 'disk_state', lambda spec: runstatus.DiskState(
        'done' if (tmp_path / 'env.json').exists() else 'new', 0))
    monkeypatch.setattr(task, 'POLL_S', 0.01)
    assert task.run_to_completion(spec, retries=0, gpus_per_run=gpus_per_run, restore_env={})['state'] == 'done'
    env = json.loads((tmp_path / 'env.json').read_text())
    assert env['CUDA_VISIBLE_DEVICES'] == '0'
    assert (env['XLA_PYTHON_CLIENT_PREALLOCATE'], env['TF_FORCE_GPU_ALLOW_GROWTH']) == \
        (('false', 'true') if shares else (None, None))
