"""The targets and the Markdown report of bench/feed.py, from its results (one
run, or several runs of it in fresh processes)."""
import json
import statistics

TARGETS = {'pipeline_images_per_s': 60000,    # twice the H100's 28,000, rounded up
           'handover_median_ms': 0.1,
           'calls_per_iteration': 1, 'host_ms_per_iteration': 0.5, 'test_host_share_h100': 0.05}


def targets(result):
    """[{what, wanted, measured, met}] of one run."""
    rows = []

    def add(what, wanted, measured, met):
        rows.append({'what': what, 'wanted': wanted, 'measured': measured, 'met': bool(met)})
    new = result['pipeline']['rows']['new']
    add('input pipeline, images/s (new prefetcher)', f'>= {TARGETS["pipeline_images_per_s"]:,}',
        round(new['images_per_s']), new['images_per_s'] >= TARGETS['pipeline_images_per_s'])
    add('hand-over of a ready batch, median ms', f'<= {TARGETS["handover_median_ms"]}',
        round(new['handover_ms']['median'], 4), new['handover_ms']['median'] <= TARGETS['handover_median_ms'])
    for row in result.get('loop', {}).values():
        add(f'{row["label"]}: session calls per iteration', '1',
            row['new']['calls_per_iteration'], row['new']['calls_per_iteration'] == 1)
        add(f'{row["label"]}: host ms per iteration outside the session call',
            f'<= {TARGETS["host_ms_per_iteration"]}', round(row['new']['host_ms_per_iteration'], 3),
            row['new']['host_ms_per_iteration'] <= TARGETS['host_ms_per_iteration'])
        add(f'{row["label"]}: train log equal to the old loop\'s', 'all lines',
            f'{row["logs"]["equal_lines"]} of {row["logs"]["lines"]}',
            row['logs']['same_count'] and row['logs']['max_rel_diff'] <= 1e-3)
    if 'test_pass' in result:
        t = result['test_pass']['new']
        add('test pass: host time / (host time + H100 forward passes, estimated)',
            f'<= {TARGETS["test_host_share_h100"]}', round(t['host_share_h100'], 4),
            t['host_share_h100'] <= TARGETS['test_host_share_h100'])
    if 'gpu_kernels' in result:
        bad = {k: v for k, v in result['gpu_kernels'].items() if v['op_types_without_gpu_kernel']}
        add('training graph ops without a GPU kernel', 'none', ', '.join(sorted(bad)) or 'none', not bad)
    return rows


