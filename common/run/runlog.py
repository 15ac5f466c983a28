"""The training-log format of docs/protocol.md section 6: the one place that writes and reads it.

A run lives in a configuration folder (``pd40_pn20``, ``pd30_pn1_iter1``, ...)
holding pairs ``log_train_NN.txt`` / ``log_test_NN.txt``, NN a two-digit index;
each start of a training script takes the first unused index, so nothing is
ever overwritten. Lines::

    ====iter_100: fit=9.1382, reg=1.2104, thom=5.0373, thomf=4.9677, acc=0.0156
    ====iter_100: fit=9.1382, reg=1.2358, acc=0.0078          (no energy terms)
    ++++iter_500: test acc=0.0898
    ++++iter_42499: test acc=0.6974 imclass acc=0.0880     (the MHE release)

Writer: ``format_train_line``, ``format_test_line``, ``log_paths``,
``next_log_index``, ``latest_log_index``.

Reader: ``read_train_log``, ``read_test_log``, ``read_run`` -> ``Run``; every
problem (missing path, empty file, binary file, a line that is not a log line)
raises ``LogError`` naming the file (and line). Rules:

* Each line must match the format exactly (blank lines and a trailing ``\\r``
  are ignored). The one exception is the last line of a file that does not end
  in a newline: that is what a running or killed writer leaves behind. It is
  kept if it is complete (it parses and its last number has the four decimals
  the format always writes), otherwise dropped; it must still start like a log
  line, or it is garbage.
* ``read_run`` on a folder reads *all* its indices in index order and merges
  them with "later records win": a log (or, inside one file, a line) whose
  iteration is not past what was read so far supersedes everything from that
  iteration on. So a run resumed into a new index from a checkpoint at
  iteration k reads as indices 00 up to k and the new log after it; a fresh
  restart (a new index starting at iteration 0) replaces the earlier attempt;
  lines re-written after a resume into the same file replace the old ones.
  The indices used are in ``Run.indices``.
* ``read_run`` on a ``log_train_NN.txt`` or ``log_test_NN.txt`` file reads
  that index only, with its sibling of the same index. The named file must
  hold log lines; the sibling may be missing or empty (a run younger than its
  first evaluation has no test lines yet). A run with no lines at all is an
  error.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_INDEX = 99
TRAIN_MARK = '====iter_'
TEST_MARK = '++++iter_'
LOG_NAME = re.compile(r'^log_(train|test)_(\d{2})\.txt$')

_NUM = r'[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)'
_TRAIN_RE = re.compile(
    r'^====iter_(\d+):\s*fit=(%s),\s*reg=(%s),(?:\s*thom=(%s),\s*thomf=(%s),)?\s*acc=(%s)$'
    % ((_NUM,) * 5))
_TEST_RE = re.compile(r'^\+\+\+\+iter_(\d+):\s*test acc=(%s)(?:\s+imclass acc=(%s))?$' % (_NUM, _NUM))
_COMPLETE_END = re.compile(r'\.\d{4}$')


class LogError(Exception):
    """A log file or run folder that cannot be read; the message names it and the problem."""


# --------------------------------------------------------------------------- writer

def _f4(x):
    return f'{float(x):.4f}'


def format_train_line(iteration, fit, reg, acc, thom=None, thomf=None):
    """One train log line (no newline), numbers with 4 decimals.

    Without ``thom``/``thomf`` (a model with no energy term) the shorter
    format of the MHE baseline is written."""
    if (thom is None) != (thomf is None):
        raise ValueError('give both thom and thomf, or neither')
    parts = [f'fit={_f4(fit)}', f'reg={_f4(reg)}']
    if thom is not None:
        parts += [f'thom={_f4(thom)}', f'thomf={_f4(thomf)}']
    parts.append(f'acc={_f4(acc)}')
    return f'{TRAIN_MARK}{int(iteration)}: ' + ', '.join(parts)


def format_test_line(iteration, acc):
    """One test log line (no newline): ``++++iter_500: test acc=0.0898``."""
    return f'{TEST_MARK}{int(iteration)}: test acc={_f4(acc)}'


def log_paths(run_dir, index):
    """(train_path, test_path) of log index ``index`` (0..99) in ``run_dir``."""
    index = int(index)
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f'log index must be 0..{MAX_INDEX}, got {index}')
    run_dir = Path(run_dir)
    return run_dir / f'log_train_{index:02d}.txt', run_dir / f'log_test_{index:02d}.txt'


def _indices_present(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return set()
    found = set()
    for p in run_dir.iterdir():
        m = LOG_NAME.match(p.name)
        if m and p.is_file():
            found.add(int(m.group(2)))
    return found


def next_log_index(run_dir):
    """The first index NN such that neither log_train_NN.txt nor log_test_NN.txt exists."""
    used = _indices_present(run_dir)
    for index in range(MAX_INDEX + 1):
        if index not in used:
            return index
    raise FileExistsError(f'{run_dir}: all log indices 00..{MAX_INDEX} are used; '
                          'move old logs away or use another --log_dir')


def latest_log_index(run_dir):
    """The highest index present in ``run_dir`` (train or test file), or None."""
    used = _indices_present(run_dir)
    return max(used) if used else None


# --------------------------------------------------------------------------- reader

@dataclass
class Run:
    """One run's logs. ``train``: dicts iter, fit, reg, thom, thomf, acc (thom and
    thomf None in the short format); ``test``: (iter, acc) tuples; both sorted by
    iteration. ``indices``: the log indices read."""
    name: str
    path: Path
    train: list = field(default_factory=list)
    test: list = field(default_factory=list)
    indices: list = field(default_factory=list)

    @property
    def last_iter(self):
        """The last iteration logged (train or test), None if nothing is."""
        iters = [r['iter'] for r in self.train[-1:]] + [t[0] for t in self.test[-1:]]
        return max(iters) if iters else None

    @property
    def final_test_acc(self):
        return self.test[-1][1] if self.test else None

    @property
    def best_test_acc(self):
        return max(acc for _, acc in self.test) if self.test else None

    @property
    def best_test_iter(self):
        """Iteration of the best test accuracy (the earliest, if it is reached more than once)."""
        if not self.test:
            return None
        best = self.best_test_acc
        return next(it for it, acc in self.test if acc == best)

    @property
    def final_fit(self):
        return self.train[-1]['fit'] if self.train else None


def _read_text(path, allow_empty=False):
    """The file's lines; LogError for a missing, unreadable, binary or (unless allowed) empty file.
    Returns (lines, ends_with_newline)."""
    path = Path(path)
    if not path.exists():
        raise LogError(f'{path}: no such file')
    if path.is_dir():
        raise LogError(f'{path}: is a folder, not a log file')
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LogError(f'{path}: cannot read: {e.strerror or e}') from None
    if b'\0' in data:
        raise LogError(f'{path}: binary data, not a text log')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise LogError(f'{path}: not a text file (not UTF-8)') from None
    if not text.strip() and not allow_empty:
        raise LogError(f'{path}: empty file, no log lines')
    return text.split('\n'), text.endswith('\n')


def _parse(path, kind, allow_empty=False):
    """Parse a train or test log into records in file order."""
    regex, mark = (_TRAIN_RE, TRAIN_MARK) if kind == 'train' else (_TEST_RE, TEST_MARK)
    other_regex = _TEST_RE if kind == 'train' else _TRAIN_RE
    lines, newline_end = _read_text(path, allow_empty)
    if newline_end:
        lines = lines[:-1]  # '' after the final newline
    last = len(lines) - 1
    records = []
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        m = regex.match(line)
        if i == last and not newline_end:
            # A line still being written: keep only if complete, drop a cut-off one.
            if m and _COMPLETE_END.search(line):
                records.append(_record(kind, m))
            elif not (line.startswith(mark) or mark.startswith(line)):
                raise LogError(f'{path}, line {i + 1}: not a {kind} log line: {_show(line)}')
            continue
        if m is None:
            hint = ''
            if other_regex.match(line):
                hint = f' (it is a {"test" if kind == "train" else "train"} log line)'
            raise LogError(f'{path}, line {i + 1}: not a {kind} log line{hint}: {_show(line)}')
        records.append(_record(kind, m))
    if not records and not allow_empty:
        raise LogError(f'{path}: no complete {kind} log lines')
    return records


def _show(line, width=80):
    return repr(line if len(line) <= width else line[:width] + '...')


def _record(kind, m):
    if kind == 'train':
        it, fit, reg, thom, thomf, acc = m.groups()
        return dict(iter=int(it), fit=float(fit), reg=float(reg),
                    thom=None if thom is None else float(thom),
                    thomf=None if thomf is None else float(thomf), acc=float(acc))
    return (int(m.group(1)), float(m.group(2)))


def read_train_log(path):
    """The records of a train log, in file order: dicts iter, fit, reg, thom, thomf, acc."""
    return _parse(path, 'train')


def read_test_log(path):
    """The records of a test log, in file order: (iter, acc) tuples (an ``imclass acc`` is ignored)."""
    return _parse(path, 'test')


def _iter_of(record):
    return record['iter'] if isinstance(record, dict) else record[0]


def _supersede(kept, new):
    """Append ``new`` records to ``kept``; a record whose iteration is not past the last kept
    one replaces every kept record from its iteration on."""
    for rec in new:
        it = _iter_of(rec)
        if kept and _iter_of(kept[-1]) >= it:
            kept = [r for r in kept if _iter_of(r) < it]
        kept.append(rec)
    return kept


def find_runs(path):
    """Run folders (folders directly holding log files) at or below ``path``, sorted."""
    path = Path(path)
    if not path.is_dir():
        return []
    dirs = {p.parent for p in path.rglob('log_*_??.txt') if LOG_NAME.match(p.name) and p.is_file()}
    return sorted(dirs)


def read_run(path, name=None):
    """Read a run from its configuration folder (all indices merged, see the module
    docstring) or from one log_train_NN.txt / log_test_NN.txt file (that index only)."""
    path = Path(path)
    if not path.exists():
        raise LogError(f'{path}: no such file or folder')
    if path.is_dir():
        run_dir = path
        indices = sorted(_indices_present(path))
        if not indices:
            below = find_runs(path)
            hint = ''
            if below:
                hint = (f'; it has {len(below)} run folder(s) below it, e.g. '
                        f'{below[0].relative_to(path)}')
            raise LogError(f'{path}: no log_train_NN.txt / log_test_NN.txt files in this folder{hint}')
        named = None
    else:
        m = LOG_NAME.match(path.name)
        if m is None:
            # Not a standard name: still check the content, for a clear message on garbage.
            _read_text(path)
            raise LogError(f'{path}: not a log file name; expected a run folder or '
                           'log_train_NN.txt / log_test_NN.txt')
        run_dir = path.parent
        indices = [int(m.group(2))]
        named = path
    train, test = [], []
    for index in indices:
        train_path, test_path = log_paths(run_dir, index)
        seg_train = _parse_optional(train_path, 'train', strict=named == train_path)
        seg_test = _parse_optional(test_path, 'test', strict=named == test_path)
        seg_train, seg_test = _supersede([], seg_train), _supersede([], seg_test)
        firsts = [_iter_of(s[0]) for s in (seg_train, seg_test) if s]
        if firsts:
            cut = min(firsts)
            train = [r for r in train if r['iter'] < cut] + seg_train
            test = [t for t in test if t[0] < cut] + seg_test
    if not train and not test:
        names = ', '.join(f'log_{k}_{i:02d}.txt' for i in indices for k in ('train', 'test'))
        raise LogError(f'{run_dir}: no log lines in {names} (empty; has the run just started?)')
    if name is None:
        name = run_name(run_dir) if named is None else f'{run_name(run_dir)} [{indices[0]:02d}]'
    return Run(name=name, path=path, train=train, test=test, indices=indices)


def _parse_optional(path, kind, strict):
    """Parse a log of a run; a missing or empty one is allowed unless it is the file named."""
    if not strict and not path.exists():
        return []
    return _parse(path, kind, allow_empty=not strict)


_ROOT_NAMES = {'logs', 'log', 'reference_logs', 'authors', 'runs'}   # authors: logs/authors/


def run_name(run_dir, depth=3):
    """A short readable name: the last ``depth`` components of the run folder, stopping
    below a logs folder (``logs/random_projection/pd40_pn20`` -> ``random_projection/pd40_pn20``,
    ``reference_logs/comhe/random_projection/pd40_pn20`` -> ``comhe/random_projection/pd40_pn20``)."""
    parts = Path(run_dir).resolve().parts
    kept = []
    for part in reversed(parts[1:]):
        if len(kept) >= depth or (kept and part.lower() in _ROOT_NAMES):
            break
        kept.append(part)
    return '/'.join(reversed(kept)) or str(run_dir)
