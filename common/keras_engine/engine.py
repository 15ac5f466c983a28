"""``train.py --engine keras``: the protocol of docs/protocol.md with a Keras 3 CNN-9 on
the backend ``KERAS_BACKEND`` names (jax, tensorflow, torch), through the same loop,
logs, run files, locks and batches as the TF1 engine (``common.run.loop``).

Engine-specific here: the state (weights, momentum, BN averages, P, step) and its
checkpoints, ``checkpoints_NN/ckpt-K.npz`` with a TF-style ``checkpoint`` index file
(so ``runstate`` and the sweeps read them as the TF1 engine's), the last two kept,
each written to a temporary file and renamed; the test pass, on a test set kept on
the device; TensorBoard scalars
(when TensorFlow is installed: the JAX and PyTorch backends do not need it).
"""
import os
import socket
import sys
import time
import zipfile
import zlib

import keras
import numpy as np
from keras import ops

from common.run import loop, runstate
from common.keras_engine import network, step as steps
from common.paper.schedule import learning_rate, scaled_widths

EVAL_BATCH = 1000
KEEP_CHECKPOINTS = 2


def state_arrays(state):
    """The state as a flat dict of NumPy arrays (a checkpoint's content)."""
    out = {'step': np.asarray(state['step'])}
    for part in ('trainable', 'non_trainable', 'accum', 'P'):
        for i, value in enumerate(state[part]):
            out[f'{part}/{i:03d}'] = np.asarray(value)
    return out


def state_from_arrays(arrays):
    state = {'step': ops.convert_to_tensor(arrays['step'])}
    for part in ('trainable', 'non_trainable', 'accum', 'P'):
        keys = sorted(k for k in arrays if k.startswith(f'{part}/'))
        state[part] = [ops.convert_to_tensor(arrays[k]) for k in keys]
    return state


