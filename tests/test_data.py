"""Tests of common/data/cifar.py on common/data/cifar_fixture.py's archive: finding, downloading (file:// and
closed-port URLs only, never off the machine), verifying and loading CIFAR-100, and its errors."""
import hashlib
import pickle
import shutil
import socket
import tarfile

import numpy as np
import pytest

from common.data import cifar_fixture as cf
from common.data import cifar
from common.data.cifar import DataError
from conftest import md5s


# ------------------------------------------------------------------ helpers

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
    tx, ty, sx, sy = cifar.load_cifar100(tmp_path, download=False, **md5s(fixture))
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
    again = cifar.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
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
    tx = cifar.load_cifar100(tmp_path, file_md5=sums, download=False)[0]
    assert tx[1, 0, 0, 0] == 0
    assert tx[1, 0, 1, 0] == 1          # next column, same row, red
    assert tx[1, 1, 0, 0] == 32         # next row
    assert tx[1, 0, 0, 1] == 1024 % 251  # green plane starts at 1024
    assert tx[1, 2, 3, 2] == (2048 + 2 * 32 + 3) % 251


def test_original_release_layout_is_found(fixture, loaded, tmp_path):
    with tarfile.open(fixture['archive']) as tar:
        for split in ('train', 'test'):
            (tmp_path / split).write_bytes(tar.extractfile(f'cifar-100-python/{split}').read())
    got = cifar.load_cifar100(tmp_path, download=False, **md5s(fixture))
    for a, b in zip(got, loaded):
        assert np.array_equal(a, b)
    assert listing(tmp_path) == ['test', 'train']  # used in place, nothing extracted


def test_default_data_dir_is_data_at_repo_root():
    from common import REPO_ROOT
    assert cifar.default_data_dir() == REPO_ROOT / 'data'


def test_not_found_without_download(tmp_path):
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path / 'nothing', download=False)
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
        cifar.load_cifar100(tmp_path, **md5s(fixture))
    assert 'delete' in str(e.value) and str(tmp_path / 'cifar-100-python' / 'train') in str(e.value)


# ------------------------------------------------------------------ downloading

def test_download_tries_the_next_url(fixture, loaded, tmp_path, capsys):
    dest = tmp_path / 'new' / 'data'
    urls = (closed_port_url(), fixture['archive'].as_uri())
    got = cifar.load_cifar100(dest, urls=urls, **md5s(fixture))
    for a, b in zip(got, loaded):
        assert np.array_equal(a, b)
    assert listing(dest) == ['cifar-100-python', 'cifar-100-python.tar.gz']
    assert cifar.md5_of(dest / 'cifar-100-python.tar.gz') == fixture['archive_md5']
    assert '100%' in capsys.readouterr().err  # the progress text


def test_no_network(tmp_path):
    url = closed_port_url()
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, urls=(url, url.replace('http:', 'https:')))
    msg = str(e.value)
    assert 'could not be downloaded' in msg and url in msg
    assert 'by hand' in msg and str(tmp_path) in msg and 'cifar-100-python.tar.gz' in msg
    assert msg.endswith('`python -m common.cifar_fixture data/fixture`, from the repository root, writes '
                        'a tiny stand-in and prints the flags that train on it')   # offline and only trying the code
    assert listing(tmp_path) == []  # no partial download left


def test_download_with_wrong_md5_leaves_nothing(fixture, tmp_path):
    url = fixture['archive'].as_uri()
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, urls=(url,), archive_md5='0' * 32,
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
        cifar.load_cifar100(dest, urls=(short.as_uri(),), **md5s(fixture))
    assert short.as_uri() in str(e.value)
    assert listing(dest) == []


def test_data_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(DataError, match='cannot create the data folder .*pass --data_dir'):
        cifar.load_cifar100(blocker / 'data', urls=(closed_port_url(),))


# ------------------------------------------------------------------ bad archives and pickles

def test_archive_in_data_dir_with_wrong_md5(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, archive_md5='f' * 32, file_md5=fixture['file_md5'])
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
    # Official checksum: refused before extracting, with the flag that accepts it on purpose.
    with pytest.raises(DataError, match='has md5') as e:
        cifar.load_cifar100(tmp_path, file_md5=fixture['file_md5'])
    assert str(e.value).endswith(f'accepted with --data_md5 archive={hashlib.md5(blob).hexdigest()}')
    # Checksum of the damaged file itself: extraction fails, and says so.
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, archive_md5=hashlib.md5(blob).hexdigest(),
                           file_md5=fixture['file_md5'])
    msg = str(e.value)
    assert str(archive) in msg and 'cannot be extracted' in msg and 'delete' in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']  # no half-extracted folder


def test_archive_that_is_not_cifar(tmp_path):
    md5 = cf.pack_archive(tmp_path / 'cifar-100-python.tar.gz', {'readme.txt': b'hello'},
                          folder='something-else')
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, archive_md5=md5)
    msg = str(e.value)
    assert 'does not contain cifar-100-python/train, cifar-100-python/test' in msg
    assert 'not the CIFAR-100 python archive' in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']


def test_pickle_md5_checked_before_the_folder_is_trusted(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, archive_md5=fixture['archive_md5'],
                           file_md5={'train': fixture['file_md5']['train'], 'test': 'a' * 32})
    msg = str(e.value)
    assert f"cifar-100-python/test in {tmp_path / 'cifar-100-python.tar.gz'}" in msg
    assert f"--data_md5 test={fixture['file_md5']['test']}" in msg
    assert listing(tmp_path) == ['cifar-100-python.tar.gz']  # not renamed into place


