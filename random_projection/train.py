"""Train CNN-9 on CIFAR-100 with random-projection CoMHE (RP).

Each hidden layer's neurons are projected to --pd dimensions by T fresh
Gaussian matrices every iteration (T = --pn, or N // --pnd), and the mean of
their half-space energies is added to the loss. Usage: python train.py --help
"""
import sys
from pathlib import Path

# Run as `python train.py` from this folder: the repository root holds common/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # imports no TensorFlow: --gpu_no is applied first
from common.paper.terms import random_projection

VARIANT = 'random_projection'
DEFAULTS = dict(pd=40, pn=20, pnd=0)   # the original release's


def terms(flags):
    """RP with this run's --pd, --pn, --pnd."""
    return random_projection(flags.pd, flags.pn, flags.pnd)


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, terms))
