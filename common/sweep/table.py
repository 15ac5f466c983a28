"""A sweep's results: one row per configuration, over its finished seeds.

Each finished run is read as ``python -m common.compare summary RUN`` reads it
(common.compare), and a row gives the number of seeds finished, the mean and the
sample standard deviation (n - 1) of the final and of the best test accuracy, and the
authors' final and best test accuracy for the same entry point and configuration
where they published a run (common.compare.authors; the MHE release's runs follow its
42,500-iteration schedule). A configuration with no finished seed still has its row.
Markdown, CSV, and a PNG: one bar per configuration (the mean final test accuracy),
each seed a dot, the authors' figure a diamond.
"""
import csv
import io
import statistics

from common.compare import authors, summary
from common.sweep import runstatus

COLUMNS = ['configuration', 'entry', 'seeds_done', 'seeds', 'final_mean', 'final_std',
           'best_mean', 'best_std', 'authors_final', 'authors_best', 'authors_run']
HEADERS = ['configuration', 'seeds done', 'final test acc (mean)', 'std',
           'best test acc (mean)', 'std', "authors' final", "authors' best", "authors' run"]


def run_summary(run_dir):
    """compare's summary row of one run folder (final and best test accuracy, ...)."""
    [row] = [r for r in summary.summary_rows(summary.load_runs([run_dir])) if r['role'] == 'run']
    return row


def authors_figures(entry, configuration):
    """(final, best, the run's name) of the authors' matching run, or (None, None, '')."""
    folder = authors.authors_run_dir(entry, configuration)
    if folder is None:
        return None, None, ''
    row = run_summary(folder)
    iters = authors.RELEASE_ITERS[authors.release_of(entry)]
    return (row['final_test_acc'], row['best_test_acc'],
            f'{folder.relative_to(authors.AUTHORS_DIR)} ({iters:,} iterations)')


def _mean_std(values):
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def table_rows(sweep):
    """One dict per configuration (file order), with the per-seed values under 'per_seed'."""
    rows = []
    for label, entry, configuration, specs in sweep.rows:
        per_seed = []
        for spec in specs:
            if runstatus.disk_state(spec).kind == 'done':
                summary = run_summary(spec.run_dir)
                per_seed.append((spec.seed, summary['final_test_acc'], summary['best_test_acc']))
        final_mean, final_std = _mean_std([f for _, f, _ in per_seed if f is not None])
        best_mean, best_std = _mean_std([b for _, _, b in per_seed if b is not None])
        a_final, a_best, a_run = authors_figures(entry, configuration)
        rows.append(dict(configuration=label, entry=entry, seeds_done=len(per_seed), seeds=len(specs),
                         final_mean=final_mean, final_std=final_std, best_mean=best_mean,
                         best_std=best_std, authors_final=a_final, authors_best=a_best,
                         authors_run=a_run, per_seed=per_seed))
    return rows


def _f(x):
    return '–' if x is None else f'{x:.4f}'


def format_markdown(rows):
    lines = ['| ' + ' | '.join(HEADERS) + ' |', '|---|' + '---:|' * 7 + '---|']
    for r in rows:
        cells = [r['configuration'], f"{r['seeds_done']} of {r['seeds']}",
                 _f(r['final_mean']), _f(r['final_std']), _f(r['best_mean']), _f(r['best_std']),
                 _f(r['authors_final']), _f(r['authors_best']), r['authors_run'] or '–']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def format_csv(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction='ignore', lineterminator='\n')
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f'{v:.4f}' if isinstance(v, float) else ('' if v is None else v))
                         for k, v in r.items() if k in COLUMNS})
    return out.getvalue()


def plot(rows, out, title):
    """One bar per configuration (mean final test accuracy), each seed a dot, the authors' a diamond."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 2), 5.0), layout='constrained')
    xs = range(len(rows))
    ax.bar(xs, [r['final_mean'] or 0 for r in rows], color='#9ecae1', edgecolor='#3182bd',
           label='mean over the seeds done')
    labelled = set()

    def label(text):   # each legend entry once
        if text in labelled:
            return None
        labelled.add(text)
        return text
    for x, r in zip(xs, rows):
        finals = [f for _, f, _ in r['per_seed'] if f is not None]
        if finals:
            spread = [0.0] if len(finals) == 1 else [-0.2 + 0.4 * k / (len(finals) - 1)
                                                     for k in range(len(finals))]
            ax.plot([x + o for o in spread], finals, 'o', color='#08519c', ms=5, label=label('one seed'))
        if r['authors_final'] is not None:
            ax.plot([x], [r['authors_final']], 'D', color='#e6550d', ms=7,
                    label=label("authors' final test accuracy"))
        ax.text(x, 0.01, f"{r['seeds_done']}/{r['seeds']}", ha='center', va='bottom', fontsize=8)
    ax.set_xticks(list(xs), [r['configuration'] for r in rows], rotation=35, ha='right', fontsize=8)
    ax.set_ylabel('final test accuracy')
    ax.set_ylim(0, 1.04)
    ax.grid(True, axis='y', alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=8, loc='outside lower center', ncols=3)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
