"""Compare training runs with each other and with the authors' logs: ``python -m common.compare``.

    summary RUN... [--reference RUN | --no-reference] [--csv]
        a table: last iteration, final and best test accuracy (and where), final
        train fit, and the differences to the reference
    plot RUN... [--reference RUN... | --no-reference] -o out.png
        test accuracy and train fit against the iteration, references dashed
    paper [--logs DIR] [--csv]
        the paper's comparison (baseline, MHE, half-space MHE, the three CoMHE
        variants) from the authors' logs, with this project's runs of the same
        configurations beside them where ``DIR`` (default ``logs/``) has them

A RUN is a configuration folder (all its log indices, merged as described in
``common.run.runlog``), one ``log_train_NN.txt`` / ``log_test_NN.txt`` file (that
index only), or a folder with run folders below it (each of them, e.g.
``logs/authors/comhe``). Without ``--reference``, each run is compared with the
authors' run of its variant and configuration (``common.compare.authors``), if they
published one. A missing path or a log that cannot be read is reported on
stderr with exit code 2.
"""
import argparse
import csv
import sys
from pathlib import Path

from common.compare import authors
from common.run.runlog import LogError, find_runs, latest_log_index, read_run

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1


# --------------------------------------------------------------------------- loading

def load_runs(paths):
    """Read every RUN argument; a folder without logs but with run folders below it
    stands for all of them. Raises LogError."""
    runs = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir() and latest_log_index(path) is None:
            below = find_runs(path)
            if below:
                runs.extend(read_run(p) for p in below)
                continue
        runs.append(read_run(path))
    return runs


def make_names_unique(runs):
    """Where two runs got the same short name, name them by the path given instead."""
    seen = {}
    for run in runs:
        seen.setdefault(run.name, []).append(run)
    for same in seen.values():
        if len(same) > 1:
            for k, run in enumerate(same):
                run.name = str(run.path)
                if sum(str(r.path) == str(run.path) for r in same) > 1:
                    run.name += f' #{k + 1}'
    return runs


# --------------------------------------------------------------------------- summary

COLUMNS = ['run', 'last_iter', 'final_test_acc', 'best_test_acc', 'best_test_iter', 'final_fit']
HEADERS = ['run', 'last iter', 'final test acc', 'best test acc', 'best at iter', 'final fit']


def summary_rows(runs, references=None):
    """One dict per run, numbers unformatted, None where unknown. Each distinct
    reference comes first, as its own row; run k's differences are to
    ``references[k]`` (None: no reference)."""
    refs = [None] * len(runs) if references is None else list(references)
    rows = []
    for role, run, ref in [('reference', r, None) for r in _distinct(refs)] + \
            [('run', r, ref) for r, ref in zip(runs, refs)]:
        row = dict(run=run.name, role=role, path=str(run.path), last_iter=run.last_iter,
                   final_test_acc=run.final_test_acc, best_test_acc=run.best_test_acc,
                   best_test_iter=run.best_test_iter, final_fit=run.final_fit,
                   diff_final=None, diff_best=None)
        if ref is not None:
            row['diff_final'] = _diff(run.final_test_acc, ref.final_test_acc, role)
            row['diff_best'] = _diff(run.best_test_acc, ref.best_test_acc, role)
        rows.append(row)
    return rows


def authors_references(runs, note=None):
    """The authors' run matching each run (None where they published none); ``note``
    gets a one-line message for each run of ours without a match."""
    found, refs = {}, []
    for run in runs:
        folder = authors.reference_for(run.path)
        if folder is None:
            if note is not None and not authors.is_authors_run(run.path):
                what = authors.identify(run.path)
                note(f'note: the authors published no run of {"/".join(what)}; a plain summary'
                     if what else f'note: {run.path} is not recognised as a run of '
                     f'{", ".join(authors.VARIANTS)}; pass --reference RUN to compare it')
            refs.append(None)
            continue
        if note is not None:
            unlike = authors.not_like_the_authors(run.path)
            if unlike:
                note(f'note: {run.path} trained on {" and ".join(unlike)}: its figures do not '
                     f"compare with the authors' CIFAR-100 ones")
        if folder not in found:
            found[folder] = read_run(folder)
        refs.append(found[folder])
    return refs


