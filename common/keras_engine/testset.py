"""The Keras engine's test pass: the test set put on the device once."""
import keras
import numpy as np
from keras import ops

from common.data.pipeline import EVAL_BATCH


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

