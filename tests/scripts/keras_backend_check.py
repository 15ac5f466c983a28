"""Runs keras_comhe on the backend that KERAS_BACKEND names and writes what
tests/test_keras_comhe.py checks (one process per backend: Keras picks its
backend once per process).

    KERAS_BACKEND=jax python tests/scripts/keras_backend_check.py INPUTS.npz OUT.npz WORKDIR [--eager]

INPUTS.npz holds the matrices, draws and learning rates of the parity checks
(the test computes the graph code's values on the same ones). OUT.npz gets,
under flat names: the parity values and gradients, finiteness flags of the
edge cases, and the model.fit / save / load checks (--eager: fit without JIT
compilation, for PyTorch, whose torch.compile takes minutes on a CPU).
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import keras
from keras import ops

import keras_comhe as comhe
from keras_comhe import projections

BACKEND = keras.backend.backend()
LR, ITERS = 0.1, 3   # as tests/test_keras_comhe.py
JOINT_FORMS = ('auto', 'direct', 'gram')
BATCHED_POWERS = ('2', 'a2')   # power '2''s own code, and the code all other kernels share


def value_and_grads(fn, *xs):
    """(fn(*xs), [d fn / d x]) by the backend's own autodiff (traceable under jax.jit)."""
    if BACKEND == 'jax':
        import jax
        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(xs))))(*xs)
        return value, list(grads)
    if BACKEND == 'tensorflow':
        import tensorflow as tf
        xs = [tf.convert_to_tensor(x) for x in xs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            value = fn(*xs)
        return value, tape.gradient(value, xs)
    if BACKEND == 'torch':
        import torch
        xs = [torch.as_tensor(x).detach().requires_grad_() for x in xs]
        value = fn(*xs)
        return value.detach(), [g.detach() for g in torch.autograd.grad(value, xs)]
    raise SystemExit(f'unsupported backend {BACKEND}')


_JITTED = {}


def run(fn, arrays):
    """fn(dict of arrays) -> dict, compiled once on JAX (op by op it compiles every op)."""
    if BACKEND == 'jax':
        import jax
        fn = _JITTED.setdefault(fn, jax.jit(fn))
    arrays = {k: ops.convert_to_tensor(v) for k, v in arrays.items()}
    return {k: ops.convert_to_numpy(v) for k, v in fn(arrays).items()}


def parity_outputs(a):
    out = {}
    for power in comhe.POWERS:
        for half in (False, True):
            key = f'energy/{power}/{int(half)}'
            out[key], (out[key + '/grad'],) = value_and_grads(
                lambda w: comhe.hyperspherical_energy(w, power, half), a['W'])
            if power not in BATCHED_POWERS:
                continue
            key = f'batched/{power}/{int(half)}'
            out[key] = comhe.hyperspherical_energy(a['B'], power, half)
            _, (out[key + '/grad'],) = value_and_grads(
                lambda b: ops.sum(a['upstream'] * comhe.hyperspherical_energy(b, power, half)), a['B'])
    out['rp'], (out['rp/grad'],) = value_and_grads(
        lambda w: projections.random_projection_term(w, a['draws']), a['Wl'])
    lr, iters = LR, ITERS
    for variant in projections.VARIANTS:
        out[variant], (out[variant + '/grad_w'], out[variant + '/grad_p']) = value_and_grads(
            lambda w, p: projections.learned_projection_term(variant, w, p, lr), a['Wl'], a['P'])
        out[variant + '/objective'] = projections.p_objective(variant, a['Wl'], a['P'])
        for form in ('direct', 'gram'):
            out[f'{variant}/descend/{form}'] = projections.descend_projection(
                variant, a['P'], a['Wl'], lr, iters, form)
        for form in JOINT_FORMS:
            joint = projections.descend_projections(variant, [a['P'], a['P3'], a['P2']],
                                                    [a['Wl'], a['W'], a['Wl2']], lr, iters, form)
            for k, P in enumerate(joint):
                out[f'{variant}/descend/joint_{form}{k}'] = P
    # AP with P's decay in the look-ahead (the protocol's form; the default is the release's).
    out['angle/decay'], (out['angle/decay/grad_w'], out['angle/decay/grad_p']) = value_and_grads(
        lambda w, p: projections.learned_projection_term('angle', w, p, lr, True), a['Wl'], a['P'])
    return out


def edge_outputs(a):
    """Every term and its gradients at one edge-case W: one finiteness flag each."""
    flags = []

    def finite(value, grads=()):
        return ops.all(ops.isfinite(value)) & ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads]
                                                              or [ops.convert_to_tensor(True)]))

    for power in comhe.POWERS:
        for half in (False, True):
            flags.append(finite(*value_and_grads(lambda w: comhe.hyperspherical_energy(w, power, half), a['W'])))
    flags.append(finite(*value_and_grads(lambda w: projections.random_projection_term(w, a['draws']), a['W'])))
    for variant in projections.VARIANTS:
        flags.append(finite(*value_and_grads(
            lambda w, p: projections.learned_projection_term(variant, w, p, LR), a['W'], a['P'])))
        flags.append(finite(projections.descend_projection(variant, a['P'], a['W'], LR, ITERS)))
    return {'flags': ops.stack(flags)}


