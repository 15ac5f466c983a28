"""A sweep file (TOML, read with the standard library): what to run, checked before anything starts.

    name = "paper"                  # the sweep's folder: <log root>/paper (default: the file's stem)
    seeds = [345, 346, 347]         # --random_seed of each run (a [[run]] may give its own)
    retries = 2                     # how often a run whose process or machine died is resumed
    [flags]                         # train.py flags given to every run
    max_iters = 75000

    [[run]]                         # one configuration: an entry point, its flags, its seeds
    entry = "random_projection"     # random_projection | angle_projection | adversarial_projection | mhe
    flags = { pd = 40, pn = 20 }
    seeds = [1, 2]                  # optional
    name = "lr0.05"                 # optional: tells apart two entries of the same configuration

Each (configuration, seed) is one run: ``<entry>/train.py`` with the flags as a
user would type them, ``--random_seed SEED`` and ``--log_dir
<sweep folder>/seed<SEED>[/<name>]/<entry>``, so that it writes to
``<sweep folder>/seed<SEED>[/<name>]/<entry>/<configuration>``. A flag's
TOML value must have the flag's type (integer, float, string, or true/false
for a switch); relative paths are relative to the repository root, where
train.py runs. train.py's own checks of its flags run here, so a value it would
refuse stops the file; what only a run finds (its data, its folder) fails that
run alone, with its message. No TensorFlow here.
"""
import argparse
import importlib.util
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO_ROOT
from common.run import config
from common.compare.authors import VARIANTS

# Set by the sweep for each run, so not allowed in a sweep file.
RESERVED = {'log_dir': 'each run writes into the sweep folder (sweep run --log_dir moves it)',
            'random_seed': 'give seeds = [...]',
            'resume': 'the sweep resumes unfinished runs by itself',
            'gpu_no': 'Ray gives each run its GPU (sweep run --gpus-per-run)'}
TOP_KEYS = {'name', 'description', 'seeds', 'retries', 'flags', 'run'}
RUN_KEYS = {'entry', 'flags', 'seeds', 'name'}
DEFAULT_RETRIES = 2


class SweepFileError(ValueError):
    """A sweep file that cannot run; the message names the file, the entry and the problem."""


@dataclass
class RunSpec:
    """One run: an entry point's train.py with its argv, in its folder."""
    entry: str                 # the entry point (variant)
    label: str                 # the configuration's row name: [name/]entry/configuration
    seed: int
    argv: list                 # what follows `python <entry>/train.py`
    run_dir: Path              # where train.py writes: <log_dir>/<configuration>
    flags: argparse.Namespace  # as train.py parses argv (variant included)

    @property
    def run_id(self):
        return f'seed{self.seed}/{self.label}'

    @property
    def configuration(self):
        return self.run_dir.name

    @property
    def script(self):
        return REPO_ROOT / self.entry / 'train.py'

    def command(self):
        """The command a user would type, from the repository root."""
        return ['python', f'{self.entry}/train.py', *self.argv]


@dataclass
class Sweep:
    path: Path
    name: str
    folder: Path
    retries: int
    runs: list = field(default_factory=list)
    rows: list = field(default_factory=list)   # [(label, entry, configuration, [RunSpec])] in file order
    options: list = field(default_factory=list)   # the command's --log_dir and overrides, to repeat

    def command(self, sub):
        """The `python -m common.sweep SUB` command of this sweep, with the same options."""
        return shlex.join(['python', '-m', 'common.sweep', sub, str(self.path), *self.options])


