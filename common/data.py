"""CIFAR-100 for the CoMHE reproduction (docs/protocol.md section 5).

Finds the python version of CIFAR-100 in a data folder (downloading and
verifying it when missing), loads it as uint8 [n, 32, 32, 3] images with int64
fine labels, and serves the training batches (reshuffled each epoch, symmetric
pad 4, random 32x32 crop, random left-right flip) as a pure function of
(seed, iteration), plus a background prefetcher and the in-order test batches.

Every problem with the data raises DataError, whose message names the file,
what is wrong and how to fix it, so the training script can print it and exit.
"""
import gzip
import hashlib
import http.client
import os
import pickle
import queue
import shutil
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from common import REPO_ROOT


class DataError(Exception):
    """CIFAR-100 is missing, corrupted or malformed; the message says how to fix it."""


ARCHIVE_NAME = 'cifar-100-python.tar.gz'
FOLDER_NAME = 'cifar-100-python'
SPLITS = ('train', 'test')
CIFAR100_URLS = (
    'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
    # The plain-http address still answers where the https one is blocked or
    # the certificate store is outdated; the md5 check makes it safe.
    'http://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
)
ARCHIVE_MD5 = 'eb9058c3a382ffc7106e4002c42a8d85'
FILE_MD5 = {'train': '16019d7e3df5f24257cddd939b257f8d',
            'test': 'f0ef6b0ae62326f3e7ffdfab6717acfc'}
NUM_CLASSES = 100
PAD = 4
DOWNLOAD_TIMEOUT = 30  # seconds without data before a mirror is given up
_CHUNK = 1 << 20


# ---------------------------------------------------------------- finding

def default_data_dir():
    return REPO_ROOT / 'data'


def _by_hand(data_dir, urls):
    url = urls[0] if urls else CIFAR100_URLS[0]
    return (f'download {url} by hand and put it in {data_dir}/ '
            f'(or pass --data_dir to a folder that has it)')


def _find_folder(data_dir):
    """The folder holding the train and test pickles, or None if neither layout is there."""
    for folder in (data_dir / FOLDER_NAME, data_dir):
        present = [s for s in SPLITS if (folder / s).is_file()]
        if len(present) == len(SPLITS):
            return folder
        if present:
            missing = [s for s in SPLITS if s not in present]
            raise DataError(
                f'{folder} has {", ".join(present)} but no {", ".join(missing)}: an incomplete '
                f'CIFAR-100 copy; delete {", ".join(str(folder / s) for s in present)} and rerun '
                f'(with {ARCHIVE_NAME} in {data_dir}/, or network access, to fetch it again)')
    return None


def md5_of(path):
    h = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def _check_md5(path, expected, fix, name=None):
    got = md5_of(path)
    if got != expected:
        raise DataError(f'{name or path} has md5 {got}, expected {expected}: the file is '
                        f'corrupted, truncated or not the CIFAR-100 python version; {fix}')


def _in_data_dir(make_temp, data_dir, **kwargs):
    try:
        return make_temp(dir=data_dir, **kwargs)
    except OSError as e:
        raise DataError(f'cannot write in the data folder {data_dir} ({e}); make it writable '
                        f'or pass --data_dir to a writable folder') from None


# ---------------------------------------------------------------- downloading

