"""MHE and CoMHE as Keras regularisers: pass one as ``kernel_regularizer=`` to a
Dense or Conv layer (its kernel's last axis holds the neurons).

- ``MHE(weight, power, half_space)``: the plain energy, stateless.
- ``RandomProjection(pd, pn, pnd, weight, seed)``: RP; each call draws fresh
  ``[T, pd, d]`` Gaussians in one op from its ``keras.random.SeedGenerator``.
- ``AngleProjection(pd, iters, ...)`` / ``AdversarialProjection(...)``: AP /
  AdvP; a learned ``P`` per layer and the look-ahead term. Their P steps are
  taken by ``keras_comhe.CoMHEModel`` in ``fit`` (or ``take_projection_steps``
  in a custom loop).

The stateful ones are also Keras layers: the layer that owns the kernel then
tracks them (as its ``kernel_regularizer``), so their state (the seed, P, the
learning rate of the last P steps) is part of the model's non-trainable
variables: updated statelessly under JAX's ``jit``, and saved with the model.
"""
import keras
from keras import ops

from keras_comhe import projections
from keras_comhe.energy import POWERS, filters_as_matrix, hyperspherical_energy

PACKAGE = 'keras_comhe'


def _positive_int(name, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return value


def _refuse_traced_state(W, what):
    """Under plain ``jax.jit`` (outside Keras's own training, which runs in a
    ``keras.StatelessScope``) assigning this regulariser's state would leak a tracer
    into its variables and freeze its draws: stop with the way that works."""
    if keras.backend.backend() != 'jax':
        return
    import jax
    from keras.src.backend.common.stateless_scope import in_stateless_scope
    if isinstance(W, jax.core.Tracer) and not in_stateless_scope():
        raise ValueError(
            f'{what} under jax.jit outside Keras training would keep a traced value in its state '
            '(the same draw every call, then an UnexpectedTracerError): in plain JAX use comhe.jax '
            "(pure functions, state passed in and out), or call it inside a keras.StatelessScope")


def _check_pd(pd, d):
    if pd > d:
        raise ValueError(f'pd={pd} is larger than the dimension d={d} of the neurons of this kernel: a '
                         f'projection must compress; use pd <= {d}, or give that layer plain MHE')


def _weight(value):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f'weight must be a number, got {value!r}')
    return float(value)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MHE(keras.regularizers.Regularizer):
    """``weight * E(W)``: full-space (``half_space=False``) or half-space MHE,
    one of the six kernels ``'0' '1' '2' 'a0' 'a1' 'a2'``."""

    def __init__(self, weight=1.0, power='2', half_space=False):
        if power not in POWERS:
            raise ValueError(f"unknown power {power!r}; expected one of {', '.join(POWERS)}")
        self.weight, self.power, self.half_space = _weight(weight), power, bool(half_space)

    def __call__(self, kernel):
        W = filters_as_matrix(ops.convert_to_tensor(kernel))
        return self.weight * hyperspherical_energy(W, self.power, self.half_space)

    def get_config(self):
        return dict(weight=self.weight, power=self.power, half_space=self.half_space)


