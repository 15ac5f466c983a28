"""The run's length, learning-rate schedule and network widths: plain arithmetic
that the flags (``common.run.config``) and the training graph (``common.tf1_engine.training``)
both use, so it lives below both of them."""

from common.paper.protocol import WIDTHS

FULL_ITERS = 75000
LR_STEPS = (30000, 50000, 65000)   # at FULL_ITERS; scaled for shorter runs


def learning_rate(iteration, base_lr, max_iters):
    """lr at an iteration: base_lr, x0.1 at each (scaled) step of LR_STEPS."""
    steps = sum(iteration >= round(s * max_iters / FULL_ITERS) for s in LR_STEPS)
    return base_lr * 0.1 ** steps


def scaled_widths(width, base=WIDTHS):
    """CNN-9's channels per stage at a channel multiplier (1.0: the paper's)."""
    return tuple(max(2, int(round(w * width))) for w in base)
