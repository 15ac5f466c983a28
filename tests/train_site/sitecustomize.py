"""Loaded by the train.py and benchmark processes the tests start (on their PYTHONPATH).

TensorFlow's import pulls in Keras, and Keras and TensorFlow Lite then import
scikit-learn and JAX when they are installed (the development requirements install
all three, for the digits experiment and the Keras tests). train.py uses none of
them (common/ builds its layers from compat.v1 ops), and those imports are a large
part of what `import tensorflow` takes; make test starts some twenty such processes. Here they are absent, as if
not installed (None in sys.modules: `import` raises ImportError and
importlib.util.find_spec returns None), which TensorFlow handles. A user's
train.py imports them as usual.
"""
import sys

NOT_FOR_TRAIN_PY = ('sklearn', 'jax', 'jaxlib', 'keras')

for _name in NOT_FOR_TRAIN_PY:
    sys.modules.setdefault(_name, None)
