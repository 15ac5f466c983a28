"""CIFAR-100 for the CoMHE reproduction (docs/protocol.md section 5).

Finds the python version of CIFAR-100 in a data folder (downloading and
verifying it when missing) and loads it as uint8 [n, 32, 32, 3] images with int64
fine labels. The batches made from them are common/data/pipeline.py's.

Every problem with the data raises DataError, whose message names the file,
what is wrong and how to fix it, so the training script can print it and exit.
"""
import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
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


def _check_md5(path, expected, fix, key, name=None):
    """key: the file's key in --data_md5 (train, test, archive)."""
    got = md5_of(path)
    if got != expected:
        raise DataError(f'{name or path} has md5 {got}, expected {expected}: the file is '
                        f'corrupted, truncated or not the CIFAR-100 python version; {fix}. '
                        f'A copy that differs on purpose (repacked, a subset, the tests\' '
                        f'fixture) is accepted with --data_md5 {key}={got}')


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
                    f'downloaded:\n  {tried}\nFix: {_by_hand(data_dir, urls)}.\nOnly trying the '
                    f'code? `python -m common.cifar_fixture data/fixture`, from the repository root, '
                    f'writes a tiny stand-in and prints the flags that train on it')


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
            _check_md5(tmp / FOLDER_NAME / split, file_md5[split], fix, split,
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
                       f'delete it and rerun to download it again, or {_by_hand(data_dir, urls)}',
                       'archive')
        folder = extract_archive(archive, data_dir, file_md5, urls)
    fix = (f'delete {folder / "train"} and {folder / "test"} and rerun to extract or download '
           f'them again, or put a good {ARCHIVE_NAME} in {data_dir}/')
    out = []
    for split in SPLITS:
        path = folder / split
        _check_md5(path, file_md5[split], fix, split)
        out.extend(_read_split(path, fix))
    return tuple(out)


MD5_KEYS = ('train', 'test', 'archive')


def parse_md5_flag(spec):
    """``train=HEX,test=HEX[,archive=HEX]`` (any of them) -> dict; {} for None."""
    if not spec:
        return {}
    sums = {}
    for item in spec.split(','):
        key, sep, value = item.strip().partition('=')
        if not sep or key not in MD5_KEYS or len(value) != 32 or \
                any(c not in '0123456789abcdef' for c in value.lower()):
            raise ValueError(f'--data_md5: {item!r} is not KEY=MD5 with KEY one of '
                             f'{", ".join(MD5_KEYS)} and MD5 32 hex digits; expected for example '
                             f'train=16019d7e3df5f24257cddd939b257f8d,test=f0ef6b0ae62326f3e7ffdfab6717acfc')
        sums[key] = value.lower()
    return sums
