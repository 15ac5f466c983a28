"""bench/step_time.py's report: the targets, the Markdown tables, and one result from
the results of repeated runs."""
import json
import statistics

TARGETS = {   # config -> largest step-time ratio to no energy
    'rp': 1.20, 'ap': 1.05, 'advp': 1.05, 'half_mhe': 1.05,
}
BUILD_TARGET = ('rp', 1.5)
E2E_TARGET = 0.95


def targets(result):
    """Each target against the measured value (with --repeat: the median over
    the runs, and how many of the runs met it)."""
    rows = {(r['config'], r['impl']): r for r in result['step_time']['rows']}
    out = []

    def add(what, row, key, limit, at_most=True):
        ok = (lambda v: v <= limit) if at_most else (lambda v: v >= limit)
        item = {'what': what, 'target': f'{"<=" if at_most else ">="} {limit}',
                'measured': round(row[key], 3), 'met': ok(row[key])}
        if f'{key}_runs' in row:
            item['runs'] = [round(v, 3) for v in row[f'{key}_runs']]
            item['met_in_runs'] = f'{sum(map(ok, row[f"{key}_runs"]))} of {len(row[f"{key}_runs"])}'
        out.append(item)

    for key, limit in TARGETS.items():
        if (key, 'ours') in rows:
            row = rows[key, 'ours']
            add(f'{row["label"]} step / no-energy step', row, 'ratio', limit)
    key, limit = BUILD_TARGET
    if (key, 'ours') in rows:
        row = rows[key, 'ours']
        add(f'{row["label"]} graph build / no-energy build', row, 'build_ratio', limit)
    for row in result.get('end_to_end', {}).values():
        add(f'{row["label"]}: end-to-end images/s / compute-only', row, 'ratio', E2E_TARGET,
            at_most=False)
    return out


def _ratio(row, key='ratio', digits=2):
    """'1.05', or '1.05 (1.03-1.08)' with the range over repeated runs."""
    text = f'{row[key]:.{digits}f}'
    runs = row.get(f'{key}_runs')
    if runs and len(runs) > 1:
        text += f' ({min(runs):.{digits}f}-{max(runs):.{digits}f})'
    return text


def markdown(result):
    lines = []
    st = result['step_time']
    rows = {(r['config'], r['impl']): r for r in st['rows']}
    base = rows['none', 'ours']
    lines += ['| configuration | ours: step (s) | ours: x no energy | naive: step (s) | '
              'naive: x no energy | speed-up of the term | ours: build (s) | naive: build (s) |',
              '|---|---|---|---|---|---|---|---|',
              f'| no energy | {base["median_s"]:.3f} | 1.00 | | | | {base["build_s"]:.2f} | |']
    for key in ('half_mhe', 'rp', 'ap', 'advp'):
        if (key, 'ours') not in rows:
            continue
        o, n = rows[key, 'ours'], rows[key, 'naive']
        extra_o, extra_n = o['median_s'] - base['median_s'], n['median_s'] - base['median_s']
        speedup = f'{extra_n / extra_o:.1f}x' if extra_o > 0.02 * base['median_s'] else 'n/a (ours within 2 %)'
        lines.append(f'| {o["label"]} | {o["median_s"]:.3f} | {_ratio(o)} | {n["median_s"]:.3f} | '
                     f'{_ratio(n)} | {speedup} | {o["build_s"]:.2f} (x{o["build_ratio"]:.2f}) | '
                     f'{n["build_s"]:.2f} (x{n["build_ratio"]:.2f}) |')
    for key in ('rp_draws', 'rp_draws_tf', 'rp_products', 'advp_products'):
        if (key, 'floor') in rows:
            f = rows[key, 'floor']
            lines.append(f'| {f["label"]} | {f["median_s"]:.3f} | {_ratio(f)} | | | | | |')
    if result.get('scaling'):
        lines += ['', '| N | d | ours (ms) | naive (ms) | speed-up |', '|---|---|---|---|---|']
        for r in result['scaling']:
            lines.append(f'| {r["N"]} | {r["d"]} | {r["ours_s"] * 1e3:.1f} | {r["naive_s"] * 1e3:.1f} | '
                         f'{r["speedup"]:.1f}x |')
    if result.get('end_to_end'):
        lines += ['', '| configuration | end to end (img/s) | compute only (img/s) | ratio |',
                  '|---|---|---|---|']
        for r in result['end_to_end'].values():
            lines.append(f'| {r["label"]} | {r["e2e_images_per_s"]:.1f} | '
                         f'{r["compute_images_per_s"]:.1f} | {_ratio(r, digits=3)} |')
    if st.get('same_losses'):
        lines += ['', '| configuration | ours = naive: largest relative difference of fit, reg, '
                      'thom, thomf (same weights and draws, 2 steps) |', '|---|---|']
        for key, check in st['same_losses'].items():
            lines.append(f'| {rows[key, "ours"]["label"]} | {check["max_rel_diff"]:.1e} |')
    repeated = any('runs' in t for t in result['targets'])
    lines += ['', '| target | wanted | measured | met |' + (' met in runs | per run |' if repeated else ''),
              '|---|---|---|---|' + ('---|---|' if repeated else '')]
    for t in result['targets']:
        line = f'| {t["what"]} | {t["target"]} | {t["measured"]} | {"yes" if t["met"] else "NO"} |'
        if repeated:
            line += f' {t.get("met_in_runs", "")} | {", ".join(map(str, t.get("runs", [])))} |'
        lines.append(line)
    return '\n'.join(lines)


