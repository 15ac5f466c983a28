"""Which device a run trains on, said once at its start: the GPU's name, or
that it uses the CPU and why (so a run meant for a GPU does not spend a day on
the CPU unnoticed)."""
import os
import shutil

import tensorflow.compat.v1 as tf

CUDA_BUILD_HINT = ('`make clean venv GPU=1` installs TensorFlow with its CUDA libraries '
                   '(tensorflow[and-cuda])')


def describe(environ=None):
    """One line: ``device: GPU NVIDIA H200 (CUDA_VISIBLE_DEVICES=0)``, or ``device: CPU (<why>)``."""
    environ = os.environ if environ is None else environ
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get('device_name') or gpus[0].name
        more = f' and {len(gpus) - 1} more' if len(gpus) > 1 else ''
        visible = environ.get('CUDA_VISIBLE_DEVICES')
        return f'device: GPU {name}{more}' + (f' (CUDA_VISIBLE_DEVICES={visible})' if visible else '')
    return 'device: CPU (' + cpu_reason(tf.test.is_built_with_cuda(), nvidia_driver_present(),
                                        environ) + ')'


def has_gpu():
    """Whether TensorFlow sees a GPU (the one ``describe`` names)."""
    return bool(tf.config.list_physical_devices('GPU'))


def nvidia_driver_present():
    return shutil.which('nvidia-smi') is not None or os.path.exists('/proc/driver/nvidia/version')


def cpu_reason(built_with_cuda, driver_present, environ):
    """Why TensorFlow sees no GPU, the most likely cause first."""
    if not driver_present:
        return 'no NVIDIA driver on this machine (nvidia-smi not found)'
    visible = environ.get('CUDA_VISIBLE_DEVICES')
    if visible is not None and visible.strip() in ('', '-1'):
        return f'CUDA_VISIBLE_DEVICES={visible!r} hides every GPU; pass --gpu_no or unset it'
    if not built_with_cuda:
        return 'this TensorFlow was built without CUDA; ' + CUDA_BUILD_HINT
    return (f'an NVIDIA driver is present but TensorFlow found no usable GPU '
            f'(CUDA_VISIBLE_DEVICES={visible!r}): its CUDA libraries are probably missing, '
            f'{CUDA_BUILD_HINT}; or --gpu_no names a GPU that does not exist')