def save_checkpoint(folder, arrays, iteration):
    """``arrays`` (state_arrays of the state) as ckpt-<iteration>.npz, then the index
    naming it, then the older ones beyond two go."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'ckpt-{iteration}.npz'
    tmp = folder / f'.ckpt-{iteration}.npz.tmp'
    with open(tmp, 'wb') as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    kept = sorted((int(p.stem.split('-')[1]) for p in folder.glob('ckpt-*.npz')))[-KEEP_CHECKPOINTS:]
    index = ''.join([f'model_checkpoint_path: "ckpt-{iteration}"\n'] +
                    [f'all_model_checkpoint_paths: "ckpt-{k}"\n' for k in kept])
    (folder / '.checkpoint.tmp').write_text(index)
    os.replace(folder / '.checkpoint.tmp', folder / 'checkpoint')
    for p in folder.glob('ckpt-*.npz'):
        if int(p.stem.split('-')[1]) not in kept:
            p.unlink()


def load_checkpoint(folder, iteration, fresh):
    """The state saved at ``iteration``, checked against ``fresh`` (a new run's state of
    the same flags): the step its index names, every array of the same shape and type. Raises
    CheckpointError with what differs."""
    path = folder / f'ckpt-{iteration}.npz'
    try:
        with np.load(path) as f:
            arrays = dict(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:   # missing, truncated, corrupt
        raise CheckpointError(f'{path} cannot be read ({e.__class__.__name__}: {e})') from e
    want = {k: (v.shape, v.dtype) for k, v in state_arrays(fresh).items()}
    got = {k: (v.shape, v.dtype) for k, v in arrays.items()}
    if got != want:
        wrong = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise CheckpointError(f'{path} does not hold this run\'s state (arrays missing, extra or of '
                              f'other shapes or types: {", ".join(wrong[:4])})')
    if int(arrays['step']) != iteration:
        raise CheckpointError(f'{path} holds the state after step {int(arrays["step"])}, not '
                              f'{iteration} as its name and the checkpoint index say')
    return state_from_arrays(arrays)


class CheckpointError(ValueError):
    """A checkpoint that is not the state of this run at the iteration it names."""


class Scalars:
    """TensorBoard scalars: event files written with TensorFlow's record writer where
    TensorFlow is installed (as the TF1 engine's; the JAX and PyTorch backends do not
    need it), starting with a session-start event at the first iteration, so that
    TensorBoard drops what a killed run wrote after its checkpoint."""

    def __init__(self, folder, start):
        try:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2
            from tensorflow.core.util import event_pb2
        except ImportError:
            self.writer = None
            print('note: TensorFlow is not installed, so no TensorBoard events are written '
                  '(the logs are)', file=sys.stderr)
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.summary, self.event = summary_pb2, event_pb2
        name = f'events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.keras'
        self.writer = tf.io.TFRecordWriter(str(folder / name))
        self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
        self._write(event_pb2.Event(wall_time=time.time(), step=start, session_log=event_pb2.SessionLog(
            status=event_pb2.SessionLog.START)))

    def _write(self, event):
        self.writer.write(event.SerializeToString())
        self.writer.flush()

    def __call__(self, iteration, **values):
        if self.writer is None:
            return
        summary = self.summary.Summary(value=[self.summary.Summary.Value(tag=k, simple_value=float(v))
                                              for k, v in values.items()])
        self._write(self.event.Event(wall_time=time.time(), step=iteration, summary=summary))

    def close(self):
        if self.writer is not None:
            self.writer.close()


class TestSet:
    """The test images and labels put on the device once, and the accuracy of a state on
    them: ``EVAL_BATCH`` images a call, each call counting its correct answers on the
    device (a pass fetches 10 integers, and sends no image)."""

    def __init__(self, model, images, labels):
        self.chunks = [(ops.convert_to_tensor(images[k:k + EVAL_BATCH]),
                        ops.convert_to_tensor(np.asarray(labels[k:k + EVAL_BATCH], np.int32)))
                       for k in range(0, len(labels), EVAL_BATCH)]
        self.size = len(labels)

        def correct(trainable, non_trainable, x, y):
            logits = model.stateless_call(trainable, non_trainable, x, training=False)[0]
            return ops.sum(ops.cast(ops.cast(ops.argmax(logits, axis=1), 'int32') == y, 'int32'))
        if keras.backend.backend() == 'jax':
            import jax
            correct = jax.jit(correct)
        self.correct = correct

    def accuracy(self, state):
        hits = [self.correct(state['trainable'], state['non_trainable'], x, y) for x, y in self.chunks]
        return sum(int(h) for h in hits) / self.size


def describe_device():
    """The first line of a run: the backend's device, or that it uses the CPU and why."""
    backend = keras.backend.backend()
    if backend == 'jax':
        import jax
        d = jax.devices()[0]
        if d.platform == 'gpu':
            return f'device: GPU {d.device_kind} (JAX)'
        return ('device: CPU (JAX finds no GPU: its CPU build, or no NVIDIA driver; on a GPU '
                'machine install JAX with CUDA, pip install "jax[cuda12]")')
    if backend == 'torch':
        import torch
        if torch.cuda.is_available():
            return f'device: GPU {torch.cuda.get_device_name(0)} (PyTorch)'
        why = 'its CPU build' if torch.version.cuda is None else 'no usable NVIDIA GPU'
        return f'device: CPU (PyTorch finds no GPU: {why})'
    from common.run import device
    return device.describe()


def train(flags, run_name, terms, dataset=None):
    """Train one configuration with the Keras engine (or resume it); returns the exit code."""
    device_line = describe_device()
    on_gpu = device_line.startswith('device: GPU')
    return loop.start(flags, run_name, dataset, device_line,
                      lambda files, *arrays: _train_run(flags, run_name, terms, on_gpu, files, *arrays))


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
    start = loop.begin(flags, files, run_name, restored, record={'backend': keras.backend.backend()})
    train_step = steps.compiled(steps.make_train_step(model, terms, flags.random_seed, n_class))
    saved_terms = steps.compiled(steps.make_batchless_terms(model, terms, flags.random_seed),
                                 donate_state=False)
    test_set = TestSet(model, test_x, test_y)
    scalars = Scalars(files.tensorboard_dir, start)
    current = {'state': state}

    def step(x, y, lr):
        current['state'], values = train_step(current['state'], x, y, np.float32(lr))
        fetch = lambda: steps.logged_values(values)   # noqa: E731
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

