"""The Keras engine's test pass: the test set put on the device once."""
import keras
import numpy as np
from keras import ops

EVAL_BATCH = 1000


class TestSet:
    """The test images and labels put on the device once, and the accuracy of a state on
    them: ``EVAL_BATCH`` images a call, each call counting its correct answers on the
    device (a pass fetches 10 integers, and sends no image)."""

    def __init__(self, model, images, labels):
        self.chunks = [(ops.convert_to_tensor(images[k:k + EVAL_BATCH]),
                        ops.convert_to_tensor(np.asarray(labels[k:k + EVAL_BATCH], np.int32)))
                       for k in range(0, len(labels), EVAL_BATCH)]
        self.size = len(labels)

        def correct(trainable, non_trainable, x, y):
            logits = model.stateless_call(trainable, non_trainable, x, training=False)[0]
            return ops.sum(ops.cast(ops.cast(ops.argmax(logits, axis=1), 'int32') == y, 'int32'))
        if keras.backend.backend() == 'jax':
            import jax
            correct = jax.jit(correct)
        self.correct = correct

    def accuracy(self, state):
        hits = [self.correct(state['trainable'], state['non_trainable'], x, y) for x, y in self.chunks]
        return sum(int(h) for h in hits) / self.size


def describe_device():
    """The first line of a run: the backend's device, or that it uses the CPU and why."""
    backend = keras.backend.backend()
    if backend == 'jax':
        import jax
        d = jax.devices()[0]
        if d.platform == 'gpu':
            return f'device: GPU {d.device_kind} (JAX)'
        return ('device: CPU (JAX finds no GPU: its CPU build, or no NVIDIA driver; on a GPU '
                'machine install JAX with CUDA, pip install "jax[cuda12]")')
    if backend == 'torch':
        import torch
        if torch.cuda.is_available():
            return f'device: GPU {torch.cuda.get_device_name(0)} (PyTorch)'
        why = 'its CPU build' if torch.version.cuda is None else 'no usable NVIDIA GPU'
        return f'device: CPU (PyTorch finds no GPU: {why})'
    from common.run import device
    return device.describe()
