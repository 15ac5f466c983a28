"""CoMHE in a plain-JAX CNN (no framework): scikit-learn's 8x8 handwritten digits, a
few hundred SGD steps on the CPU, with the RP or AdvP term of ``comhe.jax``.

    pip install ".[jax]" scikit-learn        # from the repository's root
    python examples/jax_digits.py --method advp
    python examples/jax_digits.py --method rp --steps 300

Everything is a pure function: the training step takes the parameters, the
momentum, AdvP's P matrices and a PRNG key, and returns the new ones. It prints the
loss and each regularised layer's energy (the first layer's half-space MHE, the
hidden layers' projected energy), each averaged over ``--every`` steps, then the
test accuracy.
"""
import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import comhe.jax as comhe

WIDTHS = (16, 32, 32)        # conv1, conv2, conv3 (3x3); then fc1 (64) and the score layer
HIDDEN = ('conv2', 'conv3', 'fc1')


def digits(seed=0):
    """(x_train, y_train, x_test, y_test): 1,797 images [8, 8, 1] in [0, 1], 360 held out."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = (data.images[order] / 16.0).astype(np.float32)[..., None]
    y = data.target[order]
    return x[360:], y[360:], x[:360], y[:360]


def init(key):
    """He-normal kernels in Flax's layout (``[kh, kw, in, out]``, ``[in, out]``: the last
    axis holds the neurons), zero biases, unit layer-norm scales."""
    params, fan_in = {}, 1
    keys = jax.random.split(key, 5)
    for i, (name, width) in enumerate(zip(('conv1', 'conv2', 'conv3'), WIDTHS)):
        shape = (3, 3, fan_in, width)
        params[name] = {'w': jax.random.normal(keys[i], shape) * jnp.sqrt(2.0 / (9 * fan_in)),
                        'scale': jnp.ones(width), 'shift': jnp.zeros(width)}
        fan_in = width
    params['fc1'] = {'w': jax.random.normal(keys[3], (2 * 2 * 32, 64)) * jnp.sqrt(2.0 / 128), 'b': jnp.zeros(64)}
    params['score'] = {'w': jax.random.normal(keys[4], (64, 10)) * jnp.sqrt(1.0 / 64), 'b': jnp.zeros(10)}
    return params


def forward(params, x):
    """conv -> layer norm -> ReLU (x3, max-pooling after the 2nd and 3rd) -> fc 64 -> ReLU -> fc 10."""
    for name, pool in (('conv1', False), ('conv2', True), ('conv3', True)):
        p = params[name]
        x = jax.lax.conv_general_dilated(x, p['w'], (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        x = jax.nn.relu((x - mean) * jax.lax.rsqrt(var + 1e-5) * p['scale'] + p['shift'])
        if pool:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
    x = jax.nn.relu(x.reshape(x.shape[0], -1) @ params['fc1']['w'] + params['fc1']['b'])
    return x @ params['score']['w'] + params['score']['b']


def hidden_kernels(params):
    return {name: params[name]['w'] for name in HIDDEN}


def loss_fn(params, projections, lr, key, x, y, method, weight):
    """(cross-entropy + the CoMHE terms, (cross-entropy, each layer's energy))."""
    logits = forward(params, x)
    fit = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    if method == 'none':
        return fit, (fit, jnp.zeros(0))
    energies = [comhe.mhe_loss(params['conv1']['w'], '2', half_space=True)]   # the first layer: MHE
    kernels = hidden_kernels(params)
    keys = jax.random.split(key, len(HIDDEN))
    for k, name in zip(keys, HIDDEN):
        W = comhe.neurons(kernels[name])
        if method == 'rp':
            energies.append(comhe.random_projection_term(k, W, pd=30, pn=20))
        else:
            energies.append(comhe.learned_projection_term('adversarial', W, projections[name], lr))
    energies = jnp.stack(energies)
    return fit + energies[0] + weight * energies[1:].sum(), (fit, energies)


@partial(jax.jit, static_argnames=('method', 'weight'))
def train_step(params, velocity, projections, key, lr, x, y, method, weight):
    """One step, state in and state out: AdvP's P steps on the current weights, then SGD
    with momentum 0.9 and weight decay 5e-4 on the loss with the look-ahead at ``lr``."""
    if method == 'advp':
        projections = comhe.projection_steps('adversarial', projections, hidden_kernels(params), lr, iters=10)
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, projections, lr, key, x, y, method, weight)
    velocity = jax.tree_util.tree_map(lambda v, g, p: 0.9 * v + g + 5e-4 * p, velocity, grads, params)
    params = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity)
    return params, velocity, projections, aux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--method', choices=('none', 'rp', 'advp'), default='advp')
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=0.05)
    parser.add_argument('--weight', type=float, default=3.0,
                        help="the hidden layers' CoMHE weight (large enough that a few hundred steps show their "
                             'energies falling)')
    parser.add_argument('--every', type=int, default=50, help='print every this many steps')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = digits(args.seed)
    key, init_key, proj_key = jax.random.split(jax.random.key(args.seed), 3)
    params = init(init_key)
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    projections = comhe.init_projections(proj_key, hidden_kernels(params), pd=30)
    rng = np.random.default_rng(args.seed)
    names = ' '.join(f'E[{n}]' for n in ('conv1',) + HIDDEN) if args.method != 'none' else '(none)'
    print(f'method {args.method} on {jax.devices()[0].platform}; mean over {args.every} steps of the '
          f'loss (cross-entropy) and of each layer\'s energy {names}')
    losses, energies = [], []
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(y_train), args.batch_size)
        key, step_key = jax.random.split(key)
        params, velocity, projections, (fit, energy) = train_step(
            params, velocity, projections, step_key, args.lr, x_train[idx], y_train[idx], args.method,
            args.weight)
        losses.append(float(fit))
        energies.append(np.asarray(energy))
        if step % args.every == 0:
            print(f'step {step:4d}  loss {np.mean(losses[-args.every:]):.4f}  energies '
                  + ' '.join(f'{e:.4f}' for e in np.mean(energies[-args.every:], axis=0)))
    accuracy = float(jnp.mean(jnp.argmax(forward(params, x_test), -1) == y_test))
    print(f'test accuracy {accuracy:.4f}')


if __name__ == '__main__':
    main()