def test_truncated_pickle(fixture, tmp_path):
    shutil.copy(fixture['archive'], tmp_path)
    cifar.load_cifar100(tmp_path, **md5s(fixture))
    train = tmp_path / 'cifar-100-python' / 'train'
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, **md5s(fixture))
    msg = str(e.value)
    assert f'{train} has md5' in msg and 'delete' in msg and f'--data_md5 train={cifar.md5_of(train)}' in msg
    # Even when its checksum is what was asked for, the damage is reported.
    sums = dict(fixture['file_md5'], train=cifar.md5_of(train))
    with pytest.raises(DataError) as e:
        cifar.load_cifar100(tmp_path, archive_md5=fixture['archive_md5'], file_md5=sums)
    msg = str(e.value)
    assert f'{train} is not a readable CIFAR-100 pickle' in msg and 'delete' in msg


def test_deleting_bad_pickles_as_advised_recovers(fixture, tmp_path):
    # The error advises deleting train and test; the folder keeps the archive's
    # other files (meta), and the next run extracts the pickles into it.
    shutil.copy(fixture['archive'], tmp_path)
    first = cifar.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
    folder = tmp_path / 'cifar-100-python'
    (folder / 'train').write_bytes(b'damaged')
    with pytest.raises(DataError, match='delete'):
        cifar.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
    (folder / 'train').unlink()
    (folder / 'test').unlink()
    assert listing(folder) == ['meta']
    again = cifar.load_cifar100(tmp_path, urls=(closed_port_url(),), **md5s(fixture))
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
        cifar.load_cifar100(tmp_path, file_md5=sums, download=False)
    msg = str(e.value)
    assert message in msg
    assert str(tmp_path / 'train') in msg and 'delete' in msg


def test_pickle_that_is_not_a_dict(tmp_path):
    sums = write_pickles(tmp_path, [1, 2, 3], cf.fixture_split(4, 3, 0, 'test'))
    with pytest.raises(DataError, match='holds a list, expected a dict'):
        cifar.load_cifar100(tmp_path, file_md5=sums, download=False)


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


def test_fixture_command_prints_the_flags_that_load_it(tmp_path, capsys):
    cf.main([str(tmp_path / 'fx'), '--n_train', '40', '--n_test', '20', '--n_classes', '5'])
    out = capsys.readouterr().out
    assert '40 training and 20 test images, 5 classes' in out
    flags = out.split('\n')[1].split()
    assert flags[:2] == ['--data_dir', str((tmp_path / 'fx').resolve())] and flags[2] == '--data_md5'
    sums = cifar.parse_md5_flag(flags[3])
    assert set(sums) == {'train', 'test', 'archive'}
    images, labels, test_images, test_labels = cifar.load_cifar100(
        flags[1], archive_md5=sums['archive'], file_md5=sums, download=False)
    assert images.shape == (40, 32, 32, 3) and test_images.shape == (20, 32, 32, 3)
    assert set(labels) <= set(range(5)) and len(set(test_labels)) > 1
    with pytest.raises(SystemExit):
        cf.main([str(tmp_path / 'bad'), '--n_classes', '101'])
    assert 'n_classes 1 to 100' in capsys.readouterr().err
    # The same command again, the archive extracted by the load above: found, the same flags.
    assert (tmp_path / 'fx' / 'cifar-100-python' / 'train').is_file()
    cf.main([str(tmp_path / 'fx'), '--n_train', '40', '--n_test', '20', '--n_classes', '5'])
    again = capsys.readouterr().out
    assert again.startswith('found ') and again.split('\n')[1] == out.split('\n')[1]
    train = tmp_path / 'fx' / 'cifar-100-python' / 'train'
    train.write_bytes(train.read_bytes()[:100])   # the extracted copy is not this fixture's any more
    with pytest.raises(SystemExit):
        cf.main([str(tmp_path / 'fx'), '--n_train', '40', '--n_test', '20', '--n_classes', '5'])
    assert 'already holds cifar-100-python.tar.gz, not this fixture' in capsys.readouterr().err
    # Anything else there (CIFAR-100 itself, another fixture) is left alone.
    before = (tmp_path / 'fx' / 'cifar-100-python.tar.gz').read_bytes()
    with pytest.raises(SystemExit):
        cf.main([str(tmp_path / 'fx')])
    assert f"{tmp_path / 'fx'} already holds cifar-100-python.tar.gz, not this fixture; give a new or " \
           f"empty folder" in capsys.readouterr().err
    assert (tmp_path / 'fx' / 'cifar-100-python.tar.gz').read_bytes() == before


def test_the_readme_command_writes_the_fixture(tmp_path):
    # `python -m common.cifar_fixture DIR`, as the README and the sweep files say it.
    import subprocess
    import sys

    from conftest import ROOT
    out = subprocess.run([sys.executable, '-m', 'common.cifar_fixture', str(tmp_path / 'fixture'),
                          '--n_train', '20', '--n_test', '10'], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    info = cf.write_cifar100_archive(tmp_path / 'direct', 20, 10)
    assert f"--data_md5 {info['data_md5']}" in out.stdout
    assert cifar.md5_of(tmp_path / 'fixture' / 'cifar-100-python.tar.gz') == info['archive_md5']
