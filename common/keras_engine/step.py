"""One iteration of the Keras engine as a pure function of the run's state, which
JAX compiles whole (one device call per iteration, P steps included), TensorFlow
as a tf.function, and PyTorch runs eagerly.

As the TF1 graph of ``common.tf1_engine.training`` (docs/protocol.md sections 2 to 4):

    loss = fit + reg + thom + thomf,   fit = mean -sum t log(softmax(z) + 1e-4),
    t = 0.99 onehot + 0.01 / n_class,  reg = 5e-4 sum(w^2) / 2 over filters and BN gamma/beta

- AP / AdvP: each layer's P first takes its ``iters`` steps at this iteration's lr
  on the weights before the step (no gradient into them), and the terms use the
  look-ahead from the stepped P; the stepped P is the new state.
- RP: ``[T, pd, d]`` N(0, 1) draws per layer, a pure function of (seed, layer, step)
  (Keras's random ops of the backend; other numbers than the TF1 graph's).
- TF1's MomentumOptimizer, not Keras's SGD: ``a = 0.9 a + g; w -= lr a`` (Keras's
  ``v = 0.9 v - lr g`` differs from it at each lr drop).
- The BN averages move by the release's EMA (``network.ReleaseBatchNorm``).

The state is a dict of lists of arrays: ``trainable`` (as the model's
trainable_variables), ``non_trainable``, ``accum`` (momentum), ``P`` (one per
hidden layer, AP/AdvP) and ``step``.
"""
import keras
import numpy as np
from keras import ops

from common.keras_engine.network import FILTERS
from common.keras_engine.terms import first_layer_energy, hidden_layer_energy, score_layer_energy
from common.paper.protocol import LABEL_SMOOTHING, WEIGHT_DECAY
from keras_comhe import projections
from keras_comhe.energy import filters_as_matrix

MOMENTUM = 0.9
RP_KEY = 1000003   # the run seed's part of the draws' key, as the graph's


def filter_positions(model):
    """The index in ``model.trainable_variables`` of each filter, in FILTERS' order."""
    paths = [v.path for v in model.trainable_variables]
    return [next(i for i, p in enumerate(paths) if p.startswith(f'{name}/')) for name in FILTERS]


def initial_state(model, terms, seed):
    """The state of a new run: the model's weights, zero momentum, P ~ N(0, 1) per
    hidden layer (AP/AdvP), step 0. Plain values (on PyTorch, no Parameters)."""
    def value(v):
        return ops.convert_to_tensor(ops.convert_to_numpy(v))
    state = dict(trainable=[value(v) for v in model.trainable_variables],
                 non_trainable=[value(v) for v in model.non_trainable_variables],
                 accum=[ops.zeros(v.shape, v.dtype) for v in model.trainable_variables],
                 P=[], step=ops.convert_to_tensor(np.int32(0)))
    if terms.learned:
        rng = np.random.default_rng(seed)
        for i in filter_positions(model)[1:10]:
            d = int(np.prod(state['trainable'][i].shape[:-1]))
            state['P'].append(ops.convert_to_tensor(rng.standard_normal((terms.pd, d)).astype('float32')))
    return state


def rp_draws(terms, Ws, generators, seed, step):
    """Each hidden layer's ``[T, pd, d]`` draws at ``step`` (a traced integer), from the
    key ``(seed, 16 step + layer)``: distinct for every (layer, step) pair, and as a sum
    too (PyTorch's backend seeds with the sum of the two). ``generators``: one
    SeedGenerator per layer, made outside the compiled step (tf.function creates no
    variables after its first call); only their state is mapped here."""
    draws = []
    for index, (W, generator) in enumerate(zip(Ws, generators), start=1):
        d, n = W.shape
        key = ops.stack([ops.convert_to_tensor((seed * RP_KEY) % 2 ** 31, 'int32'),
                         ops.cast(step, 'int32') * 16 + index])
        with keras.StatelessScope(state_mapping=[(generator.state, ops.cast(key, generator.state.dtype))]):
            draws.append(keras.random.normal((terms.num_projections(n), terms.pd, d),
                                             seed=generator, dtype=W.dtype))
    return draws


def batchless_terms(terms, positions, trainable, P, draws, lr):
    """``(reg, thom, thomf)``: the loss's terms that need no batch, of the filters at
    ``positions`` among ``trainable``, the hidden layers' P (stepped) or RP draws."""
    # Every trainable weight is decayed: the filters (no bias) and BN's gamma and beta.
    reg = WEIGHT_DECAY * sum(ops.sum(ops.square(v)) / 2.0 for v in trainable)
    zero = ops.zeros((), 'float32')
    thom, thomf = zero, zero
    if terms.has_energy:
        Ws = [filters_as_matrix(trainable[i]) for i in positions]
        thom = first_layer_energy(terms, Ws[0])
        for k, W in enumerate(Ws[1:10]):
            thom = thom + hidden_layer_energy(terms, W, P=P[k] if P else None, lr=lr,
                                              draws=draws[k] if draws else None)
        thomf = score_layer_energy(terms, Ws[10])
    return reg, thom, thomf