class _Progress:
    """Plain-text progress on stderr: a rewritten line on a terminal, every 10% otherwise."""

    def __init__(self, name, total):
        self.name, self.total = name, total
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done):
        if self.total:
            pct = min(100, 100 * done // self.total)
            step = 1 if self.tty else 10
            if pct // step == self.shown:
                return
            self.shown = pct // step
            text = f'{self.name}: {pct:3d}% ({done / 1e6:.1f} of {self.total / 1e6:.1f} MB)'
        else:
            mb = done // 10_000_000
            if mb == self.shown:
                return
            self.shown = mb
            text = f'{self.name}: {done / 1e6:.1f} MB'
        sys.stderr.write(('\r' + text) if self.tty else (text + '\n'))
        sys.stderr.flush()

    def finish(self):
        if self.tty:
            sys.stderr.write('\n')
            sys.stderr.flush()


def _fetch(url, part_path, timeout):
    """Stream url into part_path; returns its md5. Raises OSError-like errors on failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part_path, 'wb') as out:
        length = response.headers.get('Content-Length')
        total = int(length) if length and length.isdigit() else None
        progress = _Progress(f'downloading {url}', total)
        h = hashlib.md5()
        done = 0
        try:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                progress(done)
        finally:
            progress.finish()
    if total is not None and done != total:
        raise OSError(f'transfer stopped after {done} of {total} bytes')
    return h.hexdigest()


def download_archive(data_dir, urls=CIFAR100_URLS, archive_md5=ARCHIVE_MD5,
                     timeout=DOWNLOAD_TIMEOUT):
    """Download the archive into data_dir, trying each URL in turn; returns its path.

    Each attempt writes a temporary file that is renamed to the archive's name
    only once it is complete and its md5 matches, so no later run can find a
    partial archive."""
    data_dir = Path(data_dir)
    target = data_dir / ARCHIVE_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f'cannot create the data folder {data_dir} ({e}); '
                        f'pass --data_dir to a writable folder') from None
    failures = []
    for url in urls:
        fd, part = _in_data_dir(tempfile.mkstemp, data_dir, prefix=f'.{ARCHIVE_NAME}.',
                                suffix='.part')
        os.close(fd)
        try:
            got = _fetch(url, part, timeout)
            if got != archive_md5:
                failures.append(f'{url}: md5 {got}, expected {archive_md5} '
                                f'(corrupted, truncated or not the CIFAR-100 python archive)')
                continue
            os.replace(part, target)
            return target
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reason = getattr(e, 'reason', None) or e
            failures.append(f'{url}: {reason}')
        finally:
            if os.path.exists(part):
                os.remove(part)
    tried = '\n  '.join(failures) if failures else '(no URLs given)'
    raise DataError(f'CIFAR-100 not found in {data_dir}/ and {ARCHIVE_NAME} could not be '
                    f'downloaded:\n  {tried}\nFix: {_by_hand(data_dir, urls)}')


# ---------------------------------------------------------------- extracting

def extract_archive(archive, data_dir, file_md5=FILE_MD5, urls=CIFAR100_URLS):
    """Extract archive's cifar-100-python folder into data_dir; returns its path.

    Extracts into a temporary folder and renames it into place only after the
    train and test pickles' md5s match, so a half-extracted or wrong folder is
    never left where a later run would trust it."""
    archive, data_dir = Path(archive), Path(data_dir)
    fix = f'delete {archive} and rerun to download it again, or {_by_hand(data_dir, urls)}'
    final = data_dir / FOLDER_NAME
    tmp = Path(_in_data_dir(tempfile.mkdtemp, data_dir, prefix=f'.{FOLDER_NAME}.extract-'))
    try:
        try:
            # A damaged middle can read as an early end of the tar; the gzip
            # CRC over the whole stream tells corruption from a wrong archive.
            with gzip.open(archive, 'rb') as gz:
                while gz.read(_CHUNK):
                    pass
            with tarfile.open(archive, 'r:gz') as tar:
                names = set(tar.getnames())
                missing = [f'{FOLDER_NAME}/{s}' for s in SPLITS if f'{FOLDER_NAME}/{s}' not in names]
                if missing:
                    raise DataError(f'{archive} does not contain {", ".join(missing)}: it is not '
                                    f'the CIFAR-100 python archive; {fix}')
                members = [m for m in tar.getmembers()
                           if m.name == FOLDER_NAME or m.name.startswith(FOLDER_NAME + '/')]
                # 'data' refuses absolute paths, links out of the folder and devices.
                tar.extractall(tmp, members=members, filter='data')
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, ValueError, zlib.error) as e:
            raise DataError(f'{archive} cannot be extracted ({type(e).__name__}: {e}): it is '
                            f'corrupted or truncated; {fix}') from None
        except OSError as e:  # not a damaged archive: disk space or permissions
            raise DataError(f'cannot extract {archive} into {data_dir} ({e}); check the disk '
                            f'space and permissions there, or pass --data_dir') from None
        for split in SPLITS:
            _check_md5(tmp / FOLDER_NAME / split, file_md5[split], fix,
                       name=f'{FOLDER_NAME}/{split} in {archive}')
        try:
            _move_into_place(tmp / FOLDER_NAME, final)
        except OSError as e:
            # Another run may have put a complete folder there meanwhile.
            if _find_folder(data_dir) != final:
                raise DataError(f'cannot move the extracted CIFAR-100 into {final} ({e}); check '
                                f'the permissions there, or delete {final} and rerun') from None
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(extracted, final):
    """Rename the verified folder into place; if a folder without the pickles is
    already there (say, after the user deleted bad ones), move the files into it,
    the pickles last, so that the copy only counts as present once it is whole."""
    if not final.exists():
        os.rename(extracted, final)
        return
    entries = sorted(extracted.iterdir(), key=lambda p: p.name in SPLITS)
    for entry in entries:
        target = final / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


# ---------------------------------------------------------------- loading

def _read_split(path, fix):
    try:
        with open(path, 'rb') as f:
            d = pickle.load(f, encoding='latin1')
    except Exception as e:  # a damaged pickle can raise almost anything
        raise DataError(f'{path} is not a readable CIFAR-100 pickle ({type(e).__name__}: {e}); '
                        f'{fix}') from None
    if not isinstance(d, dict):
        raise DataError(f'{path} holds a {type(d).__name__}, expected a dict; {fix}')
    d = {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in d.items()}
    missing = [k for k in ('data', 'fine_labels') if k not in d]
    if missing:
        raise DataError(f'{path} has no {", ".join(repr(k) for k in missing)} key '
                        f'(keys: {sorted(map(str, d))}): not CIFAR-100; {fix}')
    data = np.asarray(d['data'])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is {data.dtype} {list(data.shape)}, expected uint8 "
                        f'[n, 3072]; {fix}')
    labels = np.asarray(d['fine_labels'])
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'fine_labels' is {labels.dtype} {list(labels.shape)}, expected "
                        f'{data.shape[0]} integers (one per image); {fix}')
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: 'fine_labels' range from {labels.min()} to {labels.max()}, "
                        f'expected 0..{NUM_CLASSES - 1}; {fix}')
    # Stored channel-major (1024 R, 1024 G, 1024 B, rows of 32); the network wants HWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


def load_cifar100(data_dir=None, urls=CIFAR100_URLS, archive_md5=ARCHIVE_MD5, file_md5=FILE_MD5,
                  download=True):
    """-> (train_images uint8 [n,32,32,3], train_labels int64 [n], test_images, test_labels)

    Looks in data_dir (default data/ at the repository root) for
    cifar-100-python/{train,test} or train and test directly in it; failing
    that, extracts cifar-100-python.tar.gz there, downloading it first from
    urls if it is missing and download is true. The archive and the pickles
    must have the given md5s (file_md5 keys not given keep the official ones)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    file_md5 = {**FILE_MD5, **(file_md5 or {})}
    folder = _find_folder(data_dir)
    if folder is None:
        archive = data_dir / ARCHIVE_NAME
        if not archive.is_file():
            if not download:
                raise DataError(f'CIFAR-100 not found in {data_dir}/; put {ARCHIVE_NAME} there '
                                f'(from {(urls or CIFAR100_URLS)[0]}) or pass --data_dir')
            archive = download_archive(data_dir, urls, archive_md5)
        else:
            _check_md5(archive, archive_md5,
                       f'delete it and rerun to download it again, or {_by_hand(data_dir, urls)}')
        folder = extract_archive(archive, data_dir, file_md5, urls)
    fix = (f'delete {folder / "train"} and {folder / "test"} and rerun to extract or download '
           f'them again, or put a good {ARCHIVE_NAME} in {data_dir}/')
    out = []
    for split in SPLITS:
        path = folder / split
        _check_md5(path, file_md5[split], fix)
        out.extend(_read_split(path, fix))
    return tuple(out)


# ---------------------------------------------------------------- batches

def batches_per_epoch(n_images, batch_size):
    """Full batches per epoch; the n_images % batch_size left over are skipped that epoch."""
    if batch_size < 1 or n_images < batch_size:
        raise ValueError(f'batch size {batch_size} does not fit a training set of {n_images} '
                         f'images; use a batch size between 1 and {n_images}')
    return n_images // batch_size


def _source_index(size, pad=PAD):
    """Padded position -> source position for numpy 'symmetric' padding (edge repeated)."""
    return np.pad(np.arange(size), pad, mode='symmetric')


def crop_flip(images, top, left, flip, pad=PAD):
    """Crops of the symmetrically padded images at offsets (top, left), flipped where flip.

    Gathers straight from the unpadded images through an index map, which is
    the same as padding then cropping but never builds the padded batch."""
    n, h, w = images.shape[:3]
    rows = _source_index(h, pad)[top[:, None] + np.arange(h)]           # [n, h]
    cols = _source_index(w, pad)[left[:, None] + np.arange(w)]          # [n, w]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return images[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def augment_draws(rng, n, pad=PAD):
    """(top, left, flip) of n images: crop offsets 0..2*pad, flip with p=1/2."""
    top = rng.integers(0, 2 * pad + 1, size=n)
    left = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    return top, left, flip


def augment_batch(images, rng, pad=PAD):
    """Pad `pad` symmetric, random crop back to size (offsets 0..2*pad), flip with p=1/2."""
    return crop_flip(images, *augment_draws(rng, images.shape[0], pad), pad)


def epoch_permutation(n_images, seed, epoch):
    # Tagged, equal-length seed lists: SeedSequence pads with zeros, so [s, e] and
    # [s, e, 0] would give the same stream.
    return np.random.default_rng([seed, 0, epoch]).permutation(n_images)


def _augment_rng(seed, iteration):
    return np.random.default_rng([seed, 1, iteration])


def train_batch(images, labels, seed, iteration, batch_size=128):
    """The augmented batch of this iteration: (x uint8 [b,32,32,3], y int64 [b]).

    A pure function of (seed, iteration), so a resumed run sees the same batches.
    This is the definition; ``TrainBatches`` gives the same arrays, faster."""
    per_epoch = batches_per_epoch(len(images), batch_size)
    epoch, step = divmod(iteration, per_epoch)
    index = epoch_permutation(len(images), seed, epoch)[step * batch_size:(step + 1) * batch_size]
    return augment_batch(images[index], _augment_rng(seed, iteration)), labels[index]


class TrainBatches:
    """``train_batch(images, labels, seed, iteration, batch_size)`` for any iteration,
    the same arrays bit for bit, at GPU speed (about 0.15 ms per batch of 128 on one
    idle core of the development machine, against 3.4 ms).

    The training set is padded once (symmetric, ``[n, h + 2 pad, w + 2 pad, c]``)
    and kept a second time mirrored left-right: 3.1x the images' memory, 480 MB
    for CIFAR-100. A crop is then a strided window of one or the other (a flipped
    crop at offset ``left`` is the mirrored image's window at ``2 pad - left``),
    so a batch is two gathers of contiguous rows; reversing the pixels of half a
    batch after the gather would cost twice as much as everything else. The
    epoch's permutation is computed once per epoch, not once per batch."""

    def __init__(self, images, labels, seed, batch_size=128, pad=PAD):
        self.per_epoch = batches_per_epoch(len(images), batch_size)
        self.labels, self.seed, self.batch_size, self.pad = labels, seed, batch_size, pad
        self._shape, self._dtype = images.shape[1:], images.dtype
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='symmetric')
        # windows[i, top, left] is the crop of image i at (top, left): a view, no copy.
        self._windows = self._crops(padded)
        self._mirrored_windows = self._crops(np.ascontiguousarray(padded[:, :, ::-1]))
        self._epoch, self._order = None, None

    def _crops(self, padded):
        (h, w, c), span = self._shape, 2 * self.pad + 1
        s_n, s_h, s_w, s_c = padded.strides
        return np.lib.stride_tricks.as_strided(padded, (len(padded), span, span, h, w, c),
                                               (s_n, s_h, s_w, s_h, s_w, s_c), writeable=False)

    def __call__(self, iteration):
        epoch, step = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            self._order = epoch_permutation(len(self._windows), self.seed, epoch)
            self._epoch = epoch
        b = self.batch_size
        index = self._order[step * b:(step + 1) * b]
        top, left, flip = augment_draws(_augment_rng(self.seed, iteration), b, self.pad)
        x = np.empty((b, *self._shape), self._dtype)
        kept, flipped = np.flatnonzero(~flip), np.flatnonzero(flip)
        x[kept] = self._windows[index[kept], top[kept], left[kept]]
        x[flipped] = self._mirrored_windows[index[flipped], top[flipped],
                                            2 * self.pad - left[flipped]]
        return x, self.labels[index]


