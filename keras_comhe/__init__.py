"""CoMHE for any Keras 3 model, on TensorFlow, JAX and PyTorch.

The reproduction's math (common/paper/energy.py, common/paper/projections.py: docs/protocol.md
sections 1 and 3) written once in ``keras.ops``, as Keras regularisers:

    import keras_comhe as comhe
    keras.layers.Conv2D(64, 3, kernel_regularizer=comhe.RandomProjection(pd=40, pn=20, seed=1))
    keras.layers.Dense(10, kernel_regularizer=comhe.MHE(weight=10.0))          # full-space, power '2'
    keras.layers.Conv2D(64, 3, kernel_regularizer=comhe.AdversarialProjection(pd=30, iters=10))
    model = comhe.CoMHEModel(model)     # AP/AdvP: takes their P steps in fit()

Modules: ``energy`` (the energies), ``projections`` (the three terms and the
P steps), ``regularizers`` (the Keras objects), ``training`` (the P steps in
``fit`` and in custom loops). Imports only Keras (not TensorFlow itself).
"""
from keras_comhe.energy import POWERS, filters_as_matrix, hyperspherical_energy, pairwise_cosine
from keras_comhe.regularizers import (MHE, AdversarialProjection, AngleProjection,
                                      RandomProjection)
from keras_comhe.training import (CoMHEModel, build_projections, learned_regularizers,
                                  take_projection_steps)

__all__ = ['POWERS', 'filters_as_matrix', 'hyperspherical_energy', 'pairwise_cosine', 'MHE',
           'RandomProjection', 'AngleProjection', 'AdversarialProjection', 'CoMHEModel',
           'build_projections', 'learned_regularizers', 'take_projection_steps']
