"""The sweep commands: run, status, table (``python -m common.sweep --help``).

Exit codes: 0 fine; 1 some runs failed (run), or a file could not be written (table);
2 a bad sweep file or command line, nothing started; 130 stopped by Ctrl-C (run).
"""
import argparse
import sys
from pathlib import Path

from common.sweep import runstatus
from common.sweep.sweepfile import SweepFileError, load

EXAMPLES = '''examples:
  python -m common.sweep run sweeps/paper.toml                      # local Ray: this machine's GPUs, else CPUs
  python -m common.sweep run sweeps/paper.toml --gpus-per-run 0.25  # four runs share each GPU
  python -m common.sweep run sweeps/paper.toml --address HEAD:6379  # join a Ray cluster
  python -m common.sweep run sweeps/paper.toml --max_iters 300 --width 0.25 --log_dir logs/trial
  python -m common.sweep status sweeps/paper.toml
  python -m common.sweep table sweeps/paper.toml                    # also writes table.md/.csv/.png
'''


def build_parser():
    p = argparse.ArgumentParser(prog='python -m common.sweep', epilog=EXAMPLES,
                                description='Run a sweep of train.py runs on Ray, show where it '
                                            'stands, and tabulate its results.',
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument('sweep', metavar='SWEEP.toml', type=Path, help='the sweep file')
    shared.add_argument('--log_dir', type=Path, default=None,
                        help='where sweep folders go (default: logs/sweeps/ in the repository); '
                             'the sweep writes to LOG_DIR/<its name>')
    over = shared.add_argument_group('passed to every train.py (the same values for run, status '
                                     'and table: a run is done when it reached --max_iters)')
    over.add_argument('--max_iters', type=int, help='training iterations of every run')
    over.add_argument('--width', type=float, help='channel multiplier of CNN-9')
    over.add_argument('--data_dir', type=Path, help='where CIFAR-100 is (made absolute)')
    over.add_argument('--data_md5', type=str, help='expected md5s of a re-packaged copy')
    sub = p.add_subparsers(dest='command', required=True, metavar='{run,status,table}')

    r = sub.add_parser('run', parents=[shared], help='run every run that is not done',
                       description='Run every run of the sweep that is not done: finished runs are '
                                   'skipped, unfinished ones resumed from their checkpoint.')
    r.add_argument('--address', help='join this Ray cluster (e.g. HEAD:6379, or auto) instead of '
                                     'starting a local Ray; the repository and --log_dir must be '
                                     'at the same path on every machine')
    r.add_argument('--connect-timeout', dest='connect_timeout', type=float, default=None,
                   help='with --address: seconds to reach the cluster before stopping with exit '
                        'code 2 (default 30)')
    r.add_argument('--gpus-per-run', dest='gpus_per_run', type=float, default=None,
                   help='GPUs per run; a fraction packs runs on a GPU (0.25: four per GPU). '
                        'Default 1 where Ray has GPUs, else 0 (the CPU)')
    r.add_argument('--cpus-per-run', dest='cpus_per_run', type=float, default=1.0,
                   help='CPUs per run (default 1): with --num-cpus, how many runs share the CPUs')
    r.add_argument('--num-cpus', dest='num_cpus', type=int, default=None,
                   help='local Ray only: CPUs it may use (default: all)')
    r.add_argument('--num-gpus', dest='num_gpus', type=int, default=None,
                   help='local Ray only: GPUs it may use (default: all it finds)')

    sub.add_parser('status', parents=[shared], help='the state of every run',
                   description='Print every run: done, running (iteration, ETA), failed (why), '
                               'stopped or unfinished (its checkpoint), or pending.')

    t = sub.add_parser('table', parents=[shared], help='one row per configuration',
                       description='One row per configuration: seeds done, final and best test '
                                   'accuracy (mean, std), and the authors\' figures where they '
                                   'published the configuration. Prints Markdown (or CSV) and '
                                   'writes table.md, table.csv and table.png.')
    t.add_argument('--csv', action='store_true', help='print CSV instead of Markdown')
    t.add_argument('--out', type=Path, default=None,
                   help='folder for table.md, table.csv, table.png (default: the sweep folder)')
    return p


def overrides(args):
    values = {k: getattr(args, k) for k in ('max_iters', 'width', 'data_dir', 'data_md5')
              if getattr(args, k) is not None}
    if 'data_dir' in values:
        values['data_dir'] = str(values['data_dir'].absolute())
    return values


def same_options(args):
    """The options that chose the sweep's folder and its runs, as typed: status and table need them too."""
    options = ['--log_dir', str(args.log_dir)] if args.log_dir is not None else []
    for key in ('max_iters', 'width', 'data_dir', 'data_md5'):
        if getattr(args, key) is not None:
            options += [f'--{key}', str(getattr(args, key))]
    return options


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        sweep = load(args.sweep, args.log_dir, overrides(args))
    except SweepFileError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    sweep.options = same_options(args)
    if args.command == 'run':
        from common.sweep.ray_runner import ClusterUnreachable, run_sweep
        try:
            from common.sweep.ray_runner import CONNECT_TIMEOUT_S
            timeout = CONNECT_TIMEOUT_S if args.connect_timeout is None else args.connect_timeout
            if timeout <= 0:
                print(f'error: --connect-timeout must be positive, got {timeout:g}', file=sys.stderr)
                return 2
            return run_sweep(sweep, address=args.address, gpus_per_run=args.gpus_per_run,
                             cpus_per_run=args.cpus_per_run, num_cpus=args.num_cpus,
                             num_gpus=args.num_gpus, connect_timeout=timeout)
        except ClusterUnreachable as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        except KeyboardInterrupt:   # before the runs started (Ray starting): nothing to save
            print('interrupted before the runs started; nothing to save', file=sys.stderr)
            return 130
    if args.command == 'status':
        return status(sweep)
    return table(sweep, args.csv, args.out)


def status(sweep):
    from common.sweep.progress import counts_line
    from common.sweep.ray_runner import driver_alive
    alive = driver_alive(sweep.folder)
    rows = [(spec.run_id, *runstatus.state_of(spec, driver_alive=alive)) for spec in sweep.runs]
    width = max(len(run_id) for run_id, _, _ in rows)
    print(f'{sweep.path}: {sweep.folder}' + ('' if alive else ' (no sweep running)'))
    for spec, (run_id, state, detail) in zip(sweep.runs, rows):
        note = runstatus.attempts_note(runstatus.read_state(spec.run_dir))
        print(f'{run_id:<{width}}  {state:<10}  {detail}{note}'.rstrip())
    print(counts_line(rows))
    return 0


def table(sweep, as_csv, out_dir):
    from common.compare.authors import unlike_reasons
    from common.sweep import table as results
    rows = results.table_rows(sweep)
    unlike = []
    for spec in sweep.runs:
        for reason in unlike_reasons(spec.flags.width, spec.flags.data_dir if spec.flags.data_md5 else None):
            unlike += [reason] if reason not in unlike else []
    if unlike:
        print(f"note: runs of this sweep use {' and '.join(unlike)}: the authors' columns are their "
              f"CIFAR-100 figures of the paper's network and do not compare", file=sys.stderr)
    markdown, csv_text = results.format_markdown(rows), results.format_csv(rows)
    sys.stdout.write(csv_text if as_csv else markdown)
    out_dir = Path(out_dir) if out_dir is not None else sweep.folder
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / 'table.md').write_text(markdown)
        (out_dir / 'table.csv').write_text(csv_text)
        results.plot(rows, out_dir / 'table.png', f'{sweep.name}: final test accuracy per configuration'
                     + ("\n(the authors': CIFAR-100, the paper's network; not comparable)" if unlike else ''))
    except OSError as e:
        print(f'error: cannot write the table files in {out_dir}: {e}', file=sys.stderr)
        return 1
    print(f'wrote {out_dir}/table.md, table.csv and table.png', file=sys.stderr)
    return 0
