"""The three CoMHE terms for one hidden layer (docs/protocol.md section 3).

Each projects the layer's neurons ``W [d, N]`` with ``P [pd, d]`` and takes
the half-space energy (power '2') of ``P W``:

- random projection (RP): ``T`` fresh Gaussian ``P`` per training step, the
  term is the mean of the ``T`` energies; all ``T`` are one batched op.
- angle-preserving projection (AP): a learned ``P`` that minimises
  ``L_P = ||C(P W) - C(W)||_F + 1e-3 * 5e-4 * sum(P^2) / 2``; the term uses
  the look-ahead ``P' = P - lr * dA/dP`` with ``A = ||C(P W) - C(W)||_F``, the
  angle loss alone, as the release (``lookahead_decay=True``: ``dL_P/dP``, as
  docs/protocol.md section 3 writes it).
- adversarial projection (AdvP): a learned ``P`` that maximises
  ``E_P = E(P W)`` (full space); look-ahead ``P' = P + lr * dE_P/dP``; its
  own steps minimise ``-E_P + 1e-3 * 5e-4 * sum(P^2) / 2``.

The look-ahead gradient stays in the graph, so the main loss differentiates
through it into W. The learned ``P`` are non-trainable variables in the
``PROJECTION_COLLECTION``, so the main optimiser never sees them; their own
``iters`` descent steps per iteration are one op (``projection_descent``).
"""
import math
from dataclasses import dataclass
from typing import Callable

import tensorflow.compat.v1 as tf

# Plain arithmetic, the library's: T per layer, and the multiply-adds of the two forms of the P steps.
from comhe.projections import descent_costs, num_projections  # noqa: F401  (num_projections: this module's API)
from common.paper.energy import hyperspherical_energy, pairwise_cosine, static_dims
from common.paper.protocol import P_DECAY, P_DECAY_SCALE, WEIGHT_DECAY  # noqa: F401  (this module's API)

PROJECTION_COLLECTION = 'comhe_projections'
P_OBJECTIVE_COLLECTION = 'comhe_projection_objectives'
LEARNED_COLLECTION = 'comhe_learned_projections'



def random_projection_draws(d, pd, num_proj, seed, step, layer_index, dtype=tf.float32):
    """``[T, pd, d]`` i.i.d. N(0, 1), a pure function of (seed, step, layer).

    One stateless Philox draw of uniforms keyed by (run seed, layer index) and
    the global step; projection t is slice t of it. A replayed step gives the
    same matrices. The uniforms become normals by the Box-Muller transform in
    vectorised ops (the algorithm of TensorFlow's own normal sampler, which
    applies it one pair at a time and costs about twice as much here).
    """
    if isinstance(seed, int) and isinstance(layer_index, int):
        key = tf.constant(seed * 1000003 + layer_index, tf.int64)
    else:
        key = tf.cast(seed, tf.int64) * 1000003 + layer_index
    size = num_proj * pd * d
    pairs = (size + 1) // 2
    u_radius, u_angle = tf.unstack(tf.raw_ops.StatelessRandomUniform(
        shape=[2, pairs], seed=tf.stack([key, tf.cast(step, tf.int64)]), dtype=dtype))
    # u is in [0, 1), so 1 - u is in (0, 1] and its log is finite.
    radius = tf.sqrt(tf.math.log1p(-u_radius) * -2.0)
    angle = u_angle * (2.0 * math.pi)
    z = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    if 2 * pairs != size:
        z = z[:size]
    return tf.reshape(z, [num_proj, pd, d])


def projected_energy(W, draws):
    """Mean over ``draws [T, pd, d]`` of the half-space energy of ``P_t W``."""
    num_proj, pd, d = static_dims(draws)
    n = static_dims(W)[1]
    # One GEMM for all T projections: [T*pd, d] x [d, N].
    PW = tf.reshape(tf.matmul(tf.reshape(draws, [num_proj * pd, d]), W), [num_proj, pd, n])
    return tf.reduce_mean(hyperspherical_energy(PW, power='2', half_space=True))


def random_projection_term(W, pd, num_proj, seed, step, layer_index):
    """RP term: mean over T fresh projections of the half-space energy of P W."""
    d = static_dims(W)[0]
    return projected_energy(W, random_projection_draws(d, pd, num_proj, seed, step, layer_index, W.dtype))