def entry_parser(entry):
    """The argparse parser of ``<entry>/train.py`` (imported without running it)."""
    path = REPO_ROOT / entry / 'train.py'
    spec = importlib.util.spec_from_file_location(f'_sweep_{entry}_train', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return config.build_parser(module.__doc__, module.VARIANT, module.DEFAULTS)


def flag_actions(parser):
    """{flag name: argparse action} of a train.py parser."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != 'help'}


def _type_name(action):
    if action.nargs == 0:
        return 'true or false'
    return {int: 'an integer', float: 'a number', str: 'a string', Path: 'a path (string)'}.get(
        action.type, 'a string')


def flag_argv(name, value, action, where):
    """``--name value`` for a TOML value of the flag's type, or SweepFileError."""
    want = _type_name(action)
    if action.nargs == 0:
        ok = isinstance(value, bool)
    elif action.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif action.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise SweepFileError(f'{where}: flag {name!r} must be {want}, got {type(value).__name__} {value!r}')
    if action.choices is not None and value not in action.choices:
        raise SweepFileError(f'{where}: flag {name!r} is {value!r}; one of {", ".join(map(str, action.choices))}')
    if action.nargs == 0:
        return [f'--{name}'] if value else []
    return [f'--{name}', repr(float(value)) if action.type is float else str(value)]


def _check_keys(table, allowed, where):
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SweepFileError(f'{where}: unknown key {unknown[0]!r}; the keys are {", ".join(sorted(allowed))}')


def _seeds(value, where):
    if not isinstance(value, list) or not value or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise SweepFileError(f'{where}: seeds must be a non-empty list of integers, got {value!r}')
    repeated = sorted({s for s in value if value.count(s) > 1})
    if repeated:
        raise SweepFileError(f'{where}: seed {repeated[0]} is listed twice (a duplicate run)')
    return value


def _flags_table(value, where):
    if not isinstance(value, dict):
        raise SweepFileError(f'{where}: flags must be a table such as {{ pd = 40, pn = 20 }}, got {value!r}')
    return value


def load(path, log_root=None, overrides=None):
    """Read and check a sweep file -> Sweep. ``overrides``: {flag: value} from the command
    line (--max_iters, --width, --data_dir, ...), which win over the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepFileError(f'{path}: no such sweep file') from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepFileError(f'{path}: cannot read: {e}') from None
    except tomllib.TOMLDecodeError as e:
        raise SweepFileError(f'{path}: not valid TOML: {e}') from None
    _check_keys(data, TOP_KEYS, str(path))
    name = data.get('name', path.stem)
    if not isinstance(name, str) or not name or '/' in name or name.startswith('.'):
        raise SweepFileError(f'{path}: name must be a folder name such as "paper", got {name!r}')
    retries = data.get('retries', DEFAULT_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SweepFileError(f'{path}: retries must be an integer >= 0, got {retries!r}')
    default_seeds = _seeds(data['seeds'], f'{path}: seeds') if 'seeds' in data else None
    common_flags = _flags_table(data.get('flags', {}), f'{path}: [flags]')
    entries = data.get('run')
    if not isinstance(entries, list) or not entries:
        raise SweepFileError(f'{path}: no [[run]] entries; add one per configuration, e.g.\n'
                             f'[[run]]\nentry = "random_projection"\nflags = {{ pd = 40, pn = 20 }}')
    folder = Path(log_root if log_root is not None else REPO_ROOT / 'logs' / 'sweeps').absolute() / name
    sweep = Sweep(path=path, name=name, folder=folder, retries=retries)
    parsers, seen_dirs, seen_labels = {}, {}, {}
    for k, entry in enumerate(entries, 1):
        where = f'{path}, run {k}'
        if not isinstance(entry, dict):
            raise SweepFileError(f'{where}: each [[run]] must be a table')
        _check_keys(entry, RUN_KEYS, where)
        variant = entry.get('entry')
        if variant not in VARIANTS:
            raise SweepFileError(f'{where}: unknown entry point {variant!r}; one of {", ".join(VARIANTS)}')
        where = f'{path}, run {k} ({variant})'
        if variant not in parsers:
            parsers[variant] = entry_parser(variant)
        parser = parsers[variant]
        actions = flag_actions(parser)
        flags = dict(common_flags)
        flags.update(_flags_table(entry.get('flags', {}), f'{where}: flags'))
        flags.update(overrides or {})
        argv = []
        for flag, value in flags.items():
            if flag in RESERVED:
                raise SweepFileError(f'{where}: flag {flag!r} is set by the sweep ({RESERVED[flag]})')
            if flag not in actions:
                known = ', '.join(sorted(set(actions) - set(RESERVED)))
                raise SweepFileError(f'{where}: unknown flag {flag!r} for {variant}/train.py; its flags: {known}')
            argv += flag_argv(flag, value, actions[flag], where)
        seeds = _seeds(entry['seeds'], f'{where}: seeds') if 'seeds' in entry else default_seeds
        if seeds is None:
            raise SweepFileError(f'{where}: no seeds; give seeds = [...] at the top or in this entry')
        label_name = entry.get('name')
        if label_name is not None and (not isinstance(label_name, str) or not label_name
                                       or '/' in label_name or label_name.startswith('.')):
            raise SweepFileError(f'{where}: name must be a folder name such as "lr0.05", got {label_name!r}')
        row_runs = []
        for seed in seeds:
            group = folder / f'seed{seed}' / (label_name or '') / variant
            full_argv = [*argv, '--random_seed', str(seed), '--log_dir', str(group)]
            parsed = _parse(parser, full_argv, where)
            parsed.variant = variant
            run_dir = group / config.run_name(parsed)
            if run_dir in seen_dirs:
                raise SweepFileError(f'{where}: duplicate run: seed {seed} of {run_dir.parent.name}/'
                                     f'{run_dir.name} is also in {seen_dirs[run_dir]}; remove one, or '
                                     f'give one entry a name = "..."')
            seen_dirs[run_dir] = f'run {k}'
            label = f'{label_name + "/" if label_name else ""}{variant}/{run_dir.name}'
            row_runs.append(RunSpec(entry=variant, label=label, seed=seed, argv=full_argv,
                                    run_dir=run_dir, flags=parsed))
        label = row_runs[0].label
        if label in seen_labels:
            raise SweepFileError(f'{where}: duplicate run: configuration {label} is also '
                                 f'{seen_labels[label]} (with other seeds); merge their seeds, or give '
                                 f'one entry a name = "..."')
        seen_labels[label] = f'run {k}'
        sweep.rows.append((label, variant, row_runs[0].configuration, row_runs))
        sweep.runs.extend(row_runs)
    return sweep


def _parse(parser, argv, where):
    """train.py's own parsing and checks of argv (names, types, choices, values that cannot
    give a run); SweepFileError instead of exit."""
    def error(message):
        raise SweepFileError(f'{where}: {message}')
    parser.error = error
    flags = parser.parse_args(argv)
    try:
        config.validate(flags)
    except config.FlagError as e:
        error(str(e))
    return flags
