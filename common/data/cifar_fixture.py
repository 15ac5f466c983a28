"""A tiny stand-in for CIFAR-100, in the exact format of the python release.

write_cifar100_archive() writes cifar-100-python.tar.gz holding
cifar-100-python/{train,test,meta}: latin1-compatible pickles (protocol 2,
str keys) of dicts with the real files' keys, 'data' uint8 [n, 3072] stored
channel-major. Its classes are learnable (a class-dependent colour and stripe
pattern plus noise), so tests and smoke runs can train on it through the real
loader, passing the returned md5s as the expected checksums. Same arguments,
same bytes: the archive is written without timestamps.

To try the training scripts without CIFAR-100 (a pipeline check, not an experiment):

    python -m common.cifar_fixture data/fixture     # prints the --data_dir and --data_md5 to pass
"""
import argparse
import gzip
import hashlib
import io
import pickle
import shlex
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

FOLDER = 'cifar-100-python'
ARCHIVE_NAME = 'cifar-100-python.tar.gz'
FINE_NAMES = [f'class_{i:02d}' for i in range(100)]
COARSE_NAMES = [f'superclass_{i:02d}' for i in range(20)]


def class_images(labels, rng):
    """uint8 [n, 32, 32, 3] images whose colour and stripes depend on the label."""
    n = len(labels)
    # One fixed pattern per class (drawn from its own stream, so classes keep
    # their look whatever n and the split are).
    patterns = []
    for c in range(100):
        crng = np.random.default_rng([1234, c])
        colour = crng.uniform(50, 205, size=3)
        angle = crng.uniform(0, np.pi)
        freq = crng.integers(1, 4)
        phase = crng.uniform(0, 2 * np.pi, size=3)
        patterns.append((colour, angle, freq, phase))
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    out = np.empty((n, 32, 32, 3), np.float64)
    for c in np.unique(labels):
        colour, angle, freq, phase = patterns[c]
        t = 2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy)
        stripes = 45 * np.sin(t[..., None] + phase)                  # [32, 32, 3]
        out[labels == c] = colour + stripes
    out += rng.normal(0, 12, size=(n, 1, 1, 3))                      # per-image colour jitter
    out += rng.normal(0, 20, size=out.shape)                         # pixel noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fixture_split(n, n_classes, seed, split):
    """The dict of one split ('train' or 'test'), as the real pickles hold it."""
    if not 1 <= n_classes <= 100:
        raise ValueError(f'n_classes must be 1..100, got {n_classes}')
    rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
    fine = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    images = class_images(fine, rng)
    return {
        'filenames': [f'{FINE_NAMES[c]}_s_{i:06d}.png' for i, c in enumerate(fine)],
        'batch_label': 'training batch 1 of 1' if split == 'train' else 'testing batch 1 of 1',
        'fine_labels': [int(c) for c in fine],
        'coarse_labels': [int(c) // 5 for c in fine],
        # Channel-major rows: 1024 R, 1024 G, 1024 B, each 32 rows of 32.
        'data': np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, 3072)),
    }


def pickle_bytes(obj):
    return pickle.dumps(obj, protocol=2)


def pack_archive(path, files, folder=FOLDER):
    """Write a deterministic .tar.gz of {name: bytes} under folder/; returns its md5."""
    raw = io.BytesIO()
    with gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode='w', format=tarfile.USTAR_FORMAT) as tar:
        if folder:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, blob in files.items():
            info = tarfile.TarInfo(f'{folder}/{name}' if folder else name)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    Path(path).write_bytes(raw.getvalue())
    return hashlib.md5(raw.getvalue()).hexdigest()


def write_cifar100_archive(dest_dir, n_train=500, n_test=200, n_classes=10, seed=0):
    """Write dest_dir/cifar-100-python.tar.gz.

    -> dict(archive=path, archive_md5=..., file_md5={'train': ..., 'test': ...},
            data_md5='train=...,test=...,archive=...', the value of train.py's --data_md5)"""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    files = {
        'train': pickle_bytes(fixture_split(n_train, n_classes, seed, 'train')),
        'test': pickle_bytes(fixture_split(n_test, n_classes, seed, 'test')),
        'meta': pickle_bytes({'fine_label_names': FINE_NAMES, 'coarse_label_names': COARSE_NAMES}),
    }
    archive = dest_dir / ARCHIVE_NAME
    archive_md5 = pack_archive(archive, files)
    file_md5 = {s: hashlib.md5(files[s]).hexdigest() for s in ('train', 'test')}
    return dict(archive=archive, archive_md5=archive_md5, file_md5=file_md5,
                data_md5=f"train={file_md5['train']},test={file_md5['test']},archive={archive_md5}")


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else None


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m common.cifar_fixture',
                                description='Write a tiny learnable CIFAR-100-format archive to train on '
                                            'without CIFAR-100 (a pipeline check, not an experiment), '
                                            'and print the train.py flags that load it.')
    p.add_argument('dest_dir', type=Path, help='folder to write cifar-100-python.tar.gz into')
    p.add_argument('--n_train', type=int, default=500, help='training images')
    p.add_argument('--n_test', type=int, default=200, help='test images')
    p.add_argument('--n_classes', type=int, default=10, help='classes, 1 to 100 (chance: 1 / n_classes)')
    p.add_argument('--seed', type=int, default=0, help='seed of the images; same arguments, same bytes')
    args = p.parse_args(argv)
    if args.n_train < 1 or args.n_test < 1 or not 1 <= args.n_classes <= 100:
        p.error('--n_train and --n_test must be at least 1, --n_classes 1 to 100')
    with tempfile.TemporaryDirectory() as tmp:
        info = write_cifar100_archive(tmp, args.n_train, args.n_test, args.n_classes, args.seed)
        dest = args.dest_dir
        there = [name for name in (ARCHIVE_NAME, FOLDER, 'train', 'test') if (dest / name).exists()]
        # The same fixture already there (and, if extracted, the same pickles): nothing to do.
        same = there and _md5(dest / ARCHIVE_NAME) == info['archive_md5'] and all(
            _md5(dest / FOLDER / split) in (None, info['file_md5'][split]) for split in ('train', 'test')) \
            and not {'train', 'test'} & set(there)
        if there and not same:
            # Never over a real CIFAR-100 (data/, say), nor beside a copy the loader would prefer.
            p.error(f'{dest} already holds {there[0]}, not this fixture; give a new or empty folder '
                    f'(to rewrite a fixture, delete its folder first)')
        if not there:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(tmp) / ARCHIVE_NAME, dest / ARCHIVE_NAME)
    print(f"{'found' if there else 'wrote'} {dest / ARCHIVE_NAME} ({args.n_train} training and "
          f"{args.n_test} test images, {args.n_classes} classes); train on it with:\n"
          f"  --data_dir {shlex.quote(str(dest.resolve()))} --data_md5 {info['data_md5']}")


if __name__ == '__main__':
    main()
