"""Tests of common/data.py and common/pipeline.py on the fixture archive of common/cifar_fixture.py:
finding, downloading (from file:// URLs and a closed loopback port only, never
off the machine), verifying, extracting and loading CIFAR-100, the errors for
every kind of bad data, the augmentation, the epoch order and the prefetcher."""
import hashlib
import pickle
import shutil
import socket
import tarfile
import threading

import numpy as np
import pytest

from common import cifar_fixture as cf
from common import data, pipeline
from common.data import DataError


# ------------------------------------------------------------------ helpers

@pytest.fixture(scope='module')
def fixture(tmp_path_factory):
    return cf.write_cifar100_archive(tmp_path_factory.mktemp('fixture_src'))


@pytest.fixture(scope='module')
def loaded(fixture, tmp_path_factory):
    d = tmp_path_factory.mktemp('loaded')
    shutil.copy(fixture['archive'], d)
    return data.load_cifar100(d, download=False, **md5s(fixture))


def md5s(info):
    return dict(archive_md5=info['archive_md5'], file_md5=info['file_md5'])


def closed_port_url():
    """A loopback URL nobody listens on: connecting fails at once, nothing leaves the machine."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/cifar-100-python.tar.gz'


def raw_split(archive, split):
    with tarfile.open(archive) as tar:
        return pickle.loads(tar.extractfile(f'cifar-100-python/{split}').read(), encoding='latin1')


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def write_pickles(folder, train, test):
    """Original-release layout in folder; returns the md5s to expect."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, obj in (('train', train), ('test', test)):
        blob = pickle.dumps(obj, protocol=2)
        (folder / name).write_bytes(blob)
        sums[name] = hashlib.md5(blob).hexdigest()
    return sums


# ------------------------------------------------------------------ finding and loading

