"""``train.py --engine keras``: the protocol with Keras 3 on JAX, TensorFlow or PyTorch.

Modules: ``network`` (CNN-9 as a Keras model, the release's batch norm), ``terms`` (a
variant's terms in the library's math), ``step`` (one iteration as a pure, compiled
function), ``checkpoints`` (the state's npz files and their index), ``testset`` (the test
pass on the device), ``events`` (TensorBoard scalars), ``device`` (the backend's device),
``engine`` (the run, through common.run.loop).
"""
