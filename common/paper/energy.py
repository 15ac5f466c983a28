"""Hyperspherical energy of a layer's neurons (MHE / CoMHE, docs/protocol.md section 1).

A layer's filters are a matrix ``W`` of shape ``[d, N]``: ``N`` neurons, each
a column of dimension ``d``. A batch ``[T, d, N]`` (T projections of one
layer) is handled by the same ops, batched, with no Python loop.

    n_i  = sqrt(sum_k W[k,i]^2 + 1e-4)
    c_ij = (W[:,i] . W[:,j]) / (n_i n_j)
    E(W) = sum_{i<j} f(c_ij) / (N (N-1) / 2)

Kernels ``f`` by ``power`` (names as in the original MHE code):

    '0'  -log(2 - 2c)             'a0'  -log(acos(c)/pi + 1e-4)
    '1'  (2 - 2c)^(-1/2)          'a1'  (acos(c)/pi + 1e-4)^(-1)
    '2'  (2 - 2c)^(-1)            'a2'  (acos(c)/pi + 1e-4)^(-2)

Half-space energy: the energy of the 2N vectors ``[W, -W]`` over their
2N(2N-1)/2 pairs. From the N x N Gram matrix alone:

    sum over pairs = 2 sum_{i<j} [f(c_ij) + f(-c_ij)] + sum_i f(-c_ii)
    E_half(W)      = that / (N (2N - 1))

with c_ii = (n_i^2 - 1e-4) / n_i^2. The 2N x 2N Gram is never built.

How it is computed (one Gram product and a few passes over the N x N matrix):

- The energies normalise the columns first; C is the Gram of the normalised
  columns (its diagonal is c_ii).
- No triangle mask: C is symmetric, so the sum over i < j is half the sum
  over i != j; the diagonal is set to 0 before the kernel, so it adds N f(0),
  which is subtracted again.
- Power '2' (CoMHE's kernel) has a hand-written gradient (one Gram-sized
  product where automatic differentiation takes two, and few elementwise
  passes), and in the half space uses f(c) + f(-c) = 1 / (1 - c^2): one
  kernel evaluation per pair. The hand-written gradients here are built from
  ordinary differentiable ops, so second derivatives (the AP and AdvP
  look-aheads) are exact too.

The ops work in a compat.v1 graph and eagerly, in float32 or float64.
"""
import math

import tensorflow as tf

# The kernels and guards, with the library's values (comhe/energy.py):
# - NORM_EPS inside the square root, as in the original release; ANGLE_EPS added to
#   acos(c)/pi in the angular kernels;
# - DIST_FLOOR: 2 - 2c for two equal neurons is tiny but positive in exact arithmetic;
#   rounding can take it to 0 or below, so it is floored (gradient 0 there). Power '2'
#   in the half space floors 1 - c^2 = (2 - 2c)(2 + 2c) / 4 at the same value: the same
#   threshold on c, the same largest value (1 / floor);
# - ACOS_CLIP: acos has an infinite slope at +-1: keep cosines strictly inside.
from comhe.energy import ACOS_CLIP as _ACOS_CLIP
from comhe.energy import ANGLE_EPS as _ANGLE_EPS
from comhe.energy import DIST_FLOOR as _DIST_FLOOR
from comhe.energy import NORM_EPS as _NORM_EPS
from comhe.energy import POWERS  # noqa: F401  (this module's API)


def static_dims(W):
    """The static shape as plain ints (None where unknown), also after
    ``tf.compat.v1.disable_v2_behavior()``, where ``W.shape[i]`` is a ``Dimension``."""
    return tf.TensorShape(W.shape).as_list()


def _normalised(W):
    """(sum of squares [.., N], 1 / n [.., N], the normalised columns [.., d, N])."""
    sq = tf.reduce_sum(tf.square(W), axis=-2)
    inv_norm = tf.math.rsqrt(sq + tf.cast(_NORM_EPS, W.dtype))
    return sq, inv_norm, W * tf.expand_dims(inv_norm, -2)


def _gram(Wn):
    """Wn^T Wn for [d, N] or [T, d, N]."""
    return tf.linalg.matmul(Wn, Wn, transpose_a=True)


