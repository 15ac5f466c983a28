"""Tests of common/data/pipeline.py: the augmentation (symmetric padding, crop and flip), the
test batches, the epoch order of train_batch, and the TrainBatchPrefetcher."""
import threading

import numpy as np
import pytest

from common.data import pipeline


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
               for w in (padded[t:t + 32, c:c + 32] for t in range(9) for c in range(9)))


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