def test_fixture_archive_found_verified_extracted_loaded(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    tx, ty, sx, sy = data.load_cifar100(tmp_path, download=False, **md5s(fixture))
    assert tx.shape == (500, 32, 32, 3) and sx.shape == (200, 32, 32, 3)
    assert tx.dtype == np.uint8 and sx.dtype == np.uint8
    assert ty.dtype == np.int64 and sy.dtype == np.int64
    assert ty.tolist() == raw_split(fixture['archive'], 'train')['fine_labels']
    assert sy.tolist() == raw_split(fixture['archive'], 'test')['fine_labels']
    assert set(ty.tolist()) == set(range(10))
    # Extracted beside the archive, no temporary folder left behind.
    assert listing(tmp_path) == ['cifar-100-python', 'cifar-100-python.tar.gz']
    assert listing(tmp_path / 'cifar-100-python') == ['meta', 'test', 'train']
    # A later run uses the extracted folder, archive or not.
    (tmp_path / 'cifar-100-python.tar.gz').unlink()
    again = data.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
    assert np.array_equal(again[0], tx) and np.array_equal(again[3], sy)


def test_pixels_go_from_channel_major_to_hwc(fixture, loaded):
    raw = raw_split(fixture['archive'], 'train')['data']
    tx = loaded[0]
    for i, r, c, ch in [(0, 0, 0, 0), (3, 5, 17, 1), (42, 31, 2, 2), (499, 12, 31, 0)]:
        assert tx[i, r, c, ch] == raw[i, ch * 1024 + r * 32 + c]


def test_known_image_decodes_to_known_pixels(tmp_path):
    split = cf.fixture_split(4, 3, 0, 'train')
    split['data'][1] = np.arange(3072) % 251  # pixel value = flat channel-major index mod 251
    sums = write_pickles(tmp_path, split, cf.fixture_split(2, 3, 0, 'test'))
    tx = data.load_cifar100(tmp_path, file_md5=sums, download=False)[0]
    assert tx[1, 0, 0, 0] == 0
    assert tx[1, 0, 1, 0] == 1          # next column, same row, red
    assert tx[1, 1, 0, 0] == 32         # next row
    assert tx[1, 0, 0, 1] == 1024 % 251  # green plane starts at 1024
    assert tx[1, 2, 3, 2] == (2048 + 2 * 32 + 3) % 251


def test_original_release_layout_is_found(fixture, loaded, tmp_path):
    with tarfile.open(fixture['archive']) as tar:
        for split in ('train', 'test'):
            (tmp_path / split).write_bytes(tar.extractfile(f'cifar-100-python/{split}').read())
    got = data.load_cifar100(tmp_path, download=False, **md5s(fixture))
    for a, b in zip(got, loaded):
        assert np.array_equal(a, b)
    assert listing(tmp_path) == ['test', 'train']  # used in place, nothing extracted


def test_default_data_dir_is_data_at_repo_root():
    from common import REPO_ROOT
    assert data.default_data_dir() == REPO_ROOT / 'data'


def test_not_found_without_download(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path / 'nothing', download=False)
    msg = str(e.value)
    assert 'not found' in msg and str(tmp_path / 'nothing') in msg
    assert 'cifar-100-python.tar.gz' in msg and '--data_dir' in msg
    assert not (tmp_path / 'nothing').exists()


def test_incomplete_folder_is_named(fixture, tmp_path):
    (tmp_path / 'cifar-100-python').mkdir()
    with tarfile.open(fixture['archive']) as tar:
        (tmp_path / 'cifar-100-python' / 'train').write_bytes(
            tar.extractfile('cifar-100-python/train').read())
    with pytest.raises(DataError, match='has train but no test') as e:
        data.load_cifar100(tmp_path, **md5s(fixture))
    assert 'delete' in str(e.value) and str(tmp_path / 'cifar-100-python' / 'train') in str(e.value)


# ------------------------------------------------------------------ downloading

def test_download_tries_the_next_url(fixture, loaded, tmp_path, capsys):
    dest = tmp_path / 'new' / 'data'
    urls = (closed_port_url(), fixture['archive'].as_uri())
    got = data.load_cifar100(dest, urls=urls, **md5s(fixture))
    for a, b in zip(got, loaded):
        assert np.array_equal(a, b)
    assert listing(dest) == ['cifar-100-python', 'cifar-100-python.tar.gz']
    assert data.md5_of(dest / 'cifar-100-python.tar.gz') == fixture['archive_md5']
    assert '100%' in capsys.readouterr().err  # the progress text


def test_no_network(tmp_path):
    url = closed_port_url()
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, urls=(url, url.replace('http:', 'https:')))
    msg = str(e.value)
    assert 'could not be downloaded' in msg and url in msg
    assert 'by hand' in msg and str(tmp_path) in msg and 'cifar-100-python.tar.gz' in msg
    assert listing(tmp_path) == []  # no partial download left


def test_download_with_wrong_md5_leaves_nothing(fixture, tmp_path):
    url = fixture['archive'].as_uri()
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, urls=(url,), archive_md5='0' * 32,
                           file_md5=fixture['file_md5'])
    msg = str(e.value)
    assert url in msg and fixture['archive_md5'] in msg and '0' * 32 in msg
    assert 'by hand' in msg
    assert listing(tmp_path) == []


def test_truncated_download_leaves_nothing(fixture, tmp_path):
    short = tmp_path / 'src' / 'cifar-100-python.tar.gz'
    short.parent.mkdir()
    short.write_bytes(fixture['archive'].read_bytes()[:100_000])
    dest = tmp_path / 'data'
    with pytest.raises(DataError, match='md5') as e:
        data.load_cifar100(dest, urls=(short.as_uri(),), **md5s(fixture))
    assert short.as_uri() in str(e.value)
    assert listing(dest) == []


# ------------------------------------------------------------------ bad archives and pickles

def test_archive_in_data_dir_with_wrong_md5(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, archive_md5='f' * 32, file_md5=fixture['file_md5'])
    msg = str(e.value)
    assert str(tmp_path / 'cifar-100-python.tar.gz') in msg and 'f' * 32 in msg
    assert 'delete it' in msg and 'by hand' in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']  # nothing extracted


