"""comhe.jax, the plain-JAX front: values and gradients against the float64
references of tests/helpers/numpy_oracle.py (float64 under ``jax.enable_x64``, float32 within
the bound of tests/helpers/float32_bound.py), pure functions under jit / grad / vmap with
no hidden state, pytrees of kernels, half precision and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import comhe.jax as cj
import float32_bound
import numpy_oracle as ref
from tolerances import F64_RTOL, FD_RTOL, close

LR, ITERS = 0.1, 3


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize('power', cj.POWERS)
def test_energy_float64_equals_reference(arrays, x64, power):
    for half in (False, True):
        W = jnp.asarray(arrays['W'])
        assert W.dtype == jnp.float64
        got = jax.jit(cj.hyperspherical_energy, static_argnums=(1, 2))(W, power, half)
        assert got.dtype == jnp.float64
        close(got, ref.energy(arrays['W'], power, half), F64_RTOL, f'energy {power} {half}')
        batched = jax.vmap(lambda w: cj.hyperspherical_energy(w, power, half))(jnp.asarray(arrays['B']))
        close(batched, [ref.energy(b, power, half) for b in arrays['B']], F64_RTOL, 'vmap')


def test_energy_gradients_float64(arrays, x64):
    """Power '2''s written-out gradient (jax.custom_vjp) against central differences of
    the reference, and jax.test_util's numerical check of it (first order, reverse)."""
    from jax import test_util
    W = jnp.asarray(arrays['W'])
    for half in (False, True):
        g = jax.grad(lambda w: cj.hyperspherical_energy(w, '2', half))(W)
        fd = ref.finite_difference_grad(lambda w: ref.energy(w, '2', half), arrays['W'])
        close(g, fd, FD_RTOL, f'gradient half={half}')
        test_util.check_grads(lambda w: cj.hyperspherical_energy(w, '2', half), (W,), order=1,
                                  modes=('rev',))


def test_terms_float64_equal_reference(arrays, x64):
    W, P, draws = (jnp.asarray(arrays[k]) for k in ('W', 'P', 'draws'))
    from comhe import projections
    close(projections.random_projection_term(W, draws), ref.random_projection_term(arrays['W'], arrays['draws']),
          F64_RTOL, 'RP term on given draws')
    for variant in cj.VARIANTS:
        term = jax.jit(lambda w, p: cj.learned_projection_term(variant, w, p, LR))(W, P)
        close(term, ref.learned_projection_term(variant, arrays['W'], arrays['P'], LR), FD_RTOL, variant)
        stepped = jax.jit(lambda p, w: cj.projection_step(variant, p, w, LR, ITERS))(P, W)
        close(stepped, ref.descend(variant, arrays['P'], arrays['W'], LR, ITERS), FD_RTOL, variant + ' steps')
        ahead = cj.lookahead(variant, W, P, LR)
        close(ahead, ref.lookahead(variant, arrays['W'], arrays['P'], LR), FD_RTOL, variant + ' lookahead')
    close(cj.learned_projection_term('angle', W, P, LR, lookahead_decay=True),
          ref.learned_projection_term('angle', arrays['W'], arrays['P'], LR, True), FD_RTOL, 'AP decay')


def test_float32_within_the_bound(arrays):
    W32 = arrays['W'].astype(np.float32)
    for power in ('2', 'a2'):
        for half in (False, True):
            got = cj.hyperspherical_energy(jnp.asarray(W32), power, half)
            assert got.dtype == jnp.float32
            float32_bound.assert_float32_result(float(got), lambda W: ref.energy(W, power, half),
                                                {'W': W32}, n=18, depth=4, what=f'jax float32 {power}')


def kernels():
    keys = jax.random.split(jax.random.key(0), 4)
    return {'conv': jax.random.normal(keys[0], (3, 3, 4, 8)), 'dense': [
        jax.random.normal(keys[1], (36, 8)), jax.random.normal(keys[2], (36, 8)),
        jax.random.normal(keys[3], (8, 10))]}


def test_pytree_losses_are_sums_of_the_kernels_terms():
    """Over a pytree, each loss is the sum of the single-kernel terms, keys split per
    kernel in leaf order; the kernels' neurons are their last axis."""
    ks = kernels()
    leaves = jax.tree_util.tree_leaves(ks)
    conv = np.asarray(ks['conv'], np.float64).reshape(-1, 8)
    close(cj.neurons(ks['conv']), conv, 0, 'neurons')
    close(cj.mhe_loss(ks, '2', True), sum(ref.energy(np.asarray(k).reshape(-1, k.shape[-1]), '2', True)
                                         for k in leaves), 1e-5, 'mhe_loss')
    key = jax.random.key(3)
    keys = jax.random.split(key, len(leaves))
    want = sum(cj.random_projection_term(k, cj.neurons(w), 5, 3) for k, w in zip(keys, leaves))
    close(cj.random_projection_loss(key, ks, pd=5, pn=3), want, 1e-6, 'random_projection_loss')
    Ps = cj.init_projections(jax.random.key(1), ks, pd=5)
    assert jax.tree_util.tree_structure(Ps) == jax.tree_util.tree_structure(ks)
    assert Ps['conv'].shape == (5, 36) and Ps['dense'][2].shape == (5, 8)
    stepped = cj.projection_steps('adversarial', Ps, ks, LR, ITERS)
    for P, k, S in zip(jax.tree_util.tree_leaves(Ps), leaves, jax.tree_util.tree_leaves(stepped)):
        # jointly stepped (same-shaped kernels stacked) equals one kernel at a time
        close(S, cj.projection_step('adversarial', P, cj.neurons(k), LR, ITERS), 1e-5, 'joint steps')
    loss = cj.learned_projection_loss('adversarial', ks, stepped, LR)
    close(loss, sum(cj.learned_projection_term('adversarial', cj.neurons(k), P, LR)
                    for k, P in zip(leaves, jax.tree_util.tree_leaves(stepped))), 1e-6, 'learned loss')


