"""CNN-9 of docs/protocol.md section 2 as a Keras 3 model, layer for layer the
graph of ``common.paper.model`` (names, shapes, no conv bias, He init, the release's
batch norm), so that weights copy across and the two engines train alike.
"""
import keras
from keras import ops

from common.paper.protocol import BN_DECAY, WIDTHS

BN_EPSILON = 1e-3
CONV_LAYERS = [f'conv{b}_{i}' for b in (1, 2, 3) for i in range(3)]
HIDDEN = CONV_LAYERS[1:] + ['fc6']        # the nine layers with a CoMHE term, as common.paper.model
FILTERS = CONV_LAYERS + ['fc6', 'score']  # every filter, in the graph's order


class ReleaseBatchNorm(keras.layers.Layer):
    """Batch moments in training; at test time their moving averages, kept as the
    release's ``ExponentialMovingAverage(0.999)`` (``zero_debias=False``): they start
    at 0, ``avg = 0.999 avg + 0.001 moment`` each training step, and ``zero_debias``
    divides out ``1 - 0.999^t`` at test time (``--bn_zero_debias``).

    The averages are updated in ``call(training=True)``, as Keras's own BatchNormalization
    does, so ``stateless_call`` returns them among the non-trainable updates."""

    def __init__(self, zero_debias=False, **kwargs):
        super().__init__(**kwargs)
        self.zero_debias = zero_debias

    def build(self, shape):
        n = shape[-1]
        self.gamma = self.add_weight(shape=(n,), initializer='ones', name='gamma')
        self.beta = self.add_weight(shape=(n,), initializer='zeros', name='beta')
        self.moving_mean = self.add_weight(shape=(n,), initializer='zeros', trainable=False,
                                           name='moving_mean')
        self.moving_var = self.add_weight(shape=(n,), initializer='zeros', trainable=False,
                                          name='moving_var')
        self.steps = self.add_weight(shape=(), initializer='zeros', trainable=False, name='steps')

    def call(self, x, training=False):
        if training:
            mean = ops.mean(x, axis=(0, 1, 2))
            var = ops.mean(ops.square(x - mean), axis=(0, 1, 2))
            # TF1's EMA: avg -= (1 - decay) * (avg - value).
            self.moving_mean.assign(self.moving_mean - (1.0 - BN_DECAY) * (self.moving_mean - mean))
            self.moving_var.assign(self.moving_var - (1.0 - BN_DECAY) * (self.moving_var - var))
            self.steps.assign(self.steps + 1.0)
        else:
            mean, var = self.moving_mean, self.moving_var
            if self.zero_debias:
                scale = 1.0 - ops.power(BN_DECAY, ops.maximum(self.steps, 1.0))
                mean, var = mean / scale, var / scale
        return (x - mean) * ops.rsqrt(var + BN_EPSILON) * self.gamma + self.beta

    def get_config(self):
        return dict(super().get_config(), zero_debias=self.zero_debias)


def cnn9(widths=WIDTHS, n_class=100, bn_zero_debias=False, seed=None):
    """The network on uint8 images [B, 32, 32, 3] -> logits [B, n_class]; its filters are
    the layers named in FILTERS (kernel [k, k, C_in, N], as the graph's ``filter``)."""
    images = keras.Input((32, 32, 3), dtype='uint8', name='images')
    x = (ops.cast(images, 'float32') - 127.5) / 128.0

    def conv(x, name, ksize, n_out, padding):
        fan_in = ksize * ksize * x.shape[-1]
        # A seed of its own per layer: one integer seed draws the same numbers every time.
        layer_seed = None if seed is None else seed * 100 + FILTERS.index(name)
        init = keras.initializers.RandomNormal(0.0, (2.0 / fan_in) ** 0.5, seed=layer_seed)
        return keras.layers.Conv2D(n_out, ksize, padding=padding, use_bias=False,
                                   kernel_initializer=init, name=name)(x)

    for block, n_out in enumerate(widths[:3], start=1):
        for i in range(3):
            name = f'conv{block}_{i}'
            x = conv(x, name, 3, n_out, 'same')
            x = ReleaseBatchNorm(bn_zero_debias, name=f'{name}_bn')(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, 2, padding='same', name=f'pool{block}')(x)
    x = conv(x, 'fc6', 4, widths[3], 'valid')
    x = conv(x, 'score', 1, n_class, 'valid')
    logits = keras.layers.Reshape((n_class,), name='logits')(x)
    return keras.Model(images, logits, name='cnn9')
