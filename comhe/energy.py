"""Hyperspherical energies: the math of the reproduction's common/paper/energy.py
(docs/protocol.md section 1), written once for PyTorch tensors, JAX arrays and
Keras 3 (``comhe.namespaces`` supplies the operations of each).

A layer's neurons are the columns of ``W [d, N]``; a batch ``[T, d, N]`` (T
projections of one layer) goes through the same batched ops, no Python loop.

    n_i  = sqrt(sum_k W[k,i]^2 + 1e-4),   c_ij = W_i . W_j / (n_i n_j)
    E(W) = sum_{i<j} f(c_ij) / (N (N-1) / 2)

with the six kernels ``f`` of common/paper/energy.py. The half-space energy (of
``[W, -W]``) comes from the N x N Gram alone, as there.

Power '2' (CoMHE's kernel) has its gradient written out
(``energy_gradient``): the energy's backward pass uses it through each
library's custom gradient (one Gram-sized product instead of two), and the
AP/AdvP code calls it as an ordinary function, so their look-aheads, which
contain a gradient, are differentiated by each backend's own autodiff with no
nested gradient computation. ``cosine_vjp`` does the same for the cosine
matrix (AP's angle loss).
"""
import math

from comhe.namespaces import namespace_of

POWERS = ('0', '1', '2', 'a0', 'a1', 'a2')

# The guards of common/paper/energy.py, with the same values (see its comments).
NORM_EPS = 1e-4      # inside the square root, as in the original release
ANGLE_EPS = 1e-4     # added to acos(c)/pi in the angular kernels
DIST_FLOOR = 1e-7    # floor of 2 - 2c (full space) and of 1 - c^2 (half space, power '2')
ACOS_CLIP = 1e-6     # acos sees cosines inside [-1 + 1e-6, 1 - 1e-6]