def projection_variable(d, pd, name='projection'):
    """A learned ``P [pd, d]``, N(0, 1) init, hidden from the main optimiser."""
    return tf.get_variable(
        name, [pd, d], initializer=tf.random_normal_initializer(0.0, 1.0),
        trainable=False,
        collections=[tf.GraphKeys.GLOBAL_VARIABLES, PROJECTION_COLLECTION])


def _times_w_transposed(G, W):
    # G W^T formed as (W G^T)^T: faster on TensorFlow's CPU kernels at these shapes.
    return tf.transpose(tf.matmul(W, G, transpose_b=True))


@tf.custom_gradient
def _project(P, W):
    """P W for a learned P [pd, d], its gradient for P formed by _times_w_transposed."""
    def grad(dQ):
        return _times_w_transposed(dQ, W), tf.matmul(P, dQ, transpose_a=True)
    return tf.matmul(P, W), grad


def _p_decay(P):
    # 1e-3 * 5e-4 * sum(P^2) / 2; l2_loss is sum(P^2) / 2 with a one-op gradient.
    return P_DECAY * tf.nn.l2_loss(P)


def angle_loss_of(W):
    """``Q -> ||C(Q) - C(W)||_F``: how far a projection ``Q = P W`` distorts the
    angles between the neurons."""
    C_W = pairwise_cosine(W)
    return lambda Q: tf.norm(pairwise_cosine(Q) - C_W)


def negative_projected_energy(Q):
    """``-E(Q)`` (full space, power '2'): what AdvP's P descends on."""
    return -hyperspherical_energy(Q, '2')


def angle_loss(W, P):
    """``||C(P W) - C(W)||_F``: how far P distorts the neurons' angles."""
    return angle_loss_of(W)(_project(P, W))


def projected_half_space_energy(W, P):
    """The CoMHE energy of a projection: half-space, power '2', of P W."""
    return hyperspherical_energy(_project(P, W), '2', half_space=True)


def angle_projection_lookahead(W, P, lr, lookahead_decay=False):
    """AP: ``(P', L_P)`` with ``P' = P - lr * dA/dP`` (gradient kept in the graph),
    ``A`` the angle loss, as the release's ``p - lr * tf.gradients(p_loss, p)[0]``;
    ``lookahead_decay``: ``dL_P/dP``, P's scaled weight decay included (the protocol)."""
    angle = angle_loss(W, P)
    objective = angle + _p_decay(P)
    P_ahead = tf.identity(P - lr * tf.gradients(objective if lookahead_decay else angle, P)[0],
                          name='projection_lookahead')
    return P_ahead, objective


def adversarial_projection_lookahead(W, P, lr):
    """AdvP: ``(P', -E_P + decay)`` with ``E_P = E(P W)``, ``P' = P + lr * dE_P/dP``."""
    projected_energy = hyperspherical_energy(_project(P, W), '2')
    P_ahead = tf.identity(P + lr * tf.gradients(projected_energy, P)[0],
                          name='projection_lookahead')
    return P_ahead, -projected_energy + _p_decay(P)


def angle_projection_term(W, P, lr, lookahead_decay=False):
    """AP term and P's objective: ``(E_half(P' W), L_P)``."""
    P_ahead, objective = angle_projection_lookahead(W, P, lr, lookahead_decay)
    return projected_half_space_energy(W, P_ahead), objective


def adversarial_projection_term(W, P, lr):
    """AdvP term and P's objective: ``(E_half(P' W), -E_P + decay)``."""
    P_ahead, objective = adversarial_projection_lookahead(W, P, lr)
    return projected_half_space_energy(W, P_ahead), objective


# variant -> (its term, what its P descends on as a function of Q = P W, given W)
LEARNED_VARIANTS = {
    'angle': (angle_projection_term, angle_loss_of),
    'adversarial': (adversarial_projection_term, lambda W: negative_projected_energy),
}


@dataclass
class LearnedProjection:
    """A learned P, its layer's W and its objective as a function of Q = P W
    (P's weight decay not included: the descent adds it)."""
    P: tf.Variable
    W: tf.Tensor
    objective_of_projected: Callable
    stepped: object = None   # P after the iteration's steps, which the term used; None: P itself


