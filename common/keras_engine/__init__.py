"""``train.py --engine keras``: the protocol with Keras 3 on JAX, TensorFlow or PyTorch.

Modules: ``network`` (CNN-9 as a Keras model, the release's batch norm), ``terms``
(what each variant adds to the loss), ``step`` (one iteration as a pure, compiled
function), ``engine`` (the run: state, checkpoints, test pass, through common.run.loop).
"""
