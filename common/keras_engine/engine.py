"""``train.py --engine keras``: the protocol of docs/protocol.md with a Keras 3 CNN-9 on
the backend ``KERAS_BACKEND`` names (jax, tensorflow, torch), through the same loop,
logs, run files, locks and batches as the TF1 engine (``common.run.loop``).

The run: its state (``step``), restored from or saved to its checkpoints
(``checkpoints``), its test passes (``testset``) and TensorBoard scalars (``events``),
on the backend's device (``device``).
"""
import sys

import keras
import numpy as np

from common.keras_engine import network, step as steps
from common.keras_engine.checkpoints import CheckpointError, load_checkpoint, save_checkpoint, state_arrays
from common.keras_engine.device import backend_device
from common.keras_engine.events import Scalars
from common.keras_engine.testset import TestSet
from common.paper.schedule import learning_rate, scaled_widths
from common.run import loop, runstate


def train(flags, run_name, terms, dataset=None):
    """Train one configuration with the Keras engine (or resume it); returns the exit code."""
    device = backend_device()
    return loop.run_with_data_and_lock(
        flags, run_name, dataset, device.description,
        lambda files, *arrays: _train_run(flags, run_name, terms, device.gpu, files, *arrays))


def _train_run(flags, run_name, terms, on_gpu, files, train_x, train_y, test_x, test_y):
    keras.utils.set_random_seed(flags.random_seed)
    n_class = 100   # as the TF1 engine: CIFAR-100's classes, whatever the data set's labels
    model = network.cnn9(scaled_widths(flags.width), n_class, flags.bn_zero_debias,
                         seed=flags.random_seed)
    state = steps.initial_state(model, terms, flags.random_seed)
    restored = None
    if flags.resume:
        backend, then = keras.backend.backend(), runstate.recorded(files, 'backend')
        if then not in (None, backend):   # None: runs from before the backend was recorded
            print(f'error: --resume: run {files.index:02d} ran on Keras\'s {then} backend, this '
                  f'process has {backend}, and the logs would not continue as an uninterrupted '
                  f'run\'s; resume with --keras_backend {then}', file=sys.stderr)
            return 2
        restored = files.checkpoint_iteration()
        try:
            state = load_checkpoint(files.checkpoint_dir, restored, state)
        except CheckpointError as e:
            print(f'error: {e}; {loop.CHECKPOINT_ADVICE}', file=sys.stderr)
            return 2
    start = loop.prepare_run_files(flags, files, run_name, restored,
                                   record={'backend': keras.backend.backend()})
    train_step = steps.compiled(steps.make_train_step(model, terms, flags.random_seed, n_class))
    saved_terms = steps.compiled(steps.make_batchless_terms(model, terms, flags.random_seed),
                                 donate_state=False)
    test_set = TestSet(model, test_x, test_y)
    scalars = Scalars(files.tensorboard_dir, start)
    current = {'state': state}

    def step(x, y, lr):
        current['state'], values = train_step(current['state'], x, y, np.float32(lr))
        fetch = lambda: steps.logged_values(values)   # noqa: E731 (a value the loop may call later)
        # On a GPU the values are fetched once the next step is under way, so that the
        # loop's host work overlaps the device's; on a CPU the host work competes with
        # the step's own threads instead (bench/keras_engine_step.py --loop measures both).
        return fetch if on_gpu else fetch()

    def checkpoint(iteration):
        # Never save what a diverging update left, so the last checkpoint stays good:
        # finite arrays, and finite terms that need no batch (as the TF1 engine).
        lr = np.float32(learning_rate(iteration, flags.base_lr, flags.max_iters))
        values = steps.logged_values(saved_terms(current['state'], lr))
        arrays = state_arrays(current['state'])
        bad = [k for k, v in arrays.items() if v.dtype.kind == 'f' and not np.isfinite(v).all()]
        problems = ([f'non-finite {", ".join(bad[:3])}'] if bad else []) + \
            [f'{k} = {v}' for k, v in zip(('reg', 'thom', 'thomf'), values) if not np.isfinite(v)]
        if problems:
            raise loop.NonFiniteLoss(f'the update of iteration {iteration - 1} left weights that '
                                     f'cannot be saved ({", ".join(problems)}); '
                                     f'{loop.RESTART_ADVICE}')
        save_checkpoint(files.checkpoint_dir, arrays, iteration)

    def test_line(iteration):
        loop.write_test_line(files, iteration, test_set.accuracy(current['state']), scalars)

    try:
        if not flags.resume:
            checkpoint(0)
        code = loop.run_loop(flags, step, files, start, train_x, train_y, scalars, checkpoint,
                             test_line, has_energy=terms.has_energy)
    except loop.NonFiniteLoss as e:
        code = loop.report_non_finite(e, files)
    scalars.close()
    return code