def learned_projection_term(W, pd, lr, variant, iters, lookahead_decay=False):
    """AP (``variant='angle'``) or AdvP (``'adversarial'``) for one layer: its P
    (in the current variable scope) and its term. P's objective is registered
    for the training loop's P steps (``projection_descent``) and for logging.

    ``iters`` > 0: the term is that of P after ``iters`` descent steps, taken in
    the same graph (a function of P and W, not a read of P after an update), and
    ``projection_descent`` assigns those steps to P: P steps and main step are
    then one session call, and the main step cannot read P before its steps.
    ``iters=0`` (bench/legacy.py's loop of two calls, as the release ran): the term reads
    P; the P steps are a call of their own, before.
    ``lookahead_decay`` (AP only): see ``angle_projection_lookahead``."""
    term_fn, objective_of = LEARNED_VARIANTS[variant]
    if lookahead_decay and variant != 'angle':
        raise ValueError(f'lookahead_decay is an AP option; {variant!r} has no decay in its look-ahead')
    extra = dict(lookahead_decay=True) if lookahead_decay else {}
    P = projection_variable(static_dims(W)[0], pd)
    objective_of_projected = objective_of(W)
    # A value to the main loss, as P is: no gradient into the steps (nor their while loop).
    stepped = tf.stop_gradient(descend_projection(P, W, objective_of_projected, lr, iters)) \
        if iters else None
    term, objective = term_fn(W, P if stepped is None else stepped, lr, **extra)
    if stepped is not None:   # the objective logged and descended on is that of P itself
        objective = objective_of_projected(_project(P, W)) + _p_decay(P)
    tf.add_to_collection(P_OBJECTIVE_COLLECTION, objective)
    tf.add_to_collection(LEARNED_COLLECTION,
                         LearnedProjection(P, W, objective_of_projected, stepped))
    return term


def descend_projection(P, W, objective_of_projected, lr, iters, form='auto'):
    """P after ``iters`` plain gradient-descent steps, learning rate ``lr``, on
    ``L(P) = objective(P W) + P_DECAY * sum(P^2) / 2`` (W held fixed):

        P_{k+1} = a P_k - lr G_k W^T,   a = 1 - lr P_DECAY,   G_k = dobjective/dQ at Q_k = P_k W

    ``form='direct'`` computes exactly that. ``'gram'`` takes the steps in the
    N-dimensional space instead, with K = W^T W formed once:

        Q_{k+1} = a Q_k - lr G_k K,   S_{k+1} = a S_k + G_k,   P_iters = a^iters P_0 - lr S_iters W^T

    (the same P_iters, by induction), so each step costs pd N^2 instead of
    2 pd d N. ``'auto'`` takes whichever needs fewer multiply-adds: the Gram
    form for AdvP's 10 steps, the direct one for AP's single step.
    """
    if form not in ('auto', 'direct', 'gram'):
        raise ValueError(f"form must be 'auto', 'direct' or 'gram', got {form!r}")
    pd, d = P.shape.as_list()
    n = W.shape.as_list()[1]
    if form == 'auto':
        direct, gram = descent_costs(pd, d, n, iters)
        form = 'gram' if gram < direct else 'direct'
    W = tf.stop_gradient(W)
    P0 = tf.convert_to_tensor(P)
    lr = tf.cast(lr, P0.dtype)
    shrink = 1.0 - lr * P_DECAY

    def grad_q(Q):
        return tf.gradients(objective_of_projected(Q), Q)[0]

    def unfinished(k, *_):
        return k < iters

    if form == 'direct':
        def step(k, P):
            return k + 1, shrink * P - lr * _times_w_transposed(grad_q(tf.matmul(P, W)), W)
        _, P_end = tf.while_loop(unfinished, step, [tf.constant(0), P0])
        return P_end
    K = tf.matmul(W, W, transpose_a=True)

    def gram_step(k, Q, S):
        G = grad_q(Q)
        return k + 1, shrink * Q - lr * tf.matmul(G, K), shrink * S + G

    _, _, S = tf.while_loop(unfinished, gram_step,
                            [tf.constant(0), tf.matmul(P0, W), tf.zeros([pd, n], W.dtype)])
    return tf.pow(shrink, tf.cast(iters, P0.dtype)) * P0 - lr * _times_w_transposed(S, W)


def projection_descent(lr, iters, form='auto'):
    """One op: ``iters`` gradient-descent steps on every registered learned P
    (for a P whose term took its steps in the graph, the assignment of those)."""
    learned = tf.get_collection(LEARNED_COLLECTION)
    if not learned:
        return None
    with tf.name_scope('projection_descent'):
        return tf.group(*[p.P.assign(p.stepped if p.stepped is not None else descend_projection(
                              p.P, p.W, p.objective_of_projected, lr, iters, form))
                          for p in learned])
