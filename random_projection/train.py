"""Train CNN-9 on CIFAR-100 with random-projection CoMHE (RP).

Each hidden layer's neurons are projected to --pd dimensions by T fresh
Gaussian matrices every iteration (T = --pn, or N // --pnd), and the mean of
their half-space energies is added to the loss. Usage: python train.py --help
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # noqa: E402  (no TensorFlow yet: --gpu_no comes first)

VARIANT = 'random_projection'
DEFAULTS = dict(pd=40, pn=20, pnd=0)   # the original release's


def comhe_term(flags):
    """The RP term of one hidden layer's filters W [d, N]."""
    from common.paper.projections import num_projections, random_projection_term

    def term(W, ctx):
        T = num_projections(W.shape[1], flags.pn, flags.pnd)
        return random_projection_term(W, flags.pd, T, ctx.seed, ctx.global_step, ctx.index)
    return term


def keras_terms(flags):
    """The same term for --engine keras."""
    from common.keras_engine.terms import random_projection
    return random_projection(flags.pd, flags.pn, flags.pnd)


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, comhe_term, keras_terms=keras_terms))