class _StatefulRegularizer(keras.layers.Layer, keras.regularizers.Regularizer):
    """A regulariser with variables; a Layer only so that its owner tracks them."""

    def __call__(self, kernel):   # not Layer.__call__: no input conversion, masking, autocast
        return self.weight * self.term(filters_as_matrix(ops.convert_to_tensor(kernel)))

    def get_config(self):
        return dict(self._config, name=self.name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomProjection(_StatefulRegularizer):
    """RP CoMHE: ``weight`` times the mean half-space energy (power '2') of
    ``P_t W`` over ``T`` fresh Gaussian ``P_t [pd, d]`` per call; ``T = pn``,
    or ``N // pnd`` when ``pnd > 0``. The draws come from a
    ``keras.random.SeedGenerator(seed)``: a given seed gives the same sequence."""

    def __init__(self, pd=40, pn=20, pnd=0, weight=1.0, seed=None, name=None):
        super().__init__(name=name)
        self._config = dict(pd=_positive_int('pd', pd), pn=_positive_int('pn', pn),
                            pnd=_positive_int('pnd', pnd, 0), weight=_weight(weight), seed=seed)
        self.pd, self.pn, self.pnd, self.weight = pd, pn, pnd, float(weight)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True   # nothing to build: the seed's state exists already

    def term(self, W):
        d, n = W.shape
        _check_pd(self.pd, d)
        _refuse_traced_state(W, 'RandomProjection')
        T = projections.checked_num_projections(n, self.pn, self.pnd)
        draws = keras.random.normal((T, self.pd, d), seed=self.seed_generator, dtype=W.dtype)
        return projections.random_projection_term(W, draws)


class _LearnedProjection(_StatefulRegularizer):
    variant = None
    lookahead_decay = False

    def __init__(self, pd=30, iters=1, weight=1.0, seed=None, form='auto', name=None):
        super().__init__(name=name)
        projections.check_form(form)
        self._config = dict(pd=_positive_int('pd', pd), iters=_positive_int('iters', iters, 0),
                            weight=_weight(weight), seed=seed, form=form)
        self.pd, self.iters, self.weight, self.seed, self.form = pd, iters, float(weight), seed, form

    def build(self, kernel_shape):
        """Create ``P [pd, d]`` (N(0, 1)) and the learning rate of its last steps."""
        d = 1
        for s in tuple(kernel_shape)[:-1]:
            d *= s
        _check_pd(self.pd, d)
        if tuple(kernel_shape)[-1] < 2:
            raise ValueError(f'{type(self).__name__} on a kernel of shape {tuple(kernel_shape)}: '
                             'one neuron has no energy; leave that layer without it')
        self.projection = self.add_weight(
            shape=(self.pd, d), initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=self.seed),
            trainable=False, name='projection')
        self.learning_rate = self.add_weight(shape=(), initializer='zeros', trainable=False,
                                             name='learning_rate')

    def _require_built(self):
        if not self.built:
            raise ValueError(
                f'{type(self).__name__} has no P yet: wrap the model in keras_comhe.CoMHEModel, '
                'or call keras_comhe.build_projections(model) once the model is built')

    def term(self, W):
        self._require_built()
        return projections.learned_projection_term(
            self.variant, W, ops.convert_to_tensor(self.projection),
            ops.convert_to_tensor(self.learning_rate), self.lookahead_decay)

    def objective(self, kernel):
        """P's own objective at the current P (for logging)."""
        self._require_built()
        return projections.p_objective(self.variant, filters_as_matrix(ops.convert_to_tensor(kernel)),
                                       ops.convert_to_tensor(self.projection))

    def take_steps(self, kernel, learning_rate):
        """``iters`` gradient steps of P at ``learning_rate``, which the term's
        look-ahead then uses too (assigns the variables; stateless under a
        ``keras.StatelessScope``)."""
        self._require_built()
        W = filters_as_matrix(ops.convert_to_tensor(kernel))
        _refuse_traced_state(W, f'{type(self).__name__}.take_steps')
        lr = ops.cast(learning_rate, self.projection.dtype)
        if self.iters:
            self.projection.assign(projections.descend_projection(
                self.variant, ops.convert_to_tensor(self.projection), W, lr, self.iters, self.form))
        self.learning_rate.assign(lr)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AngleProjection(_LearnedProjection):
    """AP CoMHE: ``weight`` times the half-space energy of ``P' W``, P learned to
    preserve the neurons' angles, ``P' = P - lr dA/dP`` with ``A`` the angle loss, as
    the release (``lookahead_decay=True``: P's scaled weight decay included, as
    docs/protocol.md writes it); ``iters`` P steps a training step; ``form``: how
    they are computed, see ``descend_projection``."""
    variant = 'angle'

    def __init__(self, pd=30, iters=1, weight=1.0, seed=None, form='auto', lookahead_decay=False,
                 name=None):
        super().__init__(pd=pd, iters=iters, weight=weight, seed=seed, form=form, name=name)
        if not isinstance(lookahead_decay, bool):
            raise ValueError(f'lookahead_decay must be True or False, got {lookahead_decay!r}')
        self.lookahead_decay = lookahead_decay
        self._config['lookahead_decay'] = lookahead_decay


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdversarialProjection(_LearnedProjection):
    """AdvP CoMHE: as AngleProjection, P learned to maximise the projected energy,
    ``P' = P + lr dE(P W)/dP``. The paper's setting is ``iters=10``."""
    variant = 'adversarial'

    def __init__(self, pd=30, iters=10, weight=1.0, seed=None, form='auto', name=None):
        super().__init__(pd=pd, iters=iters, weight=weight, seed=seed, form=form, name=name)