def pairwise_cosine(W):
    """The N x N matrix of c_ij (docs/protocol.md section 1) for W [d, N] or [T, d, N].

    Its gradient takes one Gram-sized product (C is symmetric) where automatic
    differentiation takes two, and is built from ordinary ops, so it can be
    differentiated again (the AP look-ahead). When d > N the Gram of W itself
    is scaled, which saves passes over the larger d x N matrix.
    """
    W = tf.convert_to_tensor(W)
    d, n = static_dims(W)[-2:]
    if d is not None and n is not None and d > n:
        return _cosine_scaled_after(W)

    @tf.custom_gradient
    def cosine(W):
        sq, inv_norm, Wn = _normalised(W)

        def grad(dC):
            dWn = tf.linalg.matmul(Wn, dC + tf.linalg.matrix_transpose(dC))
            return _through_normalisation(W, Wn, inv_norm, dWn)

        return _gram(Wn), grad

    return cosine(W)


@tf.custom_gradient
def _cosine_scaled_after(W):
    """c_ij = G_ij / (n_i n_j) with G = W^T W, n_i = sqrt(G_ii + eps)."""
    G = _gram(W)
    inv_norm = tf.math.rsqrt(tf.linalg.diag_part(G) + tf.cast(_NORM_EPS, W.dtype))
    outer = tf.expand_dims(inv_norm, -1) * tf.expand_dims(inv_norm, -2)
    C = G * outer

    def grad(dC):
        # dW = W (dG + dG^T); dG + dG^T = S o outer plus, on the diagonal (through
        # n_i), -sum_j S_ij c_ij / n_i^2, where S = dC + dC^T.
        S = dC + tf.linalg.matrix_transpose(dC)
        through_norm = -tf.square(inv_norm) * tf.reduce_sum(S * C, axis=-1)
        M = S * outer
        M = tf.linalg.set_diag(M, tf.linalg.diag_part(M) + through_norm)
        return tf.linalg.matmul(W, M)

    return C, grad


def _through_normalisation(W, Wn, inv_norm, dWn, dsq=None):
    """dL/dW from dL/dWn for Wn = W / n, n = sqrt(sum W^2 + eps), plus a direct
    dL/dsq (sq = sum W^2) if given:
    dW = (dWn - Wn sum_k(dWn o Wn)) / n + 2 W dsq."""
    radial = tf.reduce_sum(dWn * Wn, axis=-2, keepdims=True)
    dW = (dWn - Wn * radial) * tf.expand_dims(inv_norm, -2)
    if dsq is not None:
        dW += 2.0 * W * tf.expand_dims(dsq, -2)
    return dW


def _kernel(c, power):
    """f(c) elementwise for one of POWERS."""
    dtype = c.dtype
    if power in ('0', '1', '2'):
        dist = tf.maximum(2.0 - 2.0 * c, tf.cast(_DIST_FLOOR, dtype))
        if power == '0':
            return -tf.math.log(dist)
        if power == '1':
            return tf.math.rsqrt(dist)
        return 1.0 / dist
    if power in ('a0', 'a1', 'a2'):
        lim = 1.0 - _ACOS_CLIP
        angle = tf.acos(tf.clip_by_value(c, -lim, lim)) / math.pi + _ANGLE_EPS
        if power == 'a0':
            return -tf.math.log(angle)
        if power == 'a1':
            return 1.0 / angle
        return 1.0 / tf.square(angle)
    raise ValueError(f"unknown power {power!r}; expected one of {', '.join(POWERS)}")


def _zero_diagonal(C, sq):
    """C with its diagonal set to 0 (sq: any [.., N] tensor, for the shape)."""
    return tf.linalg.set_diag(C, tf.zeros_like(sq))


def _energy_generic(W, power, half_space):
    """Any kernel, through automatic differentiation."""
    n = static_dims(W)[-1]
    sq, inv_norm, Wn = _normalised(W)
    C = _zero_diagonal(_gram(Wn), sq)
    f0 = _kernel(tf.zeros([], W.dtype), power)
    if not half_space:
        # sum over i != j = 2 sum_{i<j}; the zeroed diagonal gave N f(0).
        return (tf.reduce_sum(_kernel(C, power), axis=[-2, -1]) - n * f0) / (n * (n - 1.0))
    pairs = tf.reduce_sum(_kernel(C, power) + _kernel(-C, power), axis=[-2, -1]) - 2.0 * n * f0
    # Each neuron against its own negation: cosine -c_ii.
    self_sum = tf.reduce_sum(_kernel(-sq * tf.square(inv_norm), power), axis=-1)
    return (pairs + self_sum) / (n * (2 * n - 1.0))


