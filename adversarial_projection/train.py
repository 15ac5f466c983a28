"""Train CNN-9 on CIFAR-100 with adversarial-projection CoMHE (AdvP).

Each hidden layer has a learned projection P (--pd rows) that maximises the
projected energy; before each main step P takes --iters steps on that
objective, and the half-space energy of the neurons projected by P's one-step
look-ahead is added to the loss. Usage: python train.py --help
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # noqa: E402  (no TensorFlow yet: --gpu_no comes first)

VARIANT = 'adversarial_projection'
DEFAULTS = dict(pd=30, pn=1, iters=10, random_seed=3456)   # the original release's


def comhe_term(flags):
    """The AdvP term of one hidden layer's filters W [d, N]."""
    from common.paper.projections import learned_projection_term
    return lambda W, ctx: learned_projection_term(W, flags.pd, ctx.lr, 'adversarial',
                                                     flags.iters)


def keras_terms(flags):
    """The same term for --engine keras."""
    from common.keras_engine.terms import learned_projection
    return learned_projection('adversarial', flags.pd, flags.iters)


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, comhe_term, keras_terms=keras_terms))