def make_loss(model, terms, n_class):
    positions = filter_positions(model)

    def loss_fn(trainable, non_trainable, P, draws, images, labels, lr):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        target = (1.0 - LABEL_SMOOTHING) * ops.one_hot(labels, n_class) + LABEL_SMOOTHING / n_class
        fit = ops.mean(-ops.sum(target * ops.log(ops.softmax(logits) + 1e-4), axis=1))
        reg, thom, thomf = batchless_terms(terms, positions, trainable, P, draws, lr)
        hits = ops.cast(ops.argmax(logits, axis=1), 'int32') == ops.cast(labels, 'int32')
        acc = ops.mean(ops.cast(hits, 'float32'))
        return fit + reg + thom + thomf, (fit, reg, thom, thomf, acc, non_trainable)
    return loss_fn


def value_and_grad(fn):
    """``fn(trainable, *rest) -> (loss, aux)`` to ``(loss, aux), d loss / d trainable``,
    by the backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == 'jax':
        import jax
        return jax.value_and_grad(fn, has_aux=True)
    if backend == 'tensorflow':
        import tensorflow as tf

        def tf_value_and_grad(trainable, *rest):
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                loss, aux = fn(trainable, *rest)
            return (loss, aux), tape.gradient(loss, trainable)
        return tf_value_and_grad
    if backend == 'torch':
        import torch

        def torch_value_and_grad(trainable, *rest):
            trainable = [t.detach().requires_grad_() for t in trainable]
            loss, aux = fn(trainable, *rest)
            grads = torch.autograd.grad(loss, trainable)
            return (loss.detach(), tuple(a.detach() if hasattr(a, 'detach') else
                                         [x.detach() for x in a] for a in aux)), list(grads)
        return torch_value_and_grad
    raise ValueError(f'KERAS_BACKEND={backend!r}: the Keras engine runs on jax, tensorflow or torch')


def descend(terms, Ps, Ws, lr):
    """The hidden layers' P after their ``terms.iters`` steps: one loop for all layers,
    those of one shape stacked (no gradient into the steps)."""
    Ps = projections.descend_projections(terms.kind, Ps, Ws, lr, terms.iters)
    return [ops.stop_gradient(P) for P in Ps]


def make_projections(model, terms, seed):
    """``projected(state, lr, draws=None) -> (P, draws)``: the hidden layers' P after this
    step's P steps (AP/AdvP) and this step's RP draws (unless given), as a step at
    ``state`` takes them."""
    positions = filter_positions(model)[1:10]
    # Made here, outside any compiled function (tf.function creates no variables later).
    generators = [keras.random.SeedGenerator(0) for _ in range(9)] if terms.kind == 'rp' else []

    def projected(state, lr, draws=None):
        Ws = [filters_as_matrix(state['trainable'][i]) for i in positions]
        P = descend(terms, state['P'], Ws, lr) if terms.learned else []
        if terms.kind == 'rp' and draws is None:
            draws = rp_draws(terms, Ws, generators, seed, state['step'])
        return P, draws
    return projected


def make_batchless_terms(model, terms, seed):
    """``terms_of(state, lr) -> [reg, thom, thomf]`` of the state's weights, with the P
    steps and RP draws of the step the state would take next: what a checkpoint checks
    before it saves (as the TF1 engine's), since weights can be finite and their
    terms not (a sum of squares overflows float32 first)."""
    positions = filter_positions(model)
    projected = make_projections(model, terms, seed)

    def terms_of(state, lr):
        P, draws = projected(state, lr)
        return ops.stack(batchless_terms(terms, positions, list(state['trainable']), P, draws, lr))
    return terms_of


def make_train_step(model, terms, seed, n_class=100):
    """``step(state, images, labels, lr, draws=None) -> (state, values)``, values the array
    ``[fit, reg, thom, thomf, acc]`` (``logged_values`` gives them as floats);
    ``draws``: the RP draws to use instead of the run's own (a parity test's)."""
    loss_and_grad = value_and_grad(make_loss(model, terms, n_class))
    projected = make_projections(model, terms, seed)

    def step(state, images, labels, lr, draws=None):
        trainable = list(state['trainable'])
        P, draws = projected(state, lr, draws)
        (_, (fit, reg, thom, thomf, acc, non_trainable)), grads = loss_and_grad(
            trainable, state['non_trainable'], P, draws, images, labels, lr)
        accum = [MOMENTUM * a + g for a, g in zip(state['accum'], grads)]
        trainable = [w - lr * a for w, a in zip(trainable, accum)]
        new = dict(trainable=trainable, non_trainable=list(non_trainable), accum=accum, P=P,
                   step=state['step'] + 1)
        return new, ops.stack([fit, reg, thom, thomf, acc])   # one array: one copy to the host
    return step


def logged_values(values):
    """The step's ``[fit, reg, thom, thomf, acc]`` as Python floats, in one copy from the device."""
    return [float(v) for v in ops.convert_to_numpy(values)]


def compiled(step, donate_state=True):
    """The step compiled where the backend compiles a whole function (JAX: one XLA
    program per iteration, the state given to it ``donate_state``: its memory reused
    for the new state); as it is elsewhere."""
    backend = keras.backend.backend()
    if backend == 'jax':
        import jax
        return jax.jit(step, donate_argnums=(0,) if donate_state else ())
    if backend == 'tensorflow':
        import tensorflow as tf
        return tf.function(step, reduce_retracing=True)
    return step