def parity(inputs, out):
    keys = ('W', 'B', 'upstream', 'Wl', 'P', 'draws', 'Wl2', 'P2', 'P3')
    out.update(run(parity_outputs, {k: inputs[k] for k in keys}))


def edge_cases(inputs, out):
    """Every term and its gradients finite for equal, opposite and zero neurons."""
    for case in ('equal', 'equal_large_norm', 'opposite', 'zero_neuron'):
        arrays = {'W': inputs['edge/' + case], 'P': inputs['edge/P'], 'draws': inputs['edge/draws']}
        out['edge/' + case] = run(edge_outputs, arrays)['flags']


# ---------------------------------------------------------------- model.fit

LR_STEPS = (0.05, 0.02)   # the lr of step 0, then of every later step


@keras.saving.register_keras_serializable(package='keras_comhe_tests')
class NumpyNormal(keras.initializers.Initializer):
    """He-normal weights from NumPy (Keras's initializers compile per shape on JAX)."""

    def __init__(self, seed):
        self.seed, self.rng = seed, np.random.default_rng(seed)

    def get_config(self):
        return {'seed': self.seed}

    def __call__(self, shape, dtype=None):
        fan_in = int(np.prod(shape[:-1]))
        return (self.rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(dtype or 'float32')


def small_model():
    """Every regulariser on one small network (8x8x1 inputs, 10 classes)."""
    init = NumpyNormal(0)
    regs = dict(
        conv1=comhe.MHE(1.0, '2', half_space=True),
        conv2=comhe.RandomProjection(pd=5, pn=3, seed=11),
        conv3=comhe.AngleProjection(pd=4, iters=1, seed=12),
        dense1=comhe.AdversarialProjection(pd=8, iters=3, seed=13),
        dense2=comhe.RandomProjection(pd=5, pnd=4, weight=0.5, seed=14),
        score=comhe.MHE(10.0, '2'),
    )
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for i, n in enumerate((6, 8, 8), start=1):
        x = keras.layers.Conv2D(n, 3, padding='same', use_bias=False, activation='relu', name=f'conv{i}',
                                kernel_initializer=init, kernel_regularizer=regs[f'conv{i}'])(x)
    # Pooled to 2 x 2 x 8: dense1's P steps then sum over 32 inputs, short enough for the
    # float32 bound of test_fit_takes_p_steps... to see a step off by a relative 1e-3.
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(x))
    for name in ('dense1', 'dense2'):
        x = keras.layers.Dense(12, activation='relu', name=name, kernel_initializer=init,
                               bias_initializer='zeros', kernel_regularizer=regs[name])(x)
    outputs = keras.layers.Dense(10, name='score', kernel_initializer=init, kernel_regularizer=regs['score'])(x)
    return keras.Model(inputs, outputs), regs


def compile_model(model, jit):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], list(LR_STEPS))
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)


def numpy_of(variable):
    return ops.convert_to_numpy(variable.value)


def first_draw(shape, seed, jit):
    """The first draw of a new SeedGenerator(seed), compiled as fit compiles it
    (TensorFlow's XLA draws other numbers from a seed than its own kernels)."""
    generator = keras.random.SeedGenerator(seed)

    def draw():
        return keras.random.normal(shape, seed=generator)
    if BACKEND == 'tensorflow' and jit:
        import tensorflow as tf
        draw = tf.function(draw, jit_compile=True)
    return ops.convert_to_numpy(draw())


def expected_first_step(inner, regs, learned, a):
    """Step 0's loss: cross-entropy + every term at the weights before the step,
    AP/AdvP from P after this step's P steps at its learning rate, RP from the given draws."""
    out = {}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(a['y'], inner(a['x']))
    for name, reg in regs.items():
        kernel = ops.convert_to_tensor(inner.get_layer(name).kernel)
        W = comhe.filters_as_matrix(kernel)
        if name in learned:
            P1 = projections.descend_projection(reg.variant, ops.convert_to_tensor(reg.projection), W,
                                                LR_STEPS[0], reg.iters)
            out[f'fit/P1_expected/{name}'] = P1
            loss += reg.weight * projections.learned_projection_term(reg.variant, W, P1, LR_STEPS[0])
        elif isinstance(reg, comhe.RandomProjection):
            loss += reg.weight * projections.random_projection_term(W, a['draws/' + name])
        else:
            loss += reg(kernel)
    out['fit/loss0_expected'] = loss
    return out


