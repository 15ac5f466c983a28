"""The CoMHE terms written the straightforward way, as the authors' release did.

Only for bench/step_time.py: the baseline the batched ops of common/paper/energy.py
and common/paper/projections.py are measured against. Same mathematics (docs/protocol.md
sections 1 and 3), the release's structure:

- the half space as the explicit 2N vectors ``[W, -W]`` and their 2N x 2N
  Gram matrix, the norms as an outer product, ``2 - 2c + I`` raised to the
  power -1, the lower triangle (diagonal included) subtracted off with
  ``band_part`` before the sum;
- random projection as a Python loop: one matmul, one concatenation, one
  2N x 2N Gram and its own elementwise ops per projection.

The random projections are drawn by TensorFlow's own normal sampler, one op
per layer sliced per projection in the loop (the release drew one
``tf.random_normal`` per projection: the same sampler, as many values). Fed
True, the graph's SAME_DRAWS placeholder switches them to our draws
(common.paper.projections.random_projection_draws), so that the loss values can be
checked against ours on the very same projections. The learned P of AP/AdvP
are the same variables (same names, same collections) with the same
objectives, so the training loop's P steps and the weights carry over.

Power '2' only: the kernel of CoMHE and of the half_mhe baseline in the benchmark.
"""
import tensorflow.compat.v1 as tf

from common.paper.projections import (P_OBJECTIVE_COLLECTION, P_DECAY_SCALE, WEIGHT_DECAY,
                                      projection_variable, random_projection_draws)


def cosine(W):
    """N x N normalised inner products of the columns of W [d, N], release style."""
    norm = tf.sqrt(tf.reduce_sum(W * W, [0], keepdims=True) + 1e-4)      # [1, N]
    norm_mat = tf.matmul(tf.transpose(norm), norm)                      # [N, N]
    return tf.matmul(tf.transpose(W), W) / norm_mat


def energy(W, half_space=False):
    """Power-'2' energy of the columns of W [d, N]; the half space via [W, -W]."""
    n = W.shape.as_list()[1]
    if half_space:
        W = tf.concat([W, -W], axis=1)
        n *= 2
    cross = 2.0 - 2.0 * cosine(W) + tf.diag([1.0] * n)
    pairs = tf.pow(cross, tf.ones_like(cross) * -1.0)
    pairs -= tf.matrix_band_part(pairs, -1, 0)           # keep i < j
    return tf.reduce_sum(pairs) / (n * (n - 1) / 2.0)


def first_term(W):
    return energy(W, half_space=True)


def score_term(W):
    return 10.0 * energy(W)


def hidden_half_mhe_term(W, ctx):
    return energy(W, half_space=True)


SAME_DRAWS = 'naive_same_draws:0'


def _same_draws_switch():
    """A boolean placeholder (default False), one per graph, named SAME_DRAWS."""
    graph = tf.get_default_graph()
    try:
        return graph.get_tensor_by_name(SAME_DRAWS)
    except KeyError:
        with graph.name_scope(None):
            return tf.placeholder_with_default(False, [], name=SAME_DRAWS.split(':')[0])


def release_draws(d, pd, num_proj, seed, step, layer_index, dtype=tf.float32):
    """N(0, 1) from TensorFlow's own normal sampler, as the release drew them
    (there one ``tf.random_normal`` per projection: the same number of values)."""
    key = tf.cast(seed, tf.int64) * 1000003 + layer_index
    return tf.random.stateless_normal([num_proj, pd, d], seed=tf.stack([key, tf.cast(step, tf.int64)]),
                                      dtype=dtype)


def random_projection_term(W, pd, num_proj, seed, step, layer_index):
    """Mean over a Python loop of projections of the half-space energy of P W.

    The draws come from the release's sampler unless the graph's SAME_DRAWS
    placeholder is fed True: then they are ours, for checking the values."""
    d = W.shape.as_list()[0]
    args = (d, pd, num_proj, seed, step, layer_index, W.dtype)
    draws = tf.cond(_same_draws_switch(), lambda: random_projection_draws(*args),
                    lambda: release_draws(*args))
    total = 0.0
    for t in range(num_proj):
        total += energy(tf.matmul(draws[t], W), half_space=True)
    return total / num_proj


def _p_decay(P):
    return P_DECAY_SCALE * WEIGHT_DECAY * tf.reduce_sum(P * P) / 2.0


def angle_projection_term(W, pd, lr):
    P = projection_variable(W.shape.as_list()[0], pd)
    angle = tf.norm(cosine(tf.matmul(P, W)) - cosine(W))
    objective = angle + _p_decay(P)
    P_ahead = P - lr * tf.gradients(angle, P)[0]   # the release's look-ahead: the angle loss alone
    tf.add_to_collection(P_OBJECTIVE_COLLECTION, objective)
    return energy(tf.matmul(P_ahead, W), half_space=True)


def adversarial_projection_term(W, pd, lr):
    P = projection_variable(W.shape.as_list()[0], pd)
    projected = energy(tf.matmul(P, W))
    P_ahead = P + lr * tf.gradients(projected, P)[0]
    tf.add_to_collection(P_OBJECTIVE_COLLECTION, -projected + _p_decay(P))
    return energy(tf.matmul(P_ahead, W), half_space=True)
