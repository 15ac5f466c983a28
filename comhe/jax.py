"""MHE and CoMHE for plain JAX: pure functions, state passed in and returned.

    import comhe.jax as cj

    Ps = cj.init_projections(key, kernels, pd=30)                 # AdvP/AP: a P per kernel
    def loss_fn(params, Ps, lr, x, y):
        ... + cj.learned_projection_loss('adversarial', kernels_of(params), Ps, lr)
    Ps = cj.projection_steps('adversarial', Ps, kernels_of(params), lr, iters=10)  # each step, first
    ... + cj.random_projection_loss(key, kernels_of(params), pd=40, pn=20)         # RP: a fresh key each step

``kernels`` is one kernel or any pytree of them (a dict of Flax/Haiku/Equinox
weights, say). A kernel's neurons lie along ``neuron_axis``, by default the last
(``Dense [in, out]``, ``Conv [kh, kw, in, out]``, as Flax and Haiku store them);
each neuron is flattened in the order of the other axes. Everything here is a
function of its arguments alone, so it works under ``jit``, ``grad`` and ``vmap``:
nothing is kept between calls, RP draws from the key it is given, and the P steps
return the new P rather than assigning it. Float16/bfloat16 kernels are computed in
float32; float64 (``jax_enable_x64``) stays float64. NaN weights give a NaN term.

The math is ``comhe.energy`` and ``comhe.projections``, shared with the PyTorch
and Keras fronts.
"""
import jax
import jax.numpy as jnp

from comhe import energy as _energy
from comhe import projections as _projections
from comhe.energy import POWERS
from comhe.projections import FORMS, VARIANTS, num_projections

__all__ = ['POWERS', 'VARIANTS', 'FORMS', 'neurons', 'hyperspherical_energy', 'random_projection_term',
           'init_projection', 'lookahead', 'learned_projection_term', 'projection_step', 'mhe_loss',
           'random_projection_loss', 'init_projections', 'projection_steps', 'learned_projection_loss']


def _float(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float32) if x.dtype in (jnp.float16, jnp.bfloat16) else x


def neurons(kernel, neuron_axis=-1):
    """``W [d, N]`` from a kernel whose neurons lie along ``neuron_axis``."""
    kernel = jnp.asarray(kernel)
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise TypeError(f'kernel must be floating point, got {kernel.dtype}: cast it first')
    return _float(_energy.neurons_as_columns(kernel, neuron_axis))


def hyperspherical_energy(W, power='2', half_space=False):
    """Energy of the columns of ``W [d, N]`` (a scalar) or ``[T, d, N]`` (``[T]``);
    ``power`` one of ``'0' '1' '2' 'a0' 'a1' 'a2'``. See ``comhe.energy``."""
    return _energy.hyperspherical_energy(_float(W), power, half_space)


def _check_counts(W, pd, pn, pnd):
    """RP's counts for ``W`` -> (pd, pn, pnd) as ints."""
    pd = _projections.check_projection(W, pd)
    pn, pnd = _projections.static_int('pn', pn), _projections.static_int('pnd', pnd, 0)
    _projections.checked_num_projections(W.shape[-1], pn, pnd)
    return pd, pn, pnd


def random_projection_term(key, W, pd=40, pn=20, pnd=0):
    """RP: mean over ``T`` Gaussian ``P_t [pd, d]`` drawn from ``key`` (``T = pn``, or
    ``N // pnd`` when ``pnd > 0``) of the half-space energy of ``P_t W``."""
    W = _float(W)
    pd, pn, pnd = _check_counts(W, pd, pn, pnd)
    T = num_projections(W.shape[-1], pn, pnd)
    draws = jax.random.normal(key, (T, pd, W.shape[0]), W.dtype)
    return _projections.random_projection_term(W, draws)


def init_projection(key, W, pd):
    """A learned ``P [pd, d]`` for ``W [d, N]``: N(0, 1), as the release."""
    W = _float(W)
    pd = _projections.check_projection(W, pd)
    return jax.random.normal(key, (pd, W.shape[0]), W.dtype)


