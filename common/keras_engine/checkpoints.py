"""The Keras engine's checkpoints: the run's state (weights, momentum, BN averages, P,
step) as ``checkpoints_NN/ckpt-K.npz`` with a TF-style ``checkpoint`` index file (so
``common.run.runstate`` and the sweeps read them as the TF1 engine's), the last two kept,
each written to a temporary file and renamed.
"""
import os
import zipfile
import zlib

import numpy as np
from keras import ops

KEEP_CHECKPOINTS = 2


def state_arrays(state):
    """The state as a flat dict of NumPy arrays (a checkpoint's content)."""
    out = {'step': np.asarray(state['step'])}
    for part in ('trainable', 'non_trainable', 'accum', 'P'):
        for i, value in enumerate(state[part]):
            out[f'{part}/{i:03d}'] = np.asarray(value)
    return out


def state_from_arrays(arrays):
    """The state that ``state_arrays`` flattened, as the backend's tensors."""
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