def total_note(result):
    loads = result.get('step_time', {}).get('load')
    loads = loads if isinstance(loads, list) else [loads] if loads else []
    note = f'{result["total_s"] / 60:.1f} min'
    run_count = result.get('run_count') or len(result.get('runs', [])) or 1
    if run_count > 1:
        note += f', {run_count} runs in separate processes (medians over the runs)'
    if loads:
        others = ', '.join(f'{load["other_cpu_cores"]:.2f}' for load in loads)
        note += (f'; while the steps were timed, other processes used {others} '
                 f'of the {result["machine"]["cpu_count"]} cores')
    return note


def compact_json(result):
    """``result`` as JSON for bench/results/: each run's full figures left out (the rows
    keep their per-run values), one line per entry and per row, so it reads and diffs."""
    summary = {k: v for k, v in result.items() if k != 'runs'}
    summary['run_count'] = result.get('run_count') or len(result.get('runs', [])) or 1
    if 'step_time' in result:   # the loss checks' largest difference over the runs, not each run's
        same = {k: {kk: vv for kk, vv in check.items() if kk != 'runs'}
                for k, check in result['step_time']['same_losses'].items()}
        summary['step_time'] = dict(result['step_time'], same_losses=same)

    def dump(value, depth):
        pad = ' ' * (depth + 1)
        if depth < 2 and isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
            items = [f'{pad}{json.dumps(k)}: {dump(v, depth + 1)}' for k, v in value.items()]
            return '{\n' + ',\n'.join(items) + '\n' + ' ' * depth + '}'
        if depth < 3 and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return '[\n' + ',\n'.join(pad + json.dumps(v) for v in value) + '\n' + ' ' * depth + ']'
        return json.dumps(value)
    return dump(summary, 0) + '\n'


def aggregate(runs):
    """One result from the results of repeated runs: medians over the runs of
    each run's medians and ratios, the per-run ratios kept beside them."""
    med = statistics.median
    out = {'runs': runs, 'machine': runs[0]['machine'], 'quick': runs[0]['quick']}
    groups = {}
    for run in runs:
        for row in run['step_time']['rows']:
            groups.setdefault((row['config'], row['impl']), []).append(row)
    rows = []
    for rs in groups.values():
        row = {k: rs[0][k] for k in ('config', 'impl', 'label', 'p_iters')}
        for key in ('median_s', 'ratio', 'paired_ratio', 'p_steps_median_s', 'build_s',
                    'build_ratio', 'first_run_s'):
            row[key] = med(r[key] for r in rs)
        row['ratio_runs'] = [r['ratio'] for r in rs]
        row['build_ratio_runs'] = [r['build_ratio'] for r in rs]
        row['finite'] = all(r['finite'] for r in rs)
        rows.append(row)
    same = {}
    for key in runs[0]['step_time']['same_losses']:
        checks = [run['step_time']['same_losses'][key] for run in runs]
        same[key] = {'max_rel_diff': max(c['max_rel_diff'] for c in checks), 'runs': checks}
    out['step_time'] = {'rows': rows, 'same_losses': same,
                        'load': [run['step_time']['load'] for run in runs]}
    if all('end_to_end' in run for run in runs):
        e2e = {}
        for key, row0 in runs[0]['end_to_end'].items():
            rs = [run['end_to_end'][key] for run in runs]
            e2e[key] = {'label': row0['label'],
                        **{k: med(r[k] for r in rs) for k in ('e2e_images_per_s',
                                                               'compute_images_per_s', 'ratio')},
                        'ratio_runs': [r['ratio'] for r in rs]}
        out['end_to_end'] = e2e
    scaling = [run['scaling'] for run in runs if run.get('scaling')]
    if scaling:
        out['scaling'] = scaling[0]
    return out
