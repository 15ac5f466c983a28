"""The three CoMHE terms of one layer (docs/protocol.md section 3), the math of the
reproduction's common/paper/projections.py, written once for PyTorch, JAX and Keras 3.

Each projects the neurons ``W [d, N]`` with ``P [pd, d]`` and takes the
half-space energy (power '2') of ``P W``:

- RP: the mean over ``T`` Gaussian draws ``[T, pd, d]`` (one batched GEMM,
  one batched energy);
- AP: a learned P whose own loss is ``L_P = ||C(P W) - C(W)||_F + P_DECAY *
  sum(P^2) / 2``; the term uses the look-ahead ``P' = P - lr dA/dP``, ``A`` the
  angle loss alone, as the release (``lookahead_decay=True``: ``dL_P/dP``);
- AdvP: a learned P that maximises ``E(P W)`` (full space); look-ahead
  ``P' = P + lr dE/dP``; its own steps descend ``-E(P W) + P_DECAY sum(P^2) / 2``.

The gradients inside the look-aheads and the P steps are written out
(``comhe.energy.energy_gradient`` / ``cosine_vjp``), so each is an ordinary
expression the library differentiates into W for the main loss.
"""
import operator

from comhe.energy import (check_weight_matrix, cosine_vjp, energy_gradient, hyperspherical_energy,
                         pairwise_cosine)
from comhe.namespaces import namespace_of

WEIGHT_DECAY = 5e-4
P_DECAY_SCALE = 1e-3            # P's weight decay enters its own objective scaled down
P_DECAY = P_DECAY_SCALE * WEIGHT_DECAY
VARIANTS = ('angle', 'adversarial')
FORMS = ('auto', 'direct', 'gram')
_TINY = 1e-30                   # keeps the angle loss's norm differentiable at 0


def num_projections(n_neurons, pn, pnd):
    """T: ``pn`` projections, or ``n_neurons // pnd`` when ``pnd > 0``."""
    return n_neurons // pnd if pnd > 0 else pn


def checked_num_projections(n_neurons, pn, pnd, what='a layer'):
    """T for a layer of ``n_neurons``, or a ValueError when ``pnd`` leaves it none."""
    T = num_projections(n_neurons, pn, pnd)
    if T < 1:
        raise ValueError(f'pnd={pnd} leaves {what} ({n_neurons} neurons) without a projection; '
                         f'use pnd <= {n_neurons}, or pnd=0 with pn')
    return T


def check_form(form):
    """``form`` one of ``FORMS`` (how the P steps are taken), else a ValueError."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")


def static_int(name, value, minimum=1):
    """``value`` as a Python int >= ``minimum`` (NumPy integers too), or a ValueError that says
    so; it sets a shape or a loop's length, so under ``jax.jit`` it must be static, not a
    traced argument."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum} (a Python or NumPy int, static under '
                         f'jax.jit), got {value!r}')
    return number


def check_projection(W, pd, what='W'):
    """A layer ``W [d, N]`` that a ``pd``-dimensional projection can compress -> ``pd`` as
    an int."""
    check_weight_matrix(W)
    d = W.shape[-2]
    pd = static_int('pd', pd)
    if pd > d:
        raise ValueError(f'pd={pd} is larger than the dimension d={d} of the neurons of {what} '
                         f'{tuple(W.shape)}: a projection must compress; use pd <= {d}, or leave '
                         'that layer out (or give it plain MHE)')
    return pd


def random_projection_term(W, draws):
    """RP: mean over ``draws [T, pd, d]`` of the half-space energy of ``P_t W``."""
    ops = namespace_of(W)
    T, pd, d = draws.shape
    n = W.shape[-1]
    PW = ops.reshape(ops.matmul(ops.reshape(draws, (T * pd, d)), W), (T, pd, n))
    return ops.mean(hyperspherical_energy(PW, '2', half_space=True))


def _times_w_transposed(ops, G, W):
    return ops.matmul(G, ops.swapaxes(W, -1, -2))


def _angle_loss_grad(ops, Q, C_W):
    """(||C(Q) - C_W||_F, its gradient by Q); for a batch ``[G, pd, N]``, one each."""
    diff = pairwise_cosine(Q) - C_W
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(diff), axis=(-2, -1)), _TINY))
    return norm, cosine_vjp(Q, diff / ops.expand_dims(ops.expand_dims(norm, -1), -1))


def _objective_gradient(ops, variant, Q, C_W):
    """``objective_gradient`` given the cosines ``C_W`` of W (AP; None for AdvP)."""
    if variant == 'angle':
        return _angle_loss_grad(ops, Q, C_W)[1]
    return -energy_gradient(Q)


def objective_gradient(variant, Q, W):
    """d objective / dQ at ``Q = P W`` (without P's decay): AP's angle loss,
    AdvP's ``-E(Q)``."""
    return _objective_gradient(namespace_of(Q), variant, Q, pairwise_cosine(W) if variant == 'angle' else None)


def p_objective(variant, W, P):
    """P's own loss: ``L_P`` (AP) or ``-E(P W) + decay`` (AdvP)."""
    ops = namespace_of(W)
    Q = ops.matmul(P, W)
    decay = P_DECAY * ops.sum(ops.square(P)) / 2.0
    if variant == 'angle':
        return _angle_loss_grad(ops, Q, pairwise_cosine(W))[0] + decay
    return -hyperspherical_energy(Q, '2') + decay