@pytest.mark.parametrize('damage', ['truncate', 'garble'])
def test_corrupted_archive(fixture, tmp_path, damage):
    blob = bytearray(fixture['archive'].read_bytes())
    if damage == 'truncate':
        blob = blob[:len(blob) // 2]
    else:
        blob[len(blob) // 2:len(blob) // 2 + 4096] = bytes(4096)
    archive = tmp_path / 'cifar-100-python.tar.gz'
    archive.write_bytes(bytes(blob))
    # Official checksum: refused before extracting.
    with pytest.raises(DataError, match='has md5'):
        data.load_cifar100(tmp_path, file_md5=fixture['file_md5'])
    # Checksum of the damaged file itself: extraction fails, and says so.
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, archive_md5=hashlib.md5(blob).hexdigest(),
                           file_md5=fixture['file_md5'])
    msg = str(e.value)
    assert str(archive) in msg and 'cannot be extracted' in msg and 'delete' in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']  # no half-extracted folder


def test_archive_that_is_not_cifar(tmp_path):
    md5 = cf.pack_archive(tmp_path / 'cifar-100-python.tar.gz', {'readme.txt': b'hello'},
                          folder='something-else')
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, archive_md5=md5)
    msg = str(e.value)
    assert 'does not contain cifar-100-python/train, cifar-100-python/test' in msg
    assert 'not the CIFAR-100 python archive' in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']


def test_pickle_md5_checked_before_the_folder_is_trusted(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, archive_md5=fixture['archive_md5'],
                           file_md5={'train': fixture['file_md5']['train'], 'test': 'a' * 32})
    msg = str(e.value)
    assert f"cifar-100-python/test in {tmp_path / 'cifar-100-python.tar.gz'}" in msg
    assert fixture['file_md5']['test'] in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']  # not renamed into place


def test_truncated_pickle(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    data.load_cifar100(tmp_path, **md5s(fixture))
    train = tmp_path / 'cifar-100-python' / 'train'
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, **md5s(fixture))
    msg = str(e.value)
    assert f'{train} has md5' in msg and 'delete' in msg
    # Even when its checksum is what was asked for, the damage is reported.
    sums = dict(fixture['file_md5'], train=data.md5_of(train))
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, archive_md5=fixture['archive_md5'], file_md5=sums)
    msg = str(e.value)
    assert f'{train} is not a readable CIFAR-100 pickle' in msg and 'delete' in msg


def test_deleting_bad_pickles_as_advised_recovers(fixture, tmp_path):
    # The error advises deleting train and test; the folder keeps the archive's
    # other files (meta), and the next run extracts the pickles into it.
    shutil.copy(fixture['archive'], tmp_path)
    first = data.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
    folder = tmp_path / 'cifar-100-python'
    (folder / 'train').write_bytes(b'damaged')
    with pytest.raises(DataError, match='delete'):
        data.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
    (folder / 'train').unlink()
    (folder / 'test').unlink()
    assert listing(folder) == ['meta']
    again = data.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert listing(folder) == ['meta', 'test', 'train']
    assert listing(tmp_path) == ['cifar-100-python', 'cifar-100-python.tar.gz']


def _drop_labels(d):
    del d['fine_labels']


def _float_data(d):
    d['data'] = d['data'].astype(np.float32)


def _short_rows(d):
    d['data'] = d['data'][:, :1024]


def _label_100(d):
    d['fine_labels'][3] = 100


def _negative_label(d):
    d['fine_labels'][0] = -1


def _fewer_labels(d):
    d['fine_labels'] = d['fine_labels'][:-1]


