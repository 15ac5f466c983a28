"""How much the keras_comhe terms cost a CNN-9 training step in Keras 3.

    .venv/bin/python bench/keras_step_time.py                    # JAX backend, whatever device JAX has
    .venv/bin/python bench/keras_step_time.py --backend torch    # PyTorch (CUDA if its build has it)
    .venv/bin/python bench/keras_step_time.py --quick            # a smoke test; its numbers mean nothing

CNN-9 of docs/protocol.md section 2 as a Keras model (3x3 convolutions without bias, batch
norm and ReLU, three max-pools, fc6 as a 4x4 VALID convolution, a 1x1 score
convolution; batch 128 of random 32x32x3 images, 100 classes, SGD with
momentum 0.9, lr 0.01 and weight decay 5e-4, ``jit_compile=True``), trained with
``model.fit`` with: no energy; RP (pd 40, pn 20); AP (pd 30, iters 1); AdvP
(pd 30, iters 10). With CoMHE, conv1_0 gets the half-space energy and the score
layer 10 x the full-space energy (power '2'), as in the reproduction; AP and
AdvP train through ``keras_comhe.CoMHEModel``, so their P steps are in the step.

Timing: each model is compiled by a first ``fit`` (its seconds are reported),
then ``--rounds`` rounds, each a ``fit`` of ``--steps`` steps of every model in
turn (interleaved, so a machine whose load drifts treats them alike). A step's
time is the fit's wall time over its steps (the same in-memory batch each step,
so input costs are alike for all). Reported: the median step time, its ratio to
no energy, and the median of the per-round ratios. Writes Markdown and JSON
(default bench/results/keras_step_time_<backend>.md/.json) and prints the table.
Nothing here picks the device: the backend's default (a GPU when its CUDA build
sees one) is used.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from common.paper.protocol import WIDTHS

CONFIGS = ('none', 'rp', 'ap', 'advp')


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--backend', choices=('jax', 'torch', 'tensorflow'), default=None,
                   help='Keras backend (default: $KERAS_BACKEND, else jax)')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--width', type=float, default=1.0, help='channel multiplier of CNN-9')
    p.add_argument('--steps', type=int, default=5, help='training steps per timed fit')
    p.add_argument('--rounds', type=int, default=3, help='timed fits per configuration (interleaved)')
    p.add_argument('--configs', nargs='+', choices=CONFIGS, default=list(CONFIGS))
    p.add_argument('--no_jit', action='store_true', help='compile with jit_compile=False')
    p.add_argument('--out', type=Path, default=None,
                   help='folder for the .md and .json (default bench/results/; --quick: none)')
    p.add_argument('--quick', action='store_true', help='width 0.125, batch 8, 2 steps, 1 round')
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.batch, args.steps, args.rounds = 0.125, 8, 2, 1
    if 'none' not in args.configs:
        args.configs.insert(0, 'none')
    if min(args.batch, args.steps, args.rounds) < 1 or args.width <= 0:
        p.error('--batch, --steps and --rounds must be >= 1 and --width > 0')
    args.backend = args.backend or os.environ.get('KERAS_BACKEND') or 'jax'
    if args.out is None and not args.quick:
        args.out = ROOT / 'bench' / 'results'
    return args


def cnn9(keras, comhe, config, width, n_class=100):
    """CNN-9 with the regularisers of ``config``; returns a model to fit."""
    widths = [max(2, round(w * width)) for w in WIDTHS]
    hidden = {'rp': lambda: comhe.RandomProjection(pd=40, pn=20, seed=345),
              'ap': lambda: comhe.AngleProjection(pd=30, iters=1, seed=345),
              'advp': lambda: comhe.AdversarialProjection(pd=30, iters=10, seed=345)}.get(config)
    energy = config != 'none'
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for block in range(3):
        for i in range(3):
            reg = None
            if energy:
                reg = comhe.MHE(1.0, '2', half_space=True) if (block, i) == (0, 0) else hidden()
            x = keras.layers.Conv2D(widths[block], 3, padding='same', use_bias=False,
                                    kernel_initializer='he_normal', kernel_regularizer=reg)(x)
            x = keras.layers.BatchNormalization(momentum=0.999, epsilon=1e-3)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, padding='same')(x)
    x = keras.layers.Conv2D(widths[3], 4, padding='valid', use_bias=False, kernel_initializer='he_normal',
                            kernel_regularizer=hidden() if energy else None)(x)
    x = keras.layers.Conv2D(n_class, 1, use_bias=False, kernel_initializer='he_normal',
                            kernel_regularizer=comhe.MHE(10.0, '2') if energy else None)(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    return comhe.CoMHEModel(model) if config in ('ap', 'advp') else model


LABELS = {'none': 'no energy', 'rp': 'RP (pd 40, pn 20)', 'ap': 'AP (pd 30, iters 1)',
          'advp': 'AdvP (pd 30, iters 10)'}


def device_info(backend):
    import keras
    info = {'keras': keras.__version__}
    if backend == 'jax':
        import jax
        info.update(jax=jax.__version__, device=str(jax.devices()[0]))
    elif backend == 'torch':
        import torch
        cuda = torch.cuda.is_available()
        info.update(torch=torch.__version__, device=torch.cuda.get_device_name(0) if cuda else 'cpu')
    else:
        import tensorflow as tf
        gpus = tf.config.list_physical_devices('GPU')
        info.update(tensorflow=tf.__version__, device=gpus[0].name if gpus else 'cpu')
    cpu = 'unknown'
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                   if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info.update(cpu=cpu, cpu_count=os.cpu_count(), python=platform.python_version(),
                date=time.strftime('%Y-%m-%d %H:%M:%S %z'))
    return info


def markdown(result):
    rows = ['| configuration | step (ms) | x no energy | x no energy, per round (median) | compile (s) |',
            '|---|---|---|---|---|']
    for r in result['rows']:
        rows.append(f"| {r['label']} | {1000 * r['median_s']:.1f} | {r['ratio']:.3f} | "
                    f"{r['paired_ratio']:.3f} | {r['compile_s']:.1f} |")
    m, s = result['machine'], result['settings']
    load = ', '.join(f'{a:.2f}' for a in result['load_average_start'])
    load_end = ', '.join(f'{a:.2f}' for a in result['load_average_end'])
    return '\n'.join([
        f"# Keras CNN-9 step time with keras_comhe ({s['backend']})", '',
        f"`{result['command']}`: batch {s['batch']}, width {s['width']}, {s['rounds']} rounds of "
        f"{s['steps']} steps per configuration, jit_compile={s['jit']}.", '', *rows, '',
        f"Device: {m['device']}; CPU: {m['cpu']} ({m['cpu_count']} cores); Keras {m['keras']}, "
        + ', '.join(f'{k} {m[k]}' for k in ('jax', 'torch', 'tensorflow') if k in m)
        + f"; Python {m['python']}; {m['date']}.",
        f"Load average (1, 5, 15 min) at the start: {load}; at the end: {load_end}; "
        f"total {result['total_s']:.0f} s.", ''])


def main(argv=None):
    args = parse(argv)
    os.environ['KERAS_BACKEND'] = args.backend
    import numpy as np
    import keras
    import keras_comhe as comhe
    if keras.backend.backend() != args.backend:
        sys.exit(f'Keras was already imported with the {keras.backend.backend()} backend')
    start = time.perf_counter()
    load_start = os.getloadavg()
    rng = np.random.default_rng(0)
    batch_x = rng.uniform(-1, 1, size=(args.batch, 32, 32, 3)).astype('float32')
    batch_y = rng.integers(0, 100, size=args.batch)
    x, y = np.tile(batch_x, (args.steps, 1, 1, 1)), np.tile(batch_y, args.steps)

    models, compile_s = {}, {}
    for config in args.configs:
        model = cnn9(keras, comhe, config, args.width)
        # lr 0.01, not the schedule's 0.1: at 0.1 the no-energy model's loss on this one
        # repeated batch of random labels became NaN after 11 steps (2026-11-28).
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=5e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=not args.no_jit)
        t = time.perf_counter()
        model.fit(batch_x, batch_y, batch_size=args.batch, epochs=1, verbose=0)
        compile_s[config] = time.perf_counter() - t
        models[config] = model
        print(f'[bench] {config}: first fit (compile) {compile_s[config]:.1f}s', file=sys.stderr, flush=True)
    times = {c: [] for c in args.configs}
    for r in range(args.rounds):
        for config, model in models.items():
            t = time.perf_counter()
            history = model.fit(x, y, batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
            times[config].append((time.perf_counter() - t) / args.steps)
            if not np.isfinite(history.history['loss'][-1]):
                sys.exit(f'{config}: the loss is not finite')
        print(f'[bench] round {r + 1} of {args.rounds}: '
              + ', '.join(f'{c} {1000 * t[-1]:.1f} ms' for c, t in times.items()), file=sys.stderr, flush=True)
    base = statistics.median(times['none'])
    rows = [dict(config=c, label=LABELS[c], median_s=statistics.median(t), times_s=t,
                 ratio=statistics.median(t) / base,
                 paired_ratio=statistics.median(a / b for a, b in zip(t, times['none'])),
                 compile_s=compile_s[c]) for c, t in times.items()]
    result = dict(command='python bench/keras_step_time.py' + ''.join(f' {a}' for a in (argv or sys.argv[1:])),
                  settings=dict(backend=args.backend, batch=args.batch, width=args.width, steps=args.steps,
                                rounds=args.rounds, jit=not args.no_jit, quick=args.quick),
                  machine=device_info(args.backend), load_average_start=load_start,
                  load_average_end=os.getloadavg(), rows=rows, total_s=time.perf_counter() - start)
    md = markdown(result)
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f'keras_step_time_{args.backend}'
        stem.with_suffix('.md').write_text(md)
        stem.with_suffix('.json').write_text(json.dumps(result, indent=1) + '\n')
        print(f'wrote {stem}.md and .json', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