def _diff(value, ref, role):
    if role == 'reference' or value is None or ref is None:
        return None
    return round(value - ref, 4)


# --------------------------------------------------------------------------- the paper's table

PAPER_COLUMNS = ['row', 'configuration', 'authors_iters', 'authors_final', 'authors_best',
                 'ours_last_iter', 'ours_final', 'ours_best', 'diff_final']
PAPER_HEADERS = ['row', 'run', "authors' iterations", "authors' final", "authors' best",
                 'ours: last iter', 'ours: final', 'ours: best', 'Δ final (ours - authors)']


def paper_rows(logs_dir):
    """The paper's comparison rows: the authors' figures, and ours where ``logs_dir``
    holds a run of that variant and configuration (``<variant>/<configuration>``)."""
    rows = []
    for label, variant, configuration in authors.PAPER_ROWS:
        theirs = read_run(authors.authors_run_dir(variant, configuration))
        row = dict(row=label, configuration=f'{variant}/{configuration}',
                   authors_iters=authors.RELEASE_ITERS[authors.release_of(variant)],
                   authors_final=theirs.final_test_acc, authors_best=theirs.best_test_acc,
                   ours_last_iter=None, ours_final=None, ours_best=None, diff_final=None)
        ours = Path(logs_dir) / variant / configuration
        if latest_log_index(ours) is not None:
            run = read_run(ours)
            row.update(ours_last_iter=run.last_iter, ours_final=run.final_test_acc,
                       ours_best=run.best_test_acc,
                       diff_final=_diff(run.final_test_acc, theirs.final_test_acc, 'run'))
        rows.append(row)
    return rows


def format_paper_markdown(rows):
    lines = ['| ' + ' | '.join(PAPER_HEADERS) + ' |', '|---|---|' + '---:|' * (len(PAPER_HEADERS) - 2)]
    for r in rows:
        cells = [r['row'], r['configuration'], f"{r['authors_iters']:,}", _acc(r['authors_final']),
                 _acc(r['authors_best']), _int(r['ours_last_iter']), _acc(r['ours_final']),
                 _acc(r['ours_best']), _signed(r['diff_final'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def format_markdown(rows, with_reference):
    headers = list(HEADERS) + (['Δ final vs ref', 'Δ best vs ref'] if with_reference else [])
    align = ['---'] + ['---:'] * (len(headers) - 1)
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join(align) + '|']
    for row in rows:
        name = row['run'] + (' (reference)' if row['role'] == 'reference' else '')
        cells = [name.replace('|', '\\|'), _int(row['last_iter']), _acc(row['final_test_acc']),
                 _acc(row['best_test_acc']), _int(row['best_test_iter']), _acc(row['final_fit'])]
        if with_reference:
            cells += [_signed(row['diff_final']), _signed(row['diff_best'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _int(x):
    return '–' if x is None else str(x)


def _acc(x):
    return '–' if x is None else f'{x:.4f}'


def _signed(x):
    return '–' if x is None else f'{x:+.4f}'


def write_csv(rows, with_reference, out):
    fields = ['run', 'role', 'path'] + COLUMNS[1:] + (['diff_final', 'diff_best'] if with_reference else [])
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction='ignore', lineterminator='\n')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(k, row.get(k)) for k in fields})


def _csv_cell(key, value):
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:+.4f}' if key.startswith('diff') else f'{value:.4f}'
    return value


# --------------------------------------------------------------------------- plot

def smooth(values, window):
    """Centred moving average with the window shrunk at both ends (same length as the input)."""
    import numpy as np
    y = np.asarray(values, dtype=float)
    if window <= 1 or len(y) < 3:
        return y
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(len(y))
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + half + 1, len(y))
    return (c[hi] - c[lo]) / (hi - lo)