@pytest.mark.parametrize('damage, message', [
    (_drop_labels, "no 'fine_labels' key"),
    (_float_data, "'data' is float32 [6, 3072], expected uint8 [n, 3072]"),
    (_short_rows, "'data' is uint8 [6, 1024], expected uint8 [n, 3072]"),
    (_label_100, "'fine_labels' range from 0 to 100, expected 0..99"),
    (_negative_label, "'fine_labels' range from -1 to"),
    (_fewer_labels, "'fine_labels' is int64 [5], expected 6 integers"),
])
def test_malformed_pickles(tmp_path, damage, message):
    train = cf.fixture_split(6, 3, 0, 'train')
    train['fine_labels'][0] = 0
    damage(train)
    sums = write_pickles(tmp_path, train, cf.fixture_split(4, 3, 0, 'test'))
    with pytest.raises(DataError) as e:
        data.load_cifar100(tmp_path, file_md5=sums, download=False)
    msg = str(e.value)
    assert message in msg
    assert str(tmp_path / 'train') in msg and 'delete' in msg


def test_pickle_that_is_not_a_dict(tmp_path):
    sums = write_pickles(tmp_path, [1, 2, 3], cf.fixture_split(4, 3, 0, 'test'))
    with pytest.raises(DataError, match='holds a list, expected a dict'):
        data.load_cifar100(tmp_path, file_md5=sums, download=False)


# ------------------------------------------------------------------ fixture

def test_fixture_is_deterministic_and_in_cifar_format(fixture, tmp_path):
    again = cf.write_cifar100_archive(tmp_path)
    assert again['archive_md5'] == fixture['archive_md5']
    assert again['file_md5'] == fixture['file_md5']
    with tarfile.open(fixture['archive']) as tar:
        assert sorted(tar.getnames()) == ['cifar-100-python', 'cifar-100-python/meta',
                                          'cifar-100-python/test', 'cifar-100-python/train']
        blob = tar.extractfile('cifar-100-python/train').read()
        meta = pickle.loads(tar.extractfile('cifar-100-python/meta').read(), encoding='latin1')
    assert blob[:2] == b'\x80\x02'  # protocol 2
    d = pickle.loads(blob, encoding='latin1')
    assert sorted(d) == ['batch_label', 'coarse_labels', 'data', 'filenames', 'fine_labels']
    assert d['data'].dtype == np.uint8 and d['data'].shape == (500, 3072)
    assert len(d['filenames']) == 500 and len(d['coarse_labels']) == 500
    assert len(meta['fine_label_names']) == 100 and len(meta['coarse_label_names']) == 20


def test_fixture_classes_are_learnable(loaded):
    tx, ty, sx, sy = loaded
    means = np.stack([tx[ty == c].reshape(-1, 3072).mean(0) for c in range(10)])
    dist = ((sx.reshape(len(sx), 1, -1).astype(np.float64) - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == sy).mean() > 0.9  # nearest class mean, 10% is chance


# ------------------------------------------------------------------ augmentation

def test_symmetric_padding_repeats_the_edge():
    assert pipeline._source_index(6).tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 5, 4, 3, 2]
    cols = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, None, :, None], (1, 32, 32, 1))
    z, e = np.zeros(1, int), np.full(1, 8)
    f, t = np.zeros(1, bool), np.ones(1, bool)
    left_edge = [3, 2, 1, 0] + list(range(28))
    right_edge = list(range(4, 32)) + [31, 30, 29, 28]
    assert pipeline.crop_flip(cols, z, z, f)[0, 0, :, 0].tolist() == left_edge
    assert pipeline.crop_flip(cols, z, e, f)[0, 0, :, 0].tolist() == right_edge
    assert pipeline.crop_flip(cols, z, z, t)[0, 0, :, 0].tolist() == left_edge[::-1]
    rows = cols.transpose(0, 2, 1, 3)
    assert pipeline.crop_flip(rows, e, z, t)[0, :, 0, 0].tolist() == right_edge  # flip is left-right only


def test_augmented_images_are_windows_of_the_padded_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    out = pipeline.augment_batch(images, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode='symmetric')
    for i in range(len(images)):
        windows = [(top, left, flip) for top in range(9) for left in range(9) for flip in (0, 1)
                   if np.array_equal(out[i], (lambda w: w[:, ::-1] if flip else w)(
                       padded[i, top:top + 32, left:left + 32]))]
        assert len(windows) == 1, (i, windows)


