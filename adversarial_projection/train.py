"""Train CNN-9 on CIFAR-100 with adversarial-projection CoMHE (AdvP).

Each hidden layer has a learned projection P (--pd rows) that maximises the
projected energy; before each main step P takes --iters steps on that
objective, and the half-space energy of the neurons projected by P's one-step
look-ahead is added to the loss. Usage: python train.py --help
"""
import sys
from pathlib import Path

# Run as `python train.py` from this folder: the repository root holds common/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # imports no TensorFlow: --gpu_no is applied first
from common.paper.terms import learned_projection

VARIANT = 'adversarial_projection'
DEFAULTS = dict(pd=30, pn=1, iters=10, random_seed=3456)   # the original release's


def terms(flags):
    """AdvP with this run's --pd, --iters."""
    return learned_projection('adversarial', flags.pd, flags.iters)


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, terms))
