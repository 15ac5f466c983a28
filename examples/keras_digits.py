"""keras_comhe in a small Keras model, trained with model.fit on the handwritten
digits of experiments/digits.py (scikit-learn's 8x8 digits, upscaled to
32x32x3, the same split), on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=jax .venv/bin/python examples/keras_digits.py --method advp
    KERAS_BACKEND=torch .venv/bin/python examples/keras_digits.py --method rp --epochs 5
    .venv/bin/python examples/keras_digits.py --method all     # each method in turn, a table at the end

Methods: none; half_mhe (half-space MHE, power '2', on every hidden layer);
rp (pd 40, pn 20); ap (pd 30, iters 1); advp (pd 30, iters 10). With CoMHE
the first layer gets the half-space energy and the score layer 10 x the
full-space energy, as in the reproduction.
"""
import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras

import keras_comhe as comhe
from experiments.digits import load_digits_dataset

METHODS = ('none', 'half_mhe', 'rp', 'ap', 'advp')


def hidden_regularizer(method, seed):
    """A new regulariser for one hidden layer (each layer needs its own)."""
    return {'none': None,
            'half_mhe': comhe.MHE(1.0, '2', half_space=True),
            'rp': comhe.RandomProjection(pd=40, pn=20, seed=seed),
            'ap': comhe.AngleProjection(pd=30, iters=1, seed=seed),
            'advp': comhe.AdversarialProjection(pd=30, iters=10, seed=seed)}[method]


def build_model(method, seed=0, width=16):
    """Conv(w) -> Conv(2w) -> pool -> Conv(2w) -> pool -> Flatten -> Dense(64) -> Dense(10)."""
    regs = method != 'none'
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for i, (n, pool) in enumerate([(width, False), (2 * width, True), (2 * width, True)]):
        reg = (comhe.MHE(1.0, '2', half_space=True) if i == 0 else hidden_regularizer(method, seed + i)) \
            if regs else None
        x = keras.layers.Conv2D(n, 3, padding='same', use_bias=False, kernel_regularizer=reg)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)   # few steps: averages must catch up
        x = keras.layers.ReLU()(x)
        if pool:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation='relu', kernel_regularizer=hidden_regularizer(method, seed + 9))(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=comhe.MHE(10.0, '2') if regs else None)(x)
    model = keras.Model(inputs, outputs)
    # AP and AdvP: the wrapper takes their P steps in fit (MHE and RP need none).
    return comhe.CoMHEModel(model) if method in ('ap', 'advp') else model


def run(method, args, data):
    train_x, train_y, test_x, test_y = data
    keras.utils.set_random_seed(args.seed)
    model = build_model(method, args.seed)
    model.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'], jit_compile=not args.no_jit)
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose)
    seconds = time.perf_counter() - start
    loss, acc = model.evaluate(test_x, test_y, batch_size=256, verbose=0)
    print(f'{method}: test accuracy {acc:.4f} (loss {loss:.3f}), {seconds:.1f}s of fit '
          f'on {keras.backend.backend()}', flush=True)
    return acc, seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--method', choices=METHODS + ('all',), default='rp')
    p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--batch_size', type=int, default=32)
    p.add_argument('--lr', type=float, default=0.005, help='as experiments/digits.py (0.05 trained poorly here)')
    p.add_argument('--n_train', type=int, default=500, help='as experiments/digits.py; the rest is the test set')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no_jit', action='store_true', help='jit_compile=False (PyTorch compiles slowly on a CPU)')
    p.add_argument('--verbose', type=int, default=2, help="model.fit's verbose")
    args = p.parse_args(argv)
    data = load_digits_dataset(args.n_train, split_seed=0)
    methods = METHODS if args.method == 'all' else (args.method,)
    results = {m: run(m, args, data) for m in methods}
    if len(results) > 1:
        print(f'\n| method | test acc | fit (s) |  ({keras.backend.backend()}, seed {args.seed})\n|---|---|---|')
        for m, (acc, seconds) in results.items():
            print(f'| {m} | {acc:.4f} | {seconds:.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