def _energy_power2(W, half_space):
    """Power '2' with a hand-written gradient (one Gram-sized product back).

    Full space: sum_{i != j} 1 / (2 - 2c_ij), the zeroed diagonal adding N/2.
    Half space: sum_{i != j} 1 / (1 - c_ij^2) (= f(c) + f(-c) summed over
    i < j, twice), the diagonal adding N, plus sum_i 1 / (2 + 2 c_ii).
    """
    n = static_dims(W)[-1]
    scale = 1.0 / (n * (2 * n - 1.0)) if half_space else 1.0 / (n * (n - 1.0))
    floor = tf.cast(_DIST_FLOOR, W.dtype)

    @tf.custom_gradient
    def energy(W):
        sq, inv_norm, Wn = _normalised(W)
        C = _zero_diagonal(_gram(Wn), sq)
        dist = 1.0 - tf.square(C) if half_space else 2.0 - 2.0 * C
        inv_dist = tf.math.reciprocal(tf.maximum(dist, floor))
        total = tf.reduce_sum(inv_dist, axis=[-2, -1]) - (n if half_space else 0.5 * n)
        if half_space:
            # 2 + 2 c_ii >= 2: no floor needed.
            self_inv = tf.math.reciprocal(2.0 + 2.0 * sq * tf.square(inv_norm))
            total += tf.reduce_sum(self_inv, axis=-1)

        def grad(upstream):
            g = tf.expand_dims(upstream * scale, -1)                     # [.., 1]
            zero = tf.zeros([], W.dtype)
            # d inv_dist / dC = 2 C / dist^2 (half) or 2 / dist^2 (full), 0 on
            # the floor; symmetric, so with C = Wn^T Wn: dWn = 2 Wn dC.
            if half_space:
                slope = tf.where(dist > floor, C * inv_dist * inv_dist, zero)
            else:
                slope = tf.where(dist > floor, tf.square(inv_dist), zero)
            dWn = tf.linalg.matmul(Wn, slope) * tf.expand_dims(4.0 * g, -1)
            if not half_space:
                # The diagonal was set to 0 in the forward pass and gets no
                # gradient; there slope = 1/4 (C = 0, dist = 2): take it out.
                dWn -= Wn * tf.expand_dims(g, -1)
            dsq = None
            if half_space:
                # c_ii = sq / (sq + eps): d self_inv / d sq = -2 eps self_inv^2 / (sq + eps)^2.
                dsq = g * (-2.0 * _NORM_EPS) * tf.square(self_inv * tf.square(inv_norm))
            return _through_normalisation(W, Wn, inv_norm, dWn, dsq)

        return total * scale, grad

    return energy(W)


def hyperspherical_energy(W, power='2', half_space=False):
    """Energy of the neurons (columns) of W: a scalar for [d, N], [T] for [T, d, N].

    ``half_space=True`` gives the energy of ``[W, -W]`` computed from the
    N x N Gram matrix (see the module docstring).
    """
    if power not in POWERS:
        raise ValueError(f"unknown power {power!r}; expected one of {', '.join(POWERS)}")
    W = tf.convert_to_tensor(W)
    if W.shape.rank not in (2, 3):
        raise ValueError(f"W must be [d, N] or [T, d, N], got shape {W.shape}")
    n = static_dims(W)[-1]
    if n is None or n < 2:
        raise ValueError(f"need at least 2 neurons (a static N >= 2), got shape {W.shape}")
    if power == '2':
        return _energy_power2(W, half_space)
    return _energy_generic(W, power, half_space)


def filters_as_matrix(kernel):
    """A conv kernel [k, k, C_in, N] (or a [d, N] matrix) as W [d, N]."""
    return tf.reshape(kernel, [-1, static_dims(kernel)[-1]])
