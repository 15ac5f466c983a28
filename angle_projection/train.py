"""Train CNN-9 on CIFAR-100 with angle-preserving-projection CoMHE (AP).

Each hidden layer has a learned projection P (--pd rows) that keeps the
angles between its neurons; before each main step P takes --iters descent
steps on that objective, and the half-space energy of the neurons projected
by P's one-step look-ahead is added to the loss. Usage: python train.py --help
"""
import sys
from pathlib import Path

# Run as `python train.py` from this folder: the repository root holds common/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # imports no TensorFlow: --gpu_no is applied first
from common.paper.terms import learned_projection

VARIANT = 'angle_projection'
DEFAULTS = dict(pd=30, pn=1, iters=1, lookahead_decay=False)   # the original release's


def terms(flags):
    """AP with this run's --pd, --iters, --lookahead_decay."""
    return learned_projection('angle', flags.pd, flags.iters, flags.lookahead_decay)


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, terms))