def neurons_as_columns(weight, neuron_axis):
    """``W [d, N]``: the ``N`` neurons of ``weight`` (those along ``neuron_axis``) as
    columns, each the neuron's weights flattened in the order of the other axes."""
    shape = tuple(weight.shape)
    if len(shape) < 2:
        raise ValueError(f'a weight needs at least 2 axes (neurons and their inputs), got shape {shape}')
    if any(s is None for s in shape):
        raise ValueError(f'a weight needs a static shape, got {shape}')
    if not -len(shape) <= neuron_axis < len(shape):
        raise ValueError(f'neuron_axis {neuron_axis} is out of range for a weight of shape {shape}')
    ops = namespace_of(weight)
    n = shape[neuron_axis]
    if neuron_axis % len(shape) != len(shape) - 1:
        weight = ops.moveaxis(weight, neuron_axis, -1)
    return ops.reshape(weight, (math.prod(shape) // n, n))


def _normalised(ops, W):
    """(sum of squares [.., N], 1 / n [.., N], the normalised columns [.., d, N])."""
    sq = ops.sum(ops.square(W), axis=-2)
    inv_norm = ops.rsqrt(sq + NORM_EPS)
    return sq, inv_norm, W * ops.expand_dims(inv_norm, -2)


def _gram(ops, Wn):
    return ops.matmul(ops.swapaxes(Wn, -1, -2), Wn)


def _zero_diagonal(ops, C):
    return C * (1.0 - ops.eye(C.shape[-1], like=C))


def _through_normalisation(ops, W, Wn, inv_norm, dWn, dsq=None):
    """dL/dW from dL/dWn for Wn = W / n (and a direct dL/dsq, sq = sum W^2, if given)."""
    radial = ops.sum(dWn * Wn, axis=-2, keepdims=True)
    dW = (dWn - Wn * radial) * ops.expand_dims(inv_norm, -2)
    if dsq is not None:
        dW = dW + 2.0 * W * ops.expand_dims(dsq, -2)
    return dW


def pairwise_cosine(W):
    """The N x N matrix of c_ij for ``W [d, N]`` or ``[T, d, N]`` (diagonal c_ii < 1)."""
    ops = namespace_of(W)
    return _gram(ops, _normalised(ops, W)[2])


def cosine_vjp(W, dC):
    """``sum(dC * C(W))`` differentiated by W, written out (differentiable again)."""
    ops = namespace_of(W)
    _, inv_norm, Wn = _normalised(ops, W)
    dWn = ops.matmul(Wn, dC + ops.swapaxes(dC, -1, -2))
    return _through_normalisation(ops, W, Wn, inv_norm, dWn)


def _kernel(ops, c, power):
    if power in ('0', '1', '2'):
        dist = ops.maximum(2.0 - 2.0 * c, DIST_FLOOR)
        if power == '0':
            return -ops.log(dist)
        if power == '1':
            return ops.rsqrt(dist)
        return 1.0 / dist
    lim = 1.0 - ACOS_CLIP
    angle = ops.arccos(ops.clip(c, -lim, lim)) / math.pi + ANGLE_EPS
    if power == 'a0':
        return -ops.log(angle)
    if power == 'a1':
        return 1.0 / angle
    return 1.0 / ops.square(angle)


def _energy_generic(ops, W, power, half_space):
    """Any kernel, differentiated by the library."""
    n = W.shape[-1]
    sq, inv_norm, Wn = _normalised(ops, W)
    C = _zero_diagonal(ops, _gram(ops, Wn))
    f0 = _kernel(ops, ops.as_tensor(0.0, like=W), power)
    if not half_space:
        return (ops.sum(_kernel(ops, C, power), axis=(-2, -1)) - n * f0) / (n * (n - 1.0))
    pairs = ops.sum(_kernel(ops, C, power) + _kernel(ops, -C, power), axis=(-2, -1)) - 2.0 * n * f0
    self_sum = ops.sum(_kernel(ops, -sq * ops.square(inv_norm), power), axis=-1)
    return (pairs + self_sum) / (n * (2 * n - 1.0))


def _power2_forward(ops, W, half_space):
    """(energy, what its gradient needs). Full space: sum_{i != j} 1 / (2 - 2c_ij)
    (the zeroed diagonal adds N/2); half space: sum_{i != j} 1 / (1 - c_ij^2)
    (the diagonal adds N) plus sum_i 1 / (2 + 2 c_ii)."""
    n = W.shape[-1]
    scale = 1.0 / (n * (2 * n - 1.0)) if half_space else 1.0 / (n * (n - 1.0))
    sq, inv_norm, Wn = _normalised(ops, W)
    C = _zero_diagonal(ops, _gram(ops, Wn))
    dist = 1.0 - ops.square(C) if half_space else 2.0 - 2.0 * C
    inv_dist = 1.0 / ops.maximum(dist, DIST_FLOOR)
    total = ops.sum(inv_dist, axis=(-2, -1)) - (n if half_space else 0.5 * n)
    self_inv = None
    if half_space:
        self_inv = 1.0 / (2.0 + 2.0 * sq * ops.square(inv_norm))   # >= 1/4: no floor needed
        total = total + ops.sum(self_inv, axis=-1)
    return total * scale, (scale, inv_norm, Wn, C, dist, inv_dist, self_inv)


def _power2_backward(ops, W, parts, upstream, half_space):
    scale, inv_norm, Wn, C, dist, inv_dist, self_inv = parts
    g = ops.expand_dims(ops.as_tensor(upstream, like=W) * scale, -1)    # [.., 1]
    # d inv_dist / dC, 0 on the floor; C = Wn^T Wn is symmetric, so dWn = 2 Wn dC.
    alive = dist > DIST_FLOOR
    slope = ops.where(alive, C * inv_dist * inv_dist if half_space else ops.square(inv_dist), 0.0)
    dWn = ops.matmul(Wn, slope) * ops.expand_dims(4.0 * g, -1)
    dsq = None
    if half_space:
        # c_ii = sq / (sq + eps): d self_inv / d sq = -2 eps self_inv^2 / (sq + eps)^2.
        dsq = g * (-2.0 * NORM_EPS) * ops.square(self_inv * ops.square(inv_norm))
    else:
        # The zeroed diagonal (C = 0, slope 1/4) gets no gradient: take it out.
        dWn = dWn - Wn * ops.expand_dims(g, -1)
    return _through_normalisation(ops, W, Wn, inv_norm, dWn, dsq)


def energy_gradient(W, half_space=False):
    """d E(W) / dW for power '2' (summed over a batch), as an ordinary function
    of W that the library can differentiate again (the AdvP look-ahead)."""
    check_weight_matrix(W, '2')
    ops = namespace_of(W)
    return _power2_backward(ops, W, _power2_forward(ops, W, half_space)[1], 1.0, half_space)


_POWER2 = {}   # (namespace, half_space) -> the energy with its written-out gradient


def _energy_power2(ops, W, half_space):
    key = (type(ops), half_space)
    if key not in _POWER2:
        _POWER2[key] = ops.custom_gradient(
            lambda W: _power2_forward(ops, W, half_space),
            lambda W, parts, upstream: _power2_backward(ops, W, parts, upstream, half_space))
    return _POWER2[key](W)


def check_weight_matrix(W, power='2'):
    """``W [d, N]`` or ``[T, d, N]``: floating point, static shape, N >= 2; a known power."""
    if power not in POWERS:
        raise ValueError(f"unknown power {power!r}; expected one of {', '.join(POWERS)}")
    shape = tuple(W.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f'W must be [d, N] or [T, d, N], got shape {shape}')
    if shape[-1] is None or shape[-1] < 2:
        raise ValueError(f'need at least 2 neurons (a static N >= 2), got shape {shape}: the energy '
                         'of a single neuron is undefined; leave that layer out')
    dtype = getattr(W.dtype, 'name', None) or str(W.dtype).rsplit('.', 1)[-1]
    if not dtype.startswith(('float', 'bfloat')):
        raise TypeError(f'W must hold floating-point numbers, got dtype {dtype}: cast the weight '
                        '(an integer tensor has no gradient)')


def hyperspherical_energy(W, power='2', half_space=False):
    """Energy of the columns of W: a scalar for ``[d, N]``, ``[T]`` for ``[T, d, N]``."""
    check_weight_matrix(W, power)
    ops = namespace_of(W)
    if power == '2':
        return _energy_power2(ops, W, half_space)
    return _energy_generic(ops, W, power, half_space)