def fit_checks(workdir, jit, out):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype('float32')
    y = rng.integers(0, 10, size=32)

    # A learned projection without its P: a clear error, not a silent term.
    try:
        comhe.AngleProjection(pd=4)(np.ones((3, 3, 2, 4), 'float32'))
        out['fit/unwrapped_error'] = np.array('')
    except ValueError as e:
        out['fit/unwrapped_error'] = np.array(str(e))

    inner, regs = small_model()
    model = comhe.CoMHEModel(inner)
    compile_model(model, jit)
    learned = {'conv3': regs['conv3'], 'dense1': regs['dense1']}
    # The same P on every backend (each backend's RandomNormal draws other numbers).
    for reg in learned.values():
        reg.projection.assign(np.random.default_rng(reg.seed).normal(size=reg.projection.shape).astype('float32'))
    seeds0 = {name: numpy_of(regs[name].seed_generator.state) for name in ('conv2', 'dense2')}
    # Each RP's first draw, from a generator of the same seed.
    arrays = {'x': x, 'y': y}
    for name in ('conv2', 'dense2'):
        reg, (d, n) = regs[name], comhe.filters_as_matrix(inner.get_layer(name).kernel).shape
        T = projections.num_projections(n, reg.pn, reg.pnd)
        arrays['draws/' + name] = first_draw((T, reg.pd, d), reg.get_config()['seed'], jit)
    out.update(run(lambda a: expected_first_step(inner, regs, learned, a), arrays))
    # What step 0 starts from, for the test's float64 computation of the same step.
    out.update({'fit/x': x, 'fit/y': y})
    for name in ('conv2', 'dense2'):
        out['fit/draws/' + name] = arrays['draws/' + name]
    for name, reg in learned.items():
        out['fit/P0/' + name] = numpy_of(reg.projection)
    for layer in inner.layers:
        for variable in layer.weights:
            out[f'fit/weights/{layer.name}/{variable.name}'] = numpy_of(variable)

    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    out['fit/loss0'] = np.array(history.history['loss'])
    for name, reg in learned.items():
        out[f'fit/P1/{name}'] = numpy_of(reg.projection)
        out[f'fit/lr1/{name}'] = numpy_of(reg.learning_rate)
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    out['fit/losses_later'] = np.array(history.history['loss'])
    for name, reg in learned.items():
        out[f'fit/P_changed_later/{name}'] = np.array(not np.allclose(numpy_of(reg.projection),
                                                                      out[f'fit/P1/{name}']))
        out[f'fit/lr_later/{name}'] = numpy_of(reg.learning_rate)
    for name, s0 in seeds0.items():
        out[f'fit/seed_advanced/{name}'] = np.array(not np.array_equal(
            numpy_of(regs[name].seed_generator.state), s0))

    # The models after the first: on TensorFlow without XLA, Keras's own choice on a machine
    # without a GPU (jit_compile='auto'). The first model covered XLA, and each further
    # XLA compilation on TensorFlow's CPU takes several times JAX's.
    jit = jit and BACKEND != 'tensorflow'

    # A plain Keras model with only MHE and RP needs no wrapper.
    plain_in = keras.Input((8, 8, 1))
    init = NumpyNormal(1)
    h = keras.layers.Dense(6, kernel_initializer=init, kernel_regularizer=comhe.RandomProjection(4, 2, seed=3))(
        keras.layers.Flatten()(plain_in))
    plain = keras.Model(plain_in, keras.layers.Dense(10, kernel_initializer=init,
                                                     kernel_regularizer=comhe.MHE(1.0, '0', True))(h))
    plain.compile(optimizer='sgd', loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    out['fit/plain_losses'] = np.array(plain.fit(x, y, batch_size=32, epochs=2, verbose=0).history['loss'])

    # Save and load: same predictions, P, learning rates and configurations; it trains on.
    path = Path(workdir) / f'comhe_{BACKEND}.keras'
    model.save(path)
    loaded = keras.models.load_model(path)
    out['save/weights_equal'] = np.array(all(
        np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights())))
    loaded_regs = {name: loaded.wrapped.get_layer(name).kernel_regularizer for name in regs}
    out['save/same_classes_and_configs'] = np.array(all(
        type(loaded_regs[n]) is type(r) and loaded_regs[n].get_config() == r.get_config()
        for n, r in regs.items()))
    for name, reg in learned.items():
        out[f'save/P_diff/{name}'] = np.array(float(np.abs(
            numpy_of(loaded_regs[name].projection) - numpy_of(reg.projection)).max()))
        out[f'save/lr/{name}'] = numpy_of(loaded_regs[name].learning_rate)
    before = numpy_of(loaded_regs['dense1'].projection)
    compile_model(loaded, jit)
    out['save/losses_after_load'] = np.array(loaded.fit(x, y, batch_size=32, epochs=1, verbose=0).history['loss'])
    out['save/P_steps_after_load'] = np.array(not np.allclose(numpy_of(loaded_regs['dense1'].projection), before))


def main():
    inputs_path, out_path, workdir = sys.argv[1:4]
    jit = '--eager' not in sys.argv[4:]
    inputs = dict(np.load(inputs_path))
    out = {'backend': np.array(BACKEND), 'jit': np.array(jit)}
    for part in (parity, edge_cases):
        start = time.perf_counter()
        part(inputs, out)
        print(f'{part.__name__}: {time.perf_counter() - start:.1f}s', flush=True)
    start = time.perf_counter()
    fit_checks(workdir, jit, out)
    print(f'fit_checks: {time.perf_counter() - start:.1f}s', flush=True)
    np.savez(out_path, **out)
    print(f'{BACKEND}: {len(out)} results written to {out_path}')


if __name__ == '__main__':
    main()
