"""Whether a change of the code changed what the Keras engine computes: the JAX program of
its compiled train step (``jax.jit(...).lower(...)``, source locations left out) for each
configuration of bench/keras_engine_step.py, with a base revision's code and the working
tree's, compared by hash. Equal programs take the same time, so a step-time difference
between the two is the machine's noise.

    .venv/bin/python bench/keras_program_unchanged.py --base REV    # exit 1 if any differs
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.logs_unchanged import export
CONFIGS = ('none', 'half_mhe', 'rp', 'ap', 'advp')
# Run in each tree; the second field of a bench/keras_engine_step.py CONFIGS entry is its terms
# in every revision, and the schedule module moved into common/paper/.
PROGRAM = '''
import hashlib, os, re, sys
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.getcwd())
import numpy as np
import jax
import bench.keras_engine_step as kes
from common.keras_engine import network, step as steps
try:
    from common.paper.schedule import scaled_widths
except ImportError:
    from common.schedule import scaled_widths
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 100, 8)
for name in sys.argv[1:]:
    terms = kes.CONFIGS[name][1]
    model = network.cnn9(scaled_widths(0.125), 100)
    state = steps.initial_state(model, terms, 345)
    text = jax.jit(steps.make_train_step(model, terms, 345)).lower(state, x, y, np.float32(0.1)).as_text()
    text = re.sub(r"#loc\\d*[^\\n]*\\n", "", re.sub(r"loc\\([^)]*\\)", "", text))
    print(name, hashlib.sha256(text.encode()).hexdigest(), len(text))
'''


def programs(tree):
    out = subprocess.run([sys.executable, '-c', PROGRAM, *CONFIGS], cwd=tree, capture_output=True, text=True,
                         env={'TF_CPP_MIN_LOG_LEVEL': '2', 'PATH': '/usr/bin:/bin', 'HOME': str(Path.home())})
    if out.returncode != 0:
        raise SystemExit(f'{tree}: {out.stderr[-3000:]}')
    return {name: (digest, int(size)) for name, digest, size in (line.split() for line in out.stdout.splitlines())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='the revision to compare with')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='program-unchanged-') as tmp:
        export(args.base, tmp)
        before, after = programs(Path(tmp)), programs(ROOT)
    print(f'| configuration | program (characters) | (base {args.base} against the working tree)')
    print('|---|---|')
    for name in CONFIGS:
        print(f'| {name} | {"equal" if before[name] == after[name] else "DIFFERENT"} ({after[name][1]:,}) |')
    differ = [name for name in CONFIGS if before[name] != after[name]]
    print('all programs equal' if not differ else 'differ: ' + ', '.join(differ))
    return 1 if differ else 0


if __name__ == '__main__':
    sys.exit(main())