def lookahead(variant, W, P, lr, lookahead_decay=False):
    """``P' = P - lr dA/dP`` (AP; ``dL_P/dP`` with ``lookahead_decay``) or
    ``P + lr dE(P W)/dP`` (AdvP), differentiable in W."""
    check_variant(variant)
    ops = namespace_of(W)
    Q = ops.matmul(P, W)
    if variant == 'angle':
        grad = _times_w_transposed(ops, objective_gradient('angle', Q, W), W)
        if lookahead_decay:
            grad = grad + P_DECAY * P
        return P - lr * grad
    if lookahead_decay:
        raise ValueError('lookahead_decay is an AP option; AdvP has no decay in its look-ahead')
    return P + lr * _times_w_transposed(ops, energy_gradient(Q), W)


def check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def learned_projection_term(variant, W, P, lr, lookahead_decay=False):
    """AP or AdvP term: the half-space energy of ``P' W``."""
    ops = namespace_of(W)
    P_ahead = lookahead(variant, W, P, lr, lookahead_decay)
    return hyperspherical_energy(ops.matmul(P_ahead, W), '2', half_space=True)


def descent_costs(pd, d, n, iters):
    """Multiply-adds of ``iters`` P steps: (direct, through the N x N Gram of W)."""
    direct = iters * 2 * pd * d * n
    gram = 2 * pd * d * n + d * n * n + iters * pd * n * n
    return direct, gram


def descend_projection(variant, P, W, lr, iters, form='auto'):
    """P after ``iters`` plain gradient steps at rate ``lr`` on its own objective
    (W held fixed), as common.paper.projections.descend_projection:

        P_{k+1} = a P_k - lr G_k W^T,   a = 1 - lr P_DECAY,   G_k = d objective / dQ at P_k W

    ``'gram'`` takes the same steps in the N-dimensional space (K = W^T W once:
    Q_{k+1} = a Q_k - lr G_k K, S_{k+1} = a S_k + G_k, P = a^iters P_0 - lr S W^T);
    ``'auto'`` picks whichever needs fewer multiply-adds. ``P [pd, d]`` and ``W [d, N]``,
    or a batch of layers of one shape, ``[G, pd, d]`` and ``[G, d, N]``.
    """
    return descend_projections(variant, [P], [W], lr, iters, form)[0]


def descend_projections(variant, Ps, Ws, lr, iters, form='auto'):
    """``descend_projection`` of several layers (each ``P [pd, d]``, ``W [d, N]``), in one
    loop of ``iters`` steps: the layers of one shape stacked, so each step is one batched
    op per shape for all of them (CNN-9's nine hidden layers have six shapes), instead of
    a loop per layer. Returns the Ps in the order given."""
    check_variant(variant)
    iters = static_int('iters', iters, 0)
    check_form(form)
    if len(Ps) != len(Ws):
        raise ValueError(f'{len(Ps)} projections for {len(Ws)} layers')
    if not Ps:
        return []
    ops = namespace_of(Ws[0])
    groups = {}
    for i, (P, W) in enumerate(zip(Ps, Ws)):
        groups.setdefault((tuple(P.shape), tuple(W.shape)), []).append(i)
    descents = [_Descent(ops, variant, [Ps[i] for i in members], [Ws[i] for i in members], lr, iters,
                         form)
                for members in groups.values()]

    def step(_, carries):
        return tuple(descent.step(carry) for descent, carry in zip(descents, carries))

    carries = ops.fori_loop(0, iters, step, tuple(descent.start() for descent in descents))
    out = [None] * len(Ps)
    for members, descent, carry in zip(groups.values(), descents, carries):
        P = descent.finish(carry)
        for k, i in enumerate(members):
            out[i] = P[k] if descent.stacked else P
    return out


class _Descent:
    """The P steps of the layers of one shape, stacked into ``[G, pd, d]`` where there
    are several: ``start()`` the loop's carry, ``step(carry)``, ``finish(carry)`` the Ps."""

    def __init__(self, ops, variant, Ps, Ws, lr, iters, form):
        self.ops = ops
        self.stacked = len(Ps) > 1
        W = ops.stack(Ws) if self.stacked else Ws[0]
        Ps = [ops.as_tensor(P, like=W) for P in Ps]
        self.P = ops.stop_gradient(ops.stack(Ps) if self.stacked else Ps[0])
        self.W = ops.stop_gradient(W)
        pd, d = self.P.shape[-2:]
        n = self.W.shape[-1]
        if form == 'auto':
            direct, gram = descent_costs(pd, d, n, iters)
            form = 'gram' if gram < direct else 'direct'
        self.form, self.iters, self.variant = form, iters, variant
        self.lr = ops.as_tensor(lr, like=self.P)
        self.shrink = 1.0 - self.lr * P_DECAY
        self.C_W = pairwise_cosine(self.W) if variant == 'angle' else None
        self.K = ops.matmul(ops.swapaxes(self.W, -1, -2), self.W) if form == 'gram' else None

    def grad_q(self, Q):
        return _objective_gradient(self.ops, self.variant, Q, self.C_W)

    def start(self):
        if self.form == 'direct':
            return self.P
        Q = self.ops.matmul(self.P, self.W)
        return Q, self.ops.zeros_like(Q)

    def step(self, carry):
        ops = self.ops
        if self.form == 'direct':
            return self.shrink * carry - self.lr * _times_w_transposed(
                ops, self.grad_q(ops.matmul(carry, self.W)), self.W)
        Q, S = carry
        G = self.grad_q(Q)
        return self.shrink * Q - self.lr * ops.matmul(G, self.K), self.shrink * S + G

    def finish(self, carry):
        if self.form == 'direct':
            return carry
        return (self.ops.power(self.shrink, float(self.iters)) * self.P
                - self.lr * _times_w_transposed(self.ops, carry[1], self.W))
