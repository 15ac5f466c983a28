"""The input pipeline (docs/protocol.md section 5): the training and test batches.

The training batches (reshuffled each epoch, symmetric pad 4, random 32x32 crop,
random left-right flip) are a pure function of (seed, iteration), so that a resumed
run gets the very batches it would have had; a background prefetcher makes them
ahead of the training step. The test batches come in order, unaugmented.
"""
import queue
import threading

import numpy as np

PAD = 4
# Test images per device call, both engines (the protocol's 100 give the same accuracy: at
# test time an image's logits do not depend on its batch).
EVAL_BATCH = 1000


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
    the same arrays bit for bit, many times faster than ``train_batch`` (bench/feed.py
    measures both: bench/results/feed.md).

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