def test_batches(images, labels, batch_size=100):
    """(x, y) in order without augmentation; the last batch may be shorter."""
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size], labels[start:start + batch_size]



class TrainBatchPrefetcher:
    """Iterator over train_batch(..., it) for it = start_iter, start_iter + 1, ...

    A daemon thread makes them with ``TrainBatches`` (padding the training set
    first) and keeps up to `depth` of them ready, so that next() only hands one
    over (numpy releases the GIL for the gathers, so this overlaps with the
    training step). An exception
    in the thread is raised by the next call to next(). close() stops and joins
    the thread; use it as a context manager or call close() (the thread holds
    a reference to the prefetcher, so garbage collection alone never stops it)."""

    def __init__(self, images, labels, seed, batch_size, start_iter=0, depth=4,
                 make_batches=TrainBatches):
        # make_batches(images, labels, seed, batch_size) -> iteration -> batch, in the thread
        self._args, self._make_batches = (images, labels, seed), make_batches
        self._batch_size = batch_size
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._work, args=(start_iter,),
                                        name='TrainBatchPrefetcher', daemon=True)
        self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _work(self, iteration):
        try:
            batches = self._make_batches(*self._args, self._batch_size)
            while not self._stop.is_set():
                if not self._put((iteration, batches(iteration))):
                    return
                iteration += 1
        except BaseException as e:  # handed to the consumer, who re-raises it
            self._put((None, e))

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        while True:
            try:
                iteration, item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError('the batch prefetch thread stopped unexpectedly') from None
        if iteration is None:
            self.close()
            raise item
        return item

    def close(self):
        self._closed = True
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():  # drop prepared batches now, not at garbage collection
            self._queue.get_nowait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