def markdown(result, runs=None):
    runs = runs or [result]
    med = statistics.median
    p = [r['pipeline']['rows'] for r in runs]
    lines = ['| what | old | new | new / old |', '|---|---|---|---|']

    def row(what, old, new, fmt, ratio=True):
        lines.append(f'| {what} | {fmt(old)} | {fmt(new)} | {new / old:.1f}x |' if ratio else
                     f'| {what} | {fmt(old)} | {fmt(new)} | |')
    row('input pipeline: images/s through the prefetcher', med(x['old']['images_per_s'] for x in p),
        med(x['new']['images_per_s'] for x in p), lambda v: f'{v:,.0f}')
    row('batch function alone: ms per batch of 128', med(x['old']['function_ms'] for x in p),
        med(x['new']['function_ms'] for x in p), lambda v: f'{v:.2f}')
    row('hand-over of a ready batch: median ms', med(x['old']['handover_ms']['median'] for x in p),
        med(x['new']['handover_ms']['median'] for x in p), lambda v: f'{v:.3f}', ratio=False)
    row('first batch (the new one pads the training set first): s', med(x['old']['first_batch_s'] for x in p),
        med(x['new']['first_batch_s'] for x in p), lambda v: f'{v:.2f}', ratio=False)
    # Runs may differ in what they measured (--skip, --merge): each table from the runs that have it.
    full = [r for r in runs if 'test_pass' in r]
    if all('session_overhead' in r for r in runs):
        row('one training-step session call, no work: host ms', med(r['session_overhead']['old'] for r in runs),
            med(r['session_overhead']['new'] for r in runs), lambda v: f'{v:.3f}')
    if full:
        t = [r['test_pass'] for r in full]
        row('test pass (10,000 images, full width, this CPU): images/s', med(x['old']['images_per_s'] for x in t),
            med(x['new']['images_per_s'] for x in t), lambda v: f'{v:,.0f}')
        row('test pass: session calls', t[0]['old']['calls'], t[0]['new']['calls'], lambda v: f'{v}', ratio=False)
        row('test pass: host ms (the same calls, no work)', med(x['old']['host_ms'] for x in t),
            med(x['new']['host_ms'] for x in t), lambda v: f'{v:.1f}')
        row('test pass: host share of an H100 pass (estimated)', med(x['old']['host_share_h100'] for x in t),
            med(x['new']['host_share_h100'] for x in t), lambda v: f'{100 * v:.1f} %', ratio=False)
    looped = [r for r in runs if 'loop' in r]
    if looped:
        lines += ['', '| training loop (width %s, batch %s) | calls/iteration old | new | host ms/iteration '
                  'outside the calls: old | new | session call ms (median, this CPU): new | train log lines '
                  'equal to the old loop\'s |' % (looped[0]['settings']['loop_width'], looped[0]['settings']['batch']),
                  '|---|---|---|---|---|---|---|']
        for key, first in looped[0]['loop'].items():
            rs = [r['loop'][key] for r in looped]
            lines.append(
                f'| {first["label"]} | {med(x["old"]["calls_per_iteration"] for x in rs):g} | '
                f'{med(x["new"]["calls_per_iteration"] for x in rs):g} | '
                f'{med(x["old"]["host_ms_per_iteration"] for x in rs):.3f} | '
                f'{med(x["new"]["host_ms_per_iteration"] for x in rs):.3f} | '
                f'{med(x["new"]["session_call_ms_median"] for x in rs):.1f} | '
                + ', '.join(f'{x["logs"]["equal_lines"]} of {x["logs"]["lines"]}' for x in rs) + ' |')
    lines += ['', '| target | wanted | measured (per run) | met in runs |', '|---|---|---|---|']
    by_what = {}
    for run in runs:                     # the kernel check runs in the first run only
        for t in targets(run):
            by_what.setdefault(t['what'], (t['wanted'], []))[1].append(t)
    for what, (wanted, ts) in by_what.items():
        shown = ', '.join(f'{t["measured"]:,}' if isinstance(t['measured'], (int, float))
                          else str(t['measured']) for t in ts)
        lines.append(f'| {what} | {wanted} | {shown} | {sum(t["met"] for t in ts)} of {len(ts)} |')
    loads = ', '.join(' / '.join(f'{v:.2f}' for v in r['load_average_start']) for r in runs)
    others = ', '.join(f'{r["pipeline"]["load"]["other_cpu_cores"]:.2f}' for r in runs)
    lines += ['', f'Load average (1/5/15 min) at the start of each run: {loads}; CPU cores used by '
              f'other processes while the pipeline was timed: {others} (of {runs[0]["machine"]["cpu_count"]}).']
    return '\n'.join(lines)


def write(path, result, runs, command, quick):
    """The results as JSON at path, the Markdown report beside it (.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + '\n')
    m = result['machine']
    smoke = '**--quick: tiny sizes, a smoke test; these numbers mean nothing.**\n\n' if quick else ''
    header = (f'# Feeding a GPU: input pipeline, session calls, host time ({path.name})\n\n{smoke}'
              f'`{command}`, {m["date"]}, '
              + (f'{len(runs)} runs, merged from {", ".join(result["merged_from"])} (their commands and '
                 f'times in the JSON)\n\n' if 'merged_from' in result else
                 f'{len(runs)} run(s) in {result["total_s"] / 60:.1f} min\n\n') +
              f'Machine: {m.get("cpu", "?")}, {m["cpu_count"]} cores, {m.get("memory_gb", "?")} GB, '
              f'{"a GPU" if m["gpu"] else "no GPU"}; Python {m["python"]}, TensorFlow '
              f'{m["tensorflow"]}, NumPy {m["numpy"]}. Old: the code before issue 13 '
              f'(bench/legacy.py); new: the current code. The rate to feed: 28,000 images/s, '
              f'4.56 ms per step of 128 on one H100 (a JAX implementation of the same network, '
              f'not this code).\n\n')
    path.with_suffix('.md').write_text(header + result['markdown'] + '\n')
