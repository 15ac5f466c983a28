"""Command-line flags of the train.py entry points, in one place.

The original release's flags keep their names and defaults; the variant
files pass their own (``--pd --pn --pnd`` or ``--pd --pn --iters``). This
module does not import TensorFlow or Keras, so ``--gpu_no`` can still choose the GPU
and ``--keras_backend`` the backend.
"""
import argparse
import os
import sys
from pathlib import Path

from common import REPO_ROOT
from common.data.cifar import parse_md5_flag
from common.paper.protocol import POWERS
from common.paper.schedule import FULL_ITERS, LR_STEPS, scaled_widths

VARIANT_FLAGS = {
    'pd': (int, 'projection dimension'),
    'pn': (int, 'number of projections (RP; accepted and unused by AP/AdvP)'),
    'pnd': (int, 'RP: if > 0, use N // pnd projections for a layer of N neurons instead of pn'),
    'iters': (int, 'P update steps before each main step (AP/AdvP)'),
    'model_name': (str, 'MHE baselines: baseline | mhe (full space) | half_mhe (half space)'),
    'power_s': (str, 'MHE baselines: the energy kernel, 0 | 1 | 2 | a0 | a1 | a2'),
    'lookahead_decay': (bool, "AP: the look-ahead descends P's whole loss, its scaled weight decay "
                              'included, as docs/protocol.md writes it (a deviation: the release '
                              'differentiated the angle loss alone)'),
}
CHOICES = {'model_name': ('baseline', 'mhe', 'half_mhe'), 'power_s': POWERS}


ENGINES = ('tf1', 'keras')
KERAS_BACKENDS = ('jax', 'tensorflow', 'torch')


class FlagError(ValueError):
    """A flag value that cannot work; the message names the flag and the allowed values."""


class RunBusy(FlagError):
    """--resume of a run that another train.py is writing: try again once it ends
    (exit code runstate.BUSY_EXIT, not 2)."""


def build_parser(description, variant, variant_defaults):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--base_lr', type=float, default=0.1, help='initial learning rate')
    p.add_argument('--batch_size', type=int, default=128, help='training batch size')
    p.add_argument('--gpu_no', type=str, default=None,
                   help='GPU(s) to use: sets CUDA_VISIBLE_DEVICES before TensorFlow starts '
                        '(default: an inherited CUDA_VISIBLE_DEVICES, e.g. the GPU Ray gave a '
                        'sweep run, else 0)')
    p.add_argument('--random_seed', type=int, default=variant_defaults.get('random_seed', 345),
                   help='seed of the graph-level and numpy randomness')
    for name, default in variant_defaults.items():
        if name == 'random_seed':
            continue
        kind, text = VARIANT_FLAGS[name]
        if kind is bool:   # off by default, on when given
            p.add_argument(f'--{name}', action='store_true', help=text)
            continue
        p.add_argument(f'--{name}', type=kind, default=default, help=text,
                       choices=CHOICES.get(name))
    p.add_argument('--data_dir', type=Path, default=REPO_ROOT / 'data',
                   help='where CIFAR-100 is, or is downloaded to')
    p.add_argument('--data_md5', type=str, default=None,
                   help='expected md5s as train=HEX,test=HEX[,archive=HEX] instead of the '
                        'official CIFAR-100 ones (a re-packaged copy, or test fixtures)')
    p.add_argument('--log_dir', type=Path, default=REPO_ROOT / 'logs' / variant,
                   help='the run writes to a configuration folder inside it')
    p.add_argument('--max_iters', type=int, default=FULL_ITERS,
                   help=f'training iterations; the lr steps ({", ".join(map(str, LR_STEPS))} '
                        f'of {FULL_ITERS}) scale proportionally for a shorter or longer run')
    p.add_argument('--eval_every', type=int, default=500,
                   help='test accuracy every this many iterations, and after the last')
    p.add_argument('--ckpt_every', type=int, default=2500,
                   help='checkpoint every this many iterations (also at the end and on '
                        'SIGINT/SIGTERM); the last two are kept')
    p.add_argument('--resume', action='store_true',
                   help='continue the latest run of this configuration from its last checkpoint')
    p.add_argument('--width', type=float, default=1.0,
                   help='channel multiplier of CNN-9 (1.0 is the paper\'s network; '
                        'smaller for quick checks on a CPU)')
    p.add_argument('--engine', choices=ENGINES, default='tf1',
                   help='tf1: the TensorFlow graph of the release; keras: the same protocol '
                        'with Keras 3 on the backend KERAS_BACKEND names (jax, tensorflow, '
                        'torch), e.g. JAX on a GPU without TensorFlow (docs/keras_engine.md)')
    p.add_argument('--keras_backend', choices=KERAS_BACKENDS, default=None,
                   help='with --engine keras: the backend, set as KERAS_BACKEND before Keras '
                        'starts (default: an inherited KERAS_BACKEND, else Keras\'s own default); '
                        'what a sweep file sets so that every machine uses the same')
    p.add_argument('--bn_zero_debias', action='store_true',
                   help='zero-debias the batch-norm moving averages used at test time (a '
                        'deviation: the release did not, so its test accuracy stays near '
                        'chance for the first ~2,500 iterations)')
    return p


