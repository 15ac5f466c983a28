"""The CIFAR CNN-9 of docs/protocol.md section 2, in compat.v1 graph mode, with the
energy terms attached to its filters.

Layers are built from ``get_variable`` and ``tf.nn`` ops (no Keras, no
``tf.layers``). Each of the nine hidden layers after the first (conv1_1 ..
conv3_2 and fc6) gets ``hidden_term(W, ctx)`` from the caller: that is the
hook through which a CoMHE variant adds its term. The first layer and the
score layer get ``first_term(W)`` and ``score_term(W)``, by default the protocol's
(half-space energy, weight 1; 10 x full-space energy, power '2').
"""
from dataclasses import dataclass, field

import tensorflow.compat.v1 as tf

from common.paper.energy import filters_as_matrix, hyperspherical_energy, static_dims
from common.paper.protocol import BN_DECAY, COMHE_POWER, COMHE_SCORE_WEIGHT, WIDTHS

BN_EPSILON = 1e-3


def comhe_first_term(W):
    """Protocol: the first layer gets the plain half-space energy, power '2'."""
    return hyperspherical_energy(W, COMHE_POWER, half_space=True)


def comhe_score_term(W):
    """Protocol: the score layer gets 10 x the full-space energy, power '2'."""
    return COMHE_SCORE_WEIGHT * hyperspherical_energy(W, COMHE_POWER)


@dataclass
class LayerContext:
    """What a hidden-layer term may depend on besides the filters."""
    index: int            # 1..9: conv1_1 .. conv3_2, fc6
    name: str
    global_step: tf.Tensor
    lr: tf.Tensor
    seed: int


@dataclass
class CNN9:
    logits: tf.Tensor
    thom: tf.Tensor            # first-layer + hidden terms
    thomf: tf.Tensor           # score-layer term
    decayed: list = field(default_factory=list)     # filters, BN gamma and beta
    bn_updates: list = field(default_factory=list)  # EMA updates, run with each train step
    layer_terms: dict = field(default_factory=dict)  # layer name -> its energy term


def _he_filter(shape):
    fan_in = shape[0] * shape[1] * shape[2]
    return tf.get_variable('filter', shape, initializer=tf.random_normal_initializer(
        stddev=(2.0 / fan_in) ** 0.5))


def _batch_norm(x, is_training, model, zero_debias):
    """Batch moments in training, their moving averages at test time.

    As the release: ``ExponentialMovingAverage(0.999).apply`` with TF 1.x's
    default ``zero_debias=False``, so the averages start at 0 and after t steps
    are (1 - 0.999^t) times the debiased ones; ``zero_debias`` debiases them.
    """
    n_out = static_dims(x)[-1]
    with tf.variable_scope('bn'):
        gamma = tf.get_variable('gamma', [n_out], initializer=tf.ones_initializer())
        beta = tf.get_variable('beta', [n_out], initializer=tf.zeros_initializer())
        mean, var = tf.nn.moments(x, [0, 1, 2], name='moments')
        ema = tf.train.ExponentialMovingAverage(decay=BN_DECAY, zero_debias=zero_debias)
        model.bn_updates.append(ema.apply([mean, var]))
        mean, var = tf.cond(is_training, lambda: (mean, var),
                            lambda: (ema.average(mean), ema.average(var)))
    model.decayed += [gamma, beta]
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)


def cnn9(images, is_training, hidden_term, global_step, lr, seed, n_class=100,
         widths=WIDTHS, first_term=comhe_first_term, score_term=comhe_score_term,
         bn_zero_debias=False):
    """Build CNN-9 on uint8 images ``[B, 32, 32, 3]``; returns a ``CNN9``.

    ``hidden_term(W, ctx)``, ``first_term(W)`` and ``score_term(W)`` return a
    scalar energy term for the filter matrix ``W [d, N]``, or ``None``.
    ``bn_zero_debias``: debias the test-time batch-norm averages (the release did not).
    """
    model = CNN9(logits=None, thom=None, thomf=None)
    feat = (tf.cast(images, tf.float32) - 127.5) / 128.0
    hidden = []

    def conv(x, name, ksize, n_out, padding, bn_relu, term):
        with tf.variable_scope(name):
            kernel = _he_filter([ksize, ksize, static_dims(x)[-1], n_out])
            model.decayed.append(kernel)
            energy = term(filters_as_matrix(kernel))
            if energy is not None:
                model.layer_terms[name] = energy
            x = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], padding=padding)
            if bn_relu:
                x = tf.nn.relu(_batch_norm(x, is_training, model, bn_zero_debias))
        return x

    def hidden_hook(name):
        ctx = LayerContext(len(hidden) + 1, name, global_step, lr, seed)
        hidden.append(name)
        return lambda W: hidden_term(W, ctx)

    for block, n_out in enumerate(widths[:3], start=1):
        for i in range(3):
            name = f'conv{block}_{i}'
            term = first_term if (block, i) == (1, 0) else hidden_hook(name)
            feat = conv(feat, name, 3, n_out, 'SAME', True, term)
        feat = tf.nn.max_pool2d(feat, 2, 2, 'SAME', name=f'pool{block}')
    feat = conv(feat, 'fc6', 4, widths[3], 'VALID', False, hidden_hook('fc6'))
    feat = conv(feat, 'score', 1, n_class, 'VALID', False, score_term)

    model.logits = tf.reshape(feat, [-1, n_class])
    zero = tf.constant(0.0)
    model.thom = tf.add_n([zero] + [t for n, t in model.layer_terms.items() if n != 'score'])
    model.thomf = model.layer_terms.get('score', zero)
    return model