def test_flip_and_offset_frequencies():
    n = 18000
    ramp = np.arange(32, dtype=np.uint8)
    image = np.stack([np.broadcast_to(ramp[None, :], (32, 32)),      # channel 0: column
                      np.broadcast_to(ramp[:, None], (32, 32)),      # channel 1: row
                      np.zeros((32, 32), np.uint8)], -1)
    out = pipeline.augment_batch(np.broadcast_to(image, (n, 32, 32, 3)).copy(),
                             np.random.default_rng(7)).astype(int)
    flipped = out[:, 0, 16, 0] < out[:, 0, 15, 0]
    # Binomial(n, 1/2): sd = 67; 5 sd bound.
    assert abs(flipped.sum() - n / 2) < 5 * np.sqrt(n) / 2
    left = np.where(flipped, out[:, 0, 15, 0] - 12, out[:, 0, 15, 0] - 11)
    top = out[:, 15, 0, 1] - 11
    sd = np.sqrt(n * (1 / 9) * (8 / 9))
    for offsets in (left, top):
        counts = np.bincount(offsets, minlength=9)
        assert len(counts) == 9  # offsets 0..8 only
        assert np.all(np.abs(counts - n / 9) < 5 * sd), counts
    # The crop matches the decoded offsets exactly.
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='symmetric')
    for i in range(20):
        w = padded[top[i]:top[i] + 32, left[i]:left[i] + 32]
        assert np.array_equal(out[i], w[:, ::-1] if flipped[i] else w)


def test_test_batches_are_in_order_and_untouched():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (250, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, 250).astype(np.int64)
    before = images.copy()
    batches = list(pipeline.test_batches(images, labels))
    assert [len(x) for x, _ in batches] == [100, 100, 50]
    assert np.array_equal(np.concatenate([x for x, _ in batches]), before)
    assert np.array_equal(np.concatenate([y for _, y in batches]), labels)
    assert np.array_equal(images, before)
    assert [len(x) for x, _ in pipeline.test_batches(images[:200], labels[:200])] == [100, 100]


# ------------------------------------------------------------------ training order

def test_batches_per_epoch():
    assert pipeline.batches_per_epoch(50000, 128) == 390
    assert pipeline.batches_per_epoch(500, 128) == 3
    assert pipeline.batches_per_epoch(512, 128) == 4
    with pytest.raises(ValueError, match='does not fit'):
        pipeline.batches_per_epoch(100, 128)