def validate(flags):
    """Raise FlagError for values that cannot give a meaningful run."""
    at_least_one = ['batch_size', 'max_iters', 'eval_every', 'ckpt_every', 'pd', 'pn', 'iters']
    for name in at_least_one:
        value = getattr(flags, name, None)
        if value is not None and value < 1:
            raise FlagError(f'--{name} must be an integer >= 1, got {value}')
    if getattr(flags, 'pnd', 0) < 0:
        raise FlagError(f'--pnd must be 0 (use --pn) or >= 1, got {flags.pnd}')
    if getattr(flags, 'pnd', 0) > 0:
        # The narrowest projected layer (conv1_1) must still get a projection.
        narrowest = scaled_widths(flags.width)[0]
        if narrowest // flags.pnd < 1:
            raise FlagError(f'--pnd {flags.pnd} gives no projection for a layer of {narrowest} '
                            f'neurons; use 0 < --pnd <= {narrowest}')
    if not flags.base_lr > 0:
        raise FlagError(f'--base_lr must be > 0, got {flags.base_lr}')
    if not 0 < flags.width <= 16:
        raise FlagError(f'--width must be in (0, 16], got {flags.width}')
    if getattr(flags, 'keras_backend', None) is not None and flags.engine != 'keras':
        raise FlagError(f'--keras_backend {flags.keras_backend} chooses the backend of --engine keras; '
                        f'add --engine keras, or drop --keras_backend')
    try:
        parse_md5_flag(getattr(flags, 'data_md5', None))
    except ValueError as e:
        raise FlagError(str(e)) from None


def check_run_folder(flags):
    """The log folder must be writable; --resume needs an unfinished run with a checkpoint."""
    from common.run import locks, runstate
    run_dir = flags.log_dir / run_name(flags)
    try:
        runstate.check_writable(run_dir)
    except OSError as e:
        raise FlagError(f'--log_dir {flags.log_dir}: cannot write the run folder {run_dir} '
                        f'({e}); pass a writable --log_dir') from None
    if not flags.resume:
        return
    run = runstate.latest_run(run_dir)
    done = run.checkpoint_iteration() if run else None
    if done is None:
        raise FlagError(f'--resume: nothing to resume in {run_dir} (no run with a checkpoint); '
                        f'start without --resume')
    if done >= flags.max_iters:
        raise FlagError(f'--resume: run {run.index:02d} in {run_dir} is finished '
                        f'({done} iterations); start a new run without --resume')
    if locks.is_held(run.lock_file):
        raise RunBusy(f'--resume: {runstate.busy_message(run)}')
    changed = runstate.changed_flags(run, flags)
    if changed:
        raise FlagError('--resume: ' + '; '.join(f'--{k} is {now}, the run used {then}'
                                                for k, now, then in changed)
                        + '; resume with the run\'s flags')


def select_gpu(gpu_no):
    """As the original: pick the GPU(s) before TensorFlow starts. Without --gpu_no an
    inherited CUDA_VISIBLE_DEVICES stands (a scheduler such as Ray chose the GPU), else GPU 0."""
    os.environ.setdefault('CUDA_DEVICE_ORDER', 'PCI_BUS_ID')
    if gpu_no is not None:
        os.environ['CUDA_VISIBLE_DEVICES'] = str(gpu_no)
    else:
        os.environ.setdefault('CUDA_VISIBLE_DEVICES', '0')


def select_keras_backend(backend):
    """Set KERAS_BACKEND before Keras starts; Keras reads it once, at its import."""
    if backend is None:
        return
    keras = sys.modules.get('keras')
    if keras is not None and keras.backend.backend() != backend:
        raise FlagError(f'--keras_backend {backend}: Keras already runs on '
                        f'{keras.backend.backend()} in this process; start a new Python process '
                        f'(train.py from a shell, for instance)')
    os.environ['KERAS_BACKEND'] = backend


def parse(description, variant, variant_defaults, argv=None):
    """Parse and check the flags, then select the GPU; exits 2 on a bad flag, 75
    (runstate.BUSY_EXIT) when --resume finds another train.py writing the run."""
    parser = build_parser(description, variant, variant_defaults)
    flags = parser.parse_args(argv)
    flags.variant = variant   # recorded in the run's flags file, so a run knows its entry point
    try:
        validate(flags)
        check_run_folder(flags)
        select_keras_backend(flags.keras_backend)
    except RunBusy as e:
        from common.run.runstate import BUSY_EXIT
        parser.exit(BUSY_EXIT, f'{parser.prog}: error: {e}\n')
    except FlagError as e:
        parser.error(str(e))
    select_gpu(flags.gpu_no)
    return flags


def run_name(flags):
    """The configuration folder, named as in the original releases' logs."""
    if hasattr(flags, 'model_name'):
        return 'baseline' if flags.model_name == 'baseline' else f'{flags.model_name}_{flags.power_s}'
    if hasattr(flags, 'iters'):
        return f'pd{flags.pd}_pn{flags.pn}_iter{flags.iters}'
    if flags.pnd > 0:
        return f'pd{flags.pd}_pnd{flags.pnd}'
    return f'pd{flags.pd}_pn{flags.pn}'