def lookahead(variant, W, P, lr, lookahead_decay=False):
    """``P'``: ``P - lr dA/dP`` (AP, ``'angle'``) or ``P + lr dE(P W)/dP`` (AdvP,
    ``'adversarial'``), differentiable in ``W``."""
    W = _float(W)
    return _projections.lookahead(variant, W, jnp.asarray(P, W.dtype), lr, lookahead_decay)


def learned_projection_term(variant, W, P, lr, lookahead_decay=False):
    """AP or AdvP: the half-space energy of ``P' W``, ``P'`` the look-ahead at ``lr``."""
    W = _float(W)
    return _projections.learned_projection_term(variant, W, jnp.asarray(P, W.dtype), lr, lookahead_decay)


def projection_step(variant, P, W, lr, iters, form='auto'):
    """The new ``P`` after ``iters`` gradient steps at ``lr`` on its own objective,
    ``W`` held fixed (no gradient flows into ``W`` or ``P``)."""
    W = _float(W)
    return _projections.descend_projection(variant, jnp.asarray(P, W.dtype), W, lr, iters, form)


# ------------------------------------------------------------ over a pytree of kernels

def _matrices(kernels, neuron_axis, check=None):
    """([W [d, N] of each kernel], the treedef); an error names the kernel's path."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(kernels)
    if not with_paths:
        raise ValueError('no kernel given: kernels is an empty pytree')
    Ws = []
    for path, kernel in with_paths:
        try:
            W = neurons(kernel, neuron_axis)
            if check is not None:
                check(W)
        except (ValueError, TypeError) as e:
            where = jax.tree_util.keystr(path) or 'the kernel'
            raise type(e)(f'kernels{where if where.startswith("[") else " " + where}: {e}') from None
        Ws.append(W)
    return Ws, treedef


def mhe_loss(kernels, power='2', half_space=False, neuron_axis=-1):
    """The sum over the kernels of their energies (MHE)."""
    Ws, _ = _matrices(kernels, neuron_axis, lambda W: _energy.check_weight_matrix(W, power))
    return sum(hyperspherical_energy(W, power, half_space) for W in Ws)


def random_projection_loss(key, kernels, pd=40, pn=20, pnd=0, neuron_axis=-1):
    """The sum over the kernels of their RP terms, each kernel's draws from its own
    split of ``key``: pass a new key each step."""
    Ws, _ = _matrices(kernels, neuron_axis, lambda W: _check_counts(W, pd, pn, pnd))
    keys = jax.random.split(key, len(Ws))
    return sum(random_projection_term(k, W, pd, pn, pnd) for k, W in zip(keys, Ws))


def init_projections(key, kernels, pd, neuron_axis=-1):
    """A pytree shaped as ``kernels`` with each kernel's ``P [pd, d]``."""
    Ws, treedef = _matrices(kernels, neuron_axis, lambda W: _projections.check_projection(W, pd))
    keys = jax.random.split(key, len(Ws))
    return jax.tree_util.tree_unflatten(treedef, [init_projection(k, W, pd) for k, W in zip(keys, Ws)])


def projection_steps(variant, projections, kernels, lr, iters, form='auto', neuron_axis=-1):
    """The new Ps (a pytree as ``projections``) after ``iters`` steps each at ``lr``; the
    kernels of one shape are stepped together as one batched op."""
    Ws, treedef = _matrices(kernels, neuron_axis)
    Ps = treedef.flatten_up_to(projections)
    stepped = _projections.descend_projections(variant, [jnp.asarray(P, W.dtype) for P, W in zip(Ps, Ws)],
                                               Ws, lr, iters, form)
    return jax.tree_util.tree_unflatten(treedef, stepped)


def learned_projection_loss(variant, kernels, projections, lr, lookahead_decay=False, neuron_axis=-1):
    """The sum over the kernels of their AP/AdvP terms at their Ps and ``lr``."""
    Ws, treedef = _matrices(kernels, neuron_axis)
    Ps = treedef.flatten_up_to(projections)
    return sum(learned_projection_term(variant, W, P, lr, lookahead_decay) for W, P in zip(Ws, Ps))