def test_pure_under_jit_no_hidden_state():
    """The same key gives the same draw and another key another; eager calls after jitted
    ones work (nothing traced is kept); the P step returns a new P, the old unchanged."""
    ks = kernels()
    rp = jax.jit(lambda ks, key: cj.random_projection_loss(key, ks, pd=5, pn=3))
    a, b = rp(ks, jax.random.key(1)), rp(ks, jax.random.key(1))
    assert a == b and rp(ks, jax.random.key(2)) != a
    assert cj.random_projection_loss(jax.random.key(1), ks, pd=5, pn=3) == pytest.approx(float(a), rel=1e-5)
    Ps = cj.init_projections(jax.random.key(1), ks, pd=5)
    before = jax.tree_util.tree_map(np.asarray, Ps)
    step = jax.jit(lambda Ps, ks, lr: cj.projection_steps('angle', Ps, ks, lr, 2))
    new = step(Ps, ks, 0.1)
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), y), Ps, before)
    assert not np.allclose(new['conv'], Ps['conv'])
    grads = jax.jit(jax.grad(lambda ks, Ps: cj.learned_projection_loss('angle', ks, Ps, 0.1)))(ks, new)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    cj.learned_projection_loss('angle', ks, new, 0.1)   # eager again: no leaked tracer


def test_half_precision_computed_in_float32():
    k = kernels()['dense'][0].astype(jnp.bfloat16)
    value = cj.mhe_loss(k, '2', True)
    assert value.dtype == jnp.float32
    assert value == cj.hyperspherical_energy(k.astype(jnp.float32), '2', True)


def test_bad_input_is_refused_clearly():
    k = kernels()['dense'][0]
    with pytest.raises(ValueError, match='at least 2 axes'):
        cj.neurons(jnp.ones(5))
    with pytest.raises(ValueError, match='neuron_axis 3 is out of range'):
        cj.neurons(k, 3)
    with pytest.raises(ValueError, match='pd=40 is larger than the dimension d=36'):
        cj.random_projection_term(jax.random.key(0), k, pd=40)
    with pytest.raises(ValueError, match='pn must be an integer >= 1'):
        cj.random_projection_term(jax.random.key(0), k, pd=4, pn=0)
    with pytest.raises(TypeError, match='floating point'):
        cj.neurons(jnp.ones((4, 3), jnp.int32))
    with pytest.raises(ValueError, match='at least 2 neurons'):
        cj.mhe_loss(jnp.ones((4, 1)))
    with pytest.raises(ValueError, match='variant must be one of'):
        cj.projection_step('random', jnp.ones((2, 36)), k, 0.1, 1)
    with pytest.raises(ValueError, match='variant must be one of'):
        cj.lookahead('random', k, jnp.ones((2, 36)), 0.1)
    with pytest.raises(ValueError, match=r'pnd=9 leaves a layer \(8 neurons\) without a projection'):
        cj.random_projection_term(jax.random.key(0), k, pd=4, pnd=9)
    with pytest.raises(ValueError, match='form must be one of auto, direct, gram'):
        cj.projection_step('adversarial', jnp.ones((2, 36)), k, 0.1, 1, form='fast')
    assert np.isnan(cj.hyperspherical_energy(k.at[0, 0].set(jnp.nan)))
    assert np.isnan(cj.learned_projection_term('adversarial', k.at[0, 0].set(jnp.nan), jnp.ones((4, 36)), 0.1))


def test_errors_over_a_pytree_name_the_kernel():
    ks = {'conv1': jnp.ones((3, 3, 1, 16)), 'dense': [jnp.ones((36, 8)), jnp.ones(3)]}
    with pytest.raises(ValueError, match=r"kernels\['conv1'\]: pd=30 is larger than the dimension d=9"):
        cj.init_projections(jax.random.key(0), ks, pd=30)
    with pytest.raises(ValueError, match=r"kernels\['dense'\]\[1\]: a weight needs at least 2 axes"):
        cj.mhe_loss(ks)
    with pytest.raises(ValueError, match='static under jax.jit'):
        jax.jit(lambda k, pd: cj.random_projection_term(jax.random.key(0), k, pd))(jnp.ones((36, 8)), 4)
    assert cj.init_projection(jax.random.key(0), jnp.ones((36, 8)), np.int64(4)).shape == (4, 36)
