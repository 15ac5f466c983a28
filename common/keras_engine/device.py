"""The Keras engine's device: what the backend runs on, said in a run's first line, and
whether it is a GPU (the loop then fetches a step's values a step later)."""
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class Device:
    """What a run trains on: its first line, and whether that is a GPU."""
    description: str   # the run's first line, "device: ..."
    gpu: bool


def backend_device():
    """The backend's device, or that it uses the CPU and why."""
    backend = keras.backend.backend()
    if backend == 'jax':
        import jax
        d = jax.devices()[0]
        if d.platform == 'gpu':
            return Device(f'device: GPU {d.device_kind} (JAX)', True)
        return Device('device: CPU (JAX finds no GPU: its CPU build, or no NVIDIA driver; on a GPU '
                      'machine install JAX with CUDA, pip install "jax[cuda12]")', False)
    if backend == 'torch':
        import torch
        if torch.cuda.is_available():
            return Device(f'device: GPU {torch.cuda.get_device_name(0)} (PyTorch)', True)
        why = 'its CPU build' if torch.version.cuda is None else 'no usable NVIDIA GPU'
        return Device(f'device: CPU (PyTorch finds no GPU: {why})', False)
    from common.run import device
    return Device(device.describe(), device.has_gpu())
