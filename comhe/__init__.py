"""CoMHE and MHE (compressive / minimum hyperspherical energy) as regularisers for
PyTorch, JAX and Keras 3, from the reference reproduction of Lin et al., CVPR 2020.

    import comhe.torch as comhe       # nn.Module regularisers for a PyTorch model
    import comhe.jax as comhe         # pure functions for plain JAX
    import keras_comhe as comhe       # Keras 3 regularisers (TensorFlow, JAX, PyTorch)

The math is written once (``comhe.energy``: the six kernels, full and half space;
``comhe.projections``: the RP, AP and AdvP terms and P's steps) and runs on each
library's own arrays (``comhe.namespaces``). Importing ``comhe`` imports none of
the frameworks; each front imports its own.
"""
__version__ = '0.1.0'