def plot_runs(runs, references, out, title=None, width=12.0, height=5.0, dpi=100):
    """Write a two-panel PNG: test accuracy and train fit against the iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def few_points(iters):   # a short run's one or two points would draw no line at all
        return 'o' if len(iters) <= 20 else None

    fig, (ax_acc, ax_fit) = plt.subplots(1, 2, figsize=(width, height), dpi=dpi, layout='constrained')
    colours = plt.get_cmap('tab10').colors
    entries = [(r, False) for r in runs] + [(r, True) for r in references]
    any_test = any_train = False
    for k, (run, is_ref) in enumerate(entries):
        colour = colours[k % len(colours)]
        style = '--' if is_ref else '-'
        label = run.name + (' (reference)' if is_ref else '')
        if run.test:
            any_test = True
            iters, acc = zip(*run.test)
            ax_acc.plot(iters, acc, style, color=colour, lw=1.6, marker=few_points(iters), ms=4,
                        label=f'{label}: final {run.final_test_acc:.4f}, best {run.best_test_acc:.4f}')
        if run.train:
            any_train = True
            iters = [r['iter'] for r in run.train]
            fit = [r['fit'] for r in run.train]
            ax_fit.plot(iters, fit, '-', color=colour, lw=0.6, alpha=0.25)
            ax_fit.plot(iters, smooth(fit, max(1, len(fit) // 60) | 1), style, color=colour, lw=1.6,
                        marker=few_points(iters), ms=4, label=label)
    thousands = FuncFormatter(lambda x, _: f'{x / 1000:g}k' if abs(x) >= 1000 else f'{x:g}')
    ax_acc.set(title='Test accuracy (the whole test set)', xlabel='iteration', ylabel='test accuracy')
    ax_fit.set(title='Train fit (batch cross-entropy; smoothed, raw faint)', xlabel='iteration',
               ylabel='fit (log scale)')
    for ax, has in ((ax_acc, any_test), (ax_fit, any_train)):
        ax.xaxis.set_major_formatter(thousands)
        ax.grid(True, alpha=0.3)
        if has:
            ax.legend(loc='lower right' if ax is ax_acc else 'upper right', fontsize=8, framealpha=0.9)
        else:
            ax.text(0.5, 0.5, 'no lines logged yet', ha='center', va='center', transform=ax.transAxes)
    if any_train:
        ax_fit.set_yscale('log')
        ax_fit.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_fit.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f'{y:g}'))
        ax_fit.yaxis.set_minor_formatter(NullFormatter())
    if title is None:
        title = 'Training curves' + ('  (solid: runs, dashed: reference)' if references and runs else '')
    fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- CLI

def build_parser():
    p = argparse.ArgumentParser(
        prog='python -m common.compare',
        description='Compare training runs with each other and with the authors\' reference logs. '
                    'A RUN is a configuration folder (e.g. logs/random_projection/pd40_pn20), one '
                    'log_train_NN.txt / log_test_NN.txt file, or a folder with run folders below it.',
        epilog='examples:\n'
               '  python -m common.compare summary logs/random_projection/pd40_pn20\n'
               '  python -m common.compare summary logs/authors/comhe --csv\n'
               '  python -m common.compare plot logs/random_projection/pd40_pn20 -o curves.png\n'
               '  python -m common.compare paper',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True, metavar='{summary,plot,paper}')

    s = sub.add_parser('summary', help='a table of final and best test accuracy, last iteration, final fit',
                       description='Print one row per run: the last iteration reached, the final test '
                                   'accuracy, the best one and its iteration, the final train fit; with '
                                   '--reference, the differences (final and best) to that run. Markdown '
                                   'table by default.')
    s.add_argument('runs', nargs='+', metavar='RUN', help='run folder or log file')
    ref = s.add_mutually_exclusive_group()
    ref.add_argument('--reference', metavar='RUN', help='a run to compare with (shown first, differences '
                     'to it) instead of the authors\' run of the same variant and configuration')
    ref.add_argument('--no-reference', action='store_true', help='compare with nothing')
    s.add_argument('--csv', action='store_true', help='write CSV instead of a markdown table')

    q = sub.add_parser('plot', help='test accuracy and train fit curves as a PNG',
                       description='Two panels, test accuracy and train fit against the iteration, one '
                                   'line per run; reference runs dashed.')
    q.add_argument('runs', nargs='*', metavar='RUN', help='run folder or log file')
    ref = q.add_mutually_exclusive_group()
    ref.add_argument('--reference', nargs='+', default=[], metavar='RUN',
                     help='reference run(s), drawn dashed (give them after the RUNs), instead of '
                          'the authors\' runs of the same variants and configurations')
    ref.add_argument('--no-reference', action='store_true', help='draw no reference')
    q.add_argument('-o', '--output', required=True, metavar='OUT.png', help='the PNG to write')
    q.add_argument('--title', help='figure title')

    t = sub.add_parser('paper', help="the paper's comparison table, with your runs beside the authors'",
                       description="The paper's comparison (baseline, MHE and half-space MHE with the six "
                                   "kernels, the three CoMHE variants at the released configurations): "
                                   "the authors' final and best test accuracy from logs/authors/, and "
                                   "yours where --logs has a run of the same variant and configuration "
                                   "(<variant>/<configuration>, as train.py writes them).")
    t.add_argument('--logs', type=Path, default=authors.REPO_ROOT / 'logs', metavar='DIR',
                   help='where your runs are: the folder holding <variant>/<configuration> folders, '
                        'as logs/ does (a train.py --log_dir is one <variant> folder inside it)')
    t.add_argument('--csv', action='store_true', help='write CSV instead of a markdown table')
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == 'summary':
            runs = load_runs(args.runs)
            reference = load_runs([args.reference]) if args.reference else []
            if len(reference) > 1:
                raise LogError(f'{args.reference}: --reference must be one run, it holds {len(reference)}')
            if reference:
                refs = reference * len(runs)
            elif args.no_reference:
                refs = [None] * len(runs)
            else:
                refs = authors_references(runs, note=_note)
            make_names_unique(_distinct(refs) + runs)
            rows = summary_rows(runs, references=refs)
            with_reference = any(r is not None for r in refs)
            if args.csv:
                write_csv(rows, with_reference, sys.stdout)
            else:
                sys.stdout.write(format_markdown(rows, with_reference))
            sys.stdout.flush()
        elif args.command == 'paper':
            rows = paper_rows(args.logs)
            for row in rows:
                unlike = authors.not_like_the_authors(args.logs / row['configuration']) \
                    if row['ours_final'] is not None else []
                if unlike:
                    _note(f"note: ours of {row['configuration']} trained on {' and '.join(unlike)}: "
                          f"its figures do not compare with the authors' CIFAR-100 ones")
            if args.csv:
                writer = csv.DictWriter(sys.stdout, fieldnames=PAPER_COLUMNS, lineterminator='\n')
                writer.writeheader()
                writer.writerows({k: _csv_cell(k, r[k]) for k in PAPER_COLUMNS} for r in rows)
            else:
                sys.stdout.write(format_paper_markdown(rows))
                if not any(r['ours_final'] is not None for r in rows):
                    _note(f'note: no runs of these configurations in {args.logs} yet; '
                          f'the authors\' figures only')
            sys.stdout.flush()
        else:
            if not args.runs and not args.reference:
                parser.error('plot: give at least one RUN or --reference RUN')
            out = Path(args.output)
            if out.suffix.lower() != '.png' or out.is_dir():
                raise LogError(f'-o {args.output}: name a .png file to write (e.g. -o curves.png)')
            runs = load_runs(args.runs)
            if args.reference or args.no_reference:
                references = load_runs(args.reference)
            else:
                references = _distinct(authors_references(runs, note=_note))
            make_names_unique(runs + references)
            try:
                out = plot_runs(runs, references, args.output, title=args.title)
            except OSError as e:
                print(f'error: cannot write {args.output}: {e.strerror or e}', file=sys.stderr)
                return EXIT_WRITE_FAILED
            print(f'wrote {out}', file=sys.stderr)
    except LogError as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. piped into head
        sys.stdout = open('/dev/null', 'w')
    return 0


def _note(message):
    print(message, file=sys.stderr)


def _distinct(runs):
    """The runs in order, each once (by identity), Nones left out."""
    out = []
    for run in runs:
        if run is not None and all(run is not r for r in out):
            out.append(run)
    return out


if __name__ == '__main__':
    sys.exit(main())
