"""keras_comhe, the Keras 3 front, as installed (tests/test_keras_comhe.py checks it
in depth on all three backends against the graph code): on the backend this process
runs (JAX unless KERAS_BACKEND says otherwise), the regulariser's value against the
float64 reference, and the clear errors for bad input and for plain ``jax.jit``."""
import keras
import numpy as np
import pytest

import float32_bound
import keras_comhe as comhe
import numpy_oracle as ref


def test_regularizer_equals_the_reference():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(3, 3, 2, 6)).astype(np.float32)    # Keras layout: neurons last
    got = float(comhe.MHE(2.0, 'a1', half_space=True)(kernel))
    float32_bound.assert_float32_result(got, lambda k: 2.0 * ref.energy(k.reshape(-1, 6), 'a1', True),
                                        {'k': kernel}, n=12, depth=4, what='keras MHE')


def test_bad_input_is_refused_clearly():
    layer = keras.layers.Dense(4, kernel_regularizer=comhe.RandomProjection(pd=8, pn=2, seed=1))
    layer.build((None, 3))
    with pytest.raises(ValueError, match='pd=8 is larger than the dimension d=3'):
        _ = layer.losses
    with pytest.raises(ValueError, match='pn must be an integer >= 1'):
        comhe.RandomProjection(pd=2, pn=0)
    with pytest.raises(ValueError, match='at least 2 neurons'):
        comhe.MHE()(np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match='at least 2 axes'):
        comhe.MHE()(np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r'pnd=9 leaves a layer \(4 neurons\) without a projection'):
        comhe.RandomProjection(pd=2, pnd=9, seed=1)(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match='form must be one of auto, direct, gram'):
        comhe.AngleProjection(pd=2, form='fast')
    with pytest.raises(ValueError, match=r'kernel of shape \(20, 1\): one neuron has no energy'):
        comhe.AdversarialProjection(pd=4).build((20, 1))


@pytest.mark.skipif(keras.backend.backend() != 'jax', reason='the JAX backend only')
def test_plain_jax_jit_is_refused_with_the_way_that_works():
    """Under plain jax.jit, RP's seed state would keep a tracer (the same draw every call,
    then an UnexpectedTracerError): it stops and names comhe.jax; eager calls still work."""
    import jax
    rp = comhe.RandomProjection(pd=2, pn=2, seed=1)
    kernel = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    with pytest.raises(ValueError, match='comhe.jax'):
        jax.jit(rp)(kernel)
    first, second = float(rp(kernel)), float(rp(kernel))
    assert np.isfinite(first) and first != second
