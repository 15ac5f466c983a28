"""Loaded by the train.py processes the tests start (their PYTHONPATH holds this folder).

TensorFlow's import pulls in Keras, and Keras and TensorFlow Lite then import
scikit-learn and JAX when they are installed (the development requirements install
both, for the digits experiment and the Keras tests). train.py uses neither, and
those imports cost a train.py start about 2.5 of its 10 s on the 2-core development
machine; make test starts some thirty. Here they fail as if the packages were absent,
which both libraries handle. A user's train.py imports them as usual.
"""
import sys

NOT_FOR_TRAIN_PY = ('sklearn', 'jax', 'jaxlib')


class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in NOT_FOR_TRAIN_PY:
            raise ImportError(f'{name} is left out of the train.py processes of the tests')
        return None


sys.meta_path.insert(0, _Absent())