def test_an_epoch_visits_each_kept_image_once(loaded):
    images, labels = loaded[0], loaded[1]
    n, bs = len(images), 128
    per_epoch = pipeline.batches_per_epoch(n, bs)
    ids = np.arange(n, dtype=np.int64)  # labels that name the image
    seen = []
    for epoch in range(2):
        batch_ids = [pipeline.train_batch(images, ids, 345, epoch * per_epoch + s, bs)[1]
                     for s in range(per_epoch)]
        visited = np.concatenate(batch_ids)
        assert len(visited) == per_epoch * bs == 384
        assert len(set(visited.tolist())) == 384  # no image twice
        assert n - len(set(visited.tolist())) == n % bs == 116  # the left-out ones
        seen.append(visited)
    assert not np.array_equal(seen[0], seen[1])  # reshuffled
    assert set(seen[0].tolist()) != set(seen[1].tolist())  # other images left out
    # With the real labels, the same images come with their own labels.
    x, y = pipeline.train_batch(images, labels, 345, 4, bs)
    x_ids, y_ids = pipeline.train_batch(images, ids, 345, 4, bs)
    assert np.array_equal(x, x_ids) and np.array_equal(y, labels[y_ids])
    assert x.shape == (bs, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    padded = np.pad(images[y_ids[0]], ((4, 4), (4, 4), (0, 0)), mode='symmetric')
    assert any(np.array_equal(x[0], w) or np.array_equal(x[0], w[:, ::-1])
               for w in (padded[t:t + 32, l:l + 32] for t in range(9) for l in range(9)))


def test_a_cifar_sized_epoch_is_390_batches_of_distinct_images():
    # 50,000 images (one stored image, broadcast; the labels name the image):
    # 390 batches of 128 cover 49,920 distinct images, and the next epoch is
    # reshuffled and leaves out other ones.
    n = 50000
    images = np.broadcast_to(np.zeros((1, 32, 32, 3), np.uint8), (n, 32, 32, 3))
    ids = np.arange(n, dtype=np.int64)
    per_epoch = pipeline.batches_per_epoch(n, 128)
    assert per_epoch == 390
    epochs = [np.concatenate([pipeline.train_batch(images, ids, 345, e * per_epoch + s)[1]
                              for s in range(per_epoch)]) for e in range(2)]
    for visited in epochs:
        assert len(visited) == len(np.unique(visited)) == 390 * 128
    assert not np.array_equal(epochs[0], epochs[1])
    assert set(np.setdiff1d(ids, epochs[0])) != set(np.setdiff1d(ids, epochs[1]))


def test_batch_is_a_function_of_seed_and_iteration(loaded):
    images, labels = loaded[0], loaded[1]
    a = pipeline.train_batch(images, labels, 345, 10, 64)
    b = pipeline.train_batch(images, labels, 345, 10, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], pipeline.train_batch(images, labels, 345, 11, 64)[0])
    assert not np.array_equal(a[0], pipeline.train_batch(images, labels, 346, 10, 64)[0])
    # Identical images: only the augmentation can differ, and it must, in every epoch.
    same = np.broadcast_to(images[:1], (256, 32, 32, 3))
    x0 = pipeline.train_batch(same, labels[:256], 345, 0, 128)[0]
    for it in (1, 2, 3):
        assert not np.array_equal(x0, pipeline.train_batch(same, labels[:256], 345, it, 128)[0])


# ------------------------------------------------------------------ prefetcher

@pytest.mark.parametrize('start', [0, 5])
def test_prefetcher_yields_the_same_batches(loaded, start):
    images, labels = loaded[0], loaded[1]
    with pipeline.TrainBatchPrefetcher(images, labels, 345, 100, start_iter=start) as batches:
        for it in range(start, start + 12):  # crosses epoch boundaries (5 batches per epoch)
            x, y = next(batches)
            ex, ey = pipeline.train_batch(images, labels, 345, it, 100)
            assert np.array_equal(x, ex) and np.array_equal(y, ey)
    assert not batches._thread.is_alive()
    with pytest.raises(StopIteration):
        next(batches)


def test_prefetcher_close_joins_a_blocked_thread(loaded):
    p = pipeline.TrainBatchPrefetcher(loaded[0], loaded[1], 1, 32, depth=2)
    next(p)
    p.close()  # the thread was blocked on the full queue
    assert not p._thread.is_alive()
    assert not any(t.name == 'TrainBatchPrefetcher' and t is p._thread
                   for t in threading.enumerate())


def test_prefetcher_propagates_exceptions(loaded):
    images = loaded[0]
    short_labels = np.arange(400, dtype=np.int64)  # indices 400..499 do not exist
    got = 0
    with pytest.raises(IndexError):
        with pipeline.TrainBatchPrefetcher(images, short_labels, 345, 64) as batches:
            for it in range(100):
                x, _ = next(batches)
                assert np.array_equal(x, pipeline.train_batch(images, np.arange(500), 345, it, 64)[0])
                got += 1
    assert got < 10
    with pipeline.TrainBatchPrefetcher(images, loaded[1], 345, 1000) as batches:
        with pytest.raises(ValueError, match='does not fit'):
            next(batches)
        assert not batches._thread.is_alive()


def test_data_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(DataError, match='cannot create the data folder .*pass --data_dir'):
        data.load_cifar100(blocker / 'data', urls=(closed_port_url(),))
