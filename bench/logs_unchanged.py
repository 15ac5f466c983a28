"""Whether a change of the code changed what training writes: each of the four entry
points (random_projection, angle_projection, adversarial_projection, mhe) on each
engine (tf1, keras on JAX) trains a short run on the CIFAR-format fixture, once with
the code of a base revision and once with the working tree, and their train and test
logs are compared byte for byte.

    .venv/bin/python bench/logs_unchanged.py --base REV          # exit 1 if any log differs

The base revision is exported with `git archive` into a temporary folder; both run
with this environment's Python. For a restructure (docs/development.md), the logs
must be equal.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = ('random_projection', 'angle_projection', 'adversarial_projection', 'mhe')
ENGINES = ('tf1', 'keras')
# Two train lines (iterations 0 and 100), three test passes, two checkpoints.
SHORT = ['--width', '0.125', '--batch_size', '8', '--max_iters', '101', '--eval_every', '50',
         '--ckpt_every', '50']


def export(rev, folder):
    archive = subprocess.run(['git', 'archive', rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', str(folder)], input=archive, check=True)


def fixture_flags(folder):
    out = subprocess.run([sys.executable, '-m', 'common.cifar_fixture', str(folder)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    flags = out.split('train on it with:')[1].split()
    return flags


def train(tree, entry, engine, data_flags, log_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', KERAS_BACKEND='jax', CUDA_VISIBLE_DEVICES='')
    env.pop('PYTHONPATH', None)
    argv = [sys.executable, str(tree / entry / 'train.py'), *data_flags, *SHORT, '--engine', engine,
            '--log_dir', str(log_dir)]
    result = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f'{tree.name}: {entry} --engine {engine} failed:\n{result.stderr[-3000:]}')
    (run_dir,) = [p for p in log_dir.iterdir() if p.is_dir()]
    return {name: (run_dir / name).read_bytes() for name in ('log_train_00.txt', 'log_test_00.txt')}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='the revision to compare with (a commit, a tag, HEAD~3)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='logs-unchanged-') as tmp:
        tmp = Path(tmp)
        base = tmp / 'base'
        base.mkdir()
        export(args.base, base)
        data_flags = fixture_flags(tmp / 'data')
        differ = []
        print(f'| entry | engine | train log | test log |   (base {args.base} against the working tree)')
        print('|---|---|---|---|')
        for entry in ENTRIES:
            for engine in ENGINES:
                before = train(base, entry, engine, data_flags, tmp / 'logs' / 'base' / entry / engine)
                after = train(ROOT, entry, engine, data_flags, tmp / 'logs' / 'now' / entry / engine)
                same = [before[name] == after[name] for name in ('log_train_00.txt', 'log_test_00.txt')]
                lines = [len(before[name].splitlines()) for name in ('log_train_00.txt', 'log_test_00.txt')]
                print(f'| {entry} | {engine} | ' + ' | '.join(
                    f"{'equal' if s else 'DIFFERENT'} ({n} lines)" for s, n in zip(same, lines)) + ' |', flush=True)
                if not all(same):
                    differ.append(f'{entry}/{engine}')
        print(f"{'all logs byte-equal' if not differ else 'differ: ' + ', '.join(differ)}")
        return 1 if differ else 0


if __name__ == '__main__':
    sys.exit(main())
