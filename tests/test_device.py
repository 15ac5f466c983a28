"""The line each train.py prints first: which device it trains on, or why the CPU."""
import pytest

from common.run import device


@pytest.mark.parametrize('cuda, driver, env, expected', [
    (True, False, {'CUDA_VISIBLE_DEVICES': '0'}, 'no NVIDIA driver'),
    (False, False, {}, 'no NVIDIA driver'),
    (True, True, {'CUDA_VISIBLE_DEVICES': '-1'}, "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
    (True, True, {'CUDA_VISIBLE_DEVICES': ''}, "CUDA_VISIBLE_DEVICES='' hides every GPU"),
    (False, True, {'CUDA_VISIBLE_DEVICES': '0'}, 'built without CUDA; `make clean venv GPU=1`'),
    (True, True, {'CUDA_VISIBLE_DEVICES': '0'}, 'CUDA libraries are probably missing, `make clean venv GPU=1`'),
])
def test_the_cpu_reason_names_the_cause_and_the_fix(cuda, driver, env, expected):
    assert expected in device.cpu_reason(cuda, driver, env)


def test_without_a_gpu_the_line_says_cpu_and_why(monkeypatch):
    monkeypatch.setattr(device.tf.config, 'list_physical_devices', lambda kind: [])
    monkeypatch.setattr(device, 'nvidia_driver_present', lambda: False)
    assert device.describe({}) == 'device: CPU (no NVIDIA driver on this machine (nvidia-smi not found))'


def test_with_gpus_the_line_names_the_first_and_counts_the_others(monkeypatch):
    gpus = ['/physical_device:GPU:0', '/physical_device:GPU:1']
    monkeypatch.setattr(device.tf.config, 'list_physical_devices', lambda kind: gpus if kind == 'GPU' else [])
    monkeypatch.setattr(device.tf.config.experimental, 'get_device_details',
                        lambda gpu: {'device_name': 'NVIDIA H200'})
    assert device.describe({'CUDA_VISIBLE_DEVICES': '2,3'}) == \
        'device: GPU NVIDIA H200 and 1 more (CUDA_VISIBLE_DEVICES=2,3)'
