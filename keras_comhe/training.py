"""The AP/AdvP P steps in Keras training: ``CoMHEModel`` for ``model.fit``, and
``build_projections`` / ``take_projection_steps`` for a custom training loop.

Every training step, before the main step (docs/protocol.md section 3): each learned P
takes its ``iters`` gradient steps at the optimiser's current learning rate
on the current weights; then the main loss, whose AP/AdvP terms use the
look-ahead from the new P at that learning rate. ``CoMHEModel.train_step``
does this inside the backend's compiled step: on TensorFlow and PyTorch by
assigning the variables, on JAX statelessly (the same code under a
``keras.StatelessScope``, the new values put into the step's state).
"""
import keras
from keras import ops

from keras_comhe.regularizers import PACKAGE, _LearnedProjection


def learned_regularizers(model):
    """``[(kernel variable, AP/AdvP regulariser)]`` of a model's trainable kernels."""
    found, owners = [], {}
    for variable in model.trainable_weights:
        reg = getattr(variable, 'regularizer', None)
        if isinstance(reg, _LearnedProjection):
            if id(reg) in owners:
                raise ValueError(f'one {type(reg).__name__} regularises both {owners[id(reg)]} and '
                                 f'{variable.path}: give each layer its own instance (P is per layer)')
            owners[id(reg)] = variable.path
            found.append((variable, reg))
    return found


def build_projections(model):
    """Create the P of every AP/AdvP regulariser of a built model (idempotent)."""
    if not model.built:
        raise ValueError('build the model before CoMHE can create its P matrices: give it an '
                         'Input (functional, or Sequential with keras.Input) or call model.build(shape)')
    learned = learned_regularizers(model)
    for kernel, reg in learned:
        if not reg.built:
            reg.build(tuple(kernel.shape))
        elif tuple(reg.projection.shape)[1] != _fan_in(kernel.shape):
            raise ValueError(f'{reg.name} has a P for another kernel shape than {kernel.path} '
                             f'{tuple(kernel.shape)}: give each layer its own instance')
    return learned


def _fan_in(shape):
    d = 1
    for s in tuple(shape)[:-1]:
        d *= s
    return d


def current_learning_rate(optimizer):
    """The optimiser's learning rate for the step about to be taken (a schedule
    evaluated at its iteration count)."""
    return ops.convert_to_tensor(optimizer.learning_rate)


def take_projection_steps(model, learning_rate):
    """The P steps of every AP/AdvP regulariser of ``model`` (assigns P and the
    look-ahead's learning rate). Call before each training step; under JAX's
    ``jit`` wrap it in a ``keras.StatelessScope`` and read the new values back."""
    for kernel, reg in build_projections(model):
        reg.take_steps(kernel, learning_rate)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CoMHEModel(keras.Model):
    """Wraps a built model whose layers use CoMHE regularisers; ``fit`` then takes
    the AP/AdvP P steps before every training step (nothing extra for MHE/RP).

        model = keras_comhe.CoMHEModel(model)
        model.compile(optimizer=..., loss=..., jit_compile=True)
        model.fit(...)
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.wrapped = model
        self._learned = build_projections(model)

    def call(self, inputs, training=None):
        return self.wrapped(inputs, training=training)

    def take_projection_steps(self):
        if self._learned:
            lr = current_learning_rate(self.optimizer)
            for kernel, reg in self._learned:
                reg.take_steps(kernel, lr)

    def train_step(self, *args):
        if keras.backend.backend() != 'jax':
            self.take_projection_steps()
            return super().train_step(*args)
        state, data = args
        return super().train_step(self._stateless_projection_steps(state), data)

    def _stateless_projection_steps(self, state):
        """JAX: the P steps on the step's state; returns the state with the new P."""
        if not self._learned:
            return state
        trainable, non_trainable, optimizer_vars, metrics = state
        mapping = (list(zip(self.trainable_variables, trainable))
                   + list(zip(self.non_trainable_variables, non_trainable))
                   + list(zip(self.optimizer.variables, optimizer_vars)))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.take_projection_steps()
        non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        return trainable, non_trainable, optimizer_vars, metrics

    def get_config(self):
        return dict(super().get_config(), model=keras.saving.serialize_keras_object(self.wrapped))

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop('model'), custom_objects=custom_objects)
        return cls(model, **config)
