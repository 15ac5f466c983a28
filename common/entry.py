"""What every train.py does: parse and check its flags, select the GPU, then
import TensorFlow (through ``common.training``) and train.

It sits above ``common.config`` (flags) and ``common.training`` (the graph and
loop), so that neither of those imports the other.
"""
import sys

from common import config


def main(description, variant, variant_defaults, energy_terms, argv=None):
    """A train.py's whole job: flags, then (TensorFlow imported only now) training.

    ``energy_terms(flags)`` gives the hidden-layer term ``fn(W, ctx)``, or a
    dict of ``hidden_term``, ``first_term`` and ``score_term`` (see model.cnn9).
    """
    flags = config.parse(description, variant, variant_defaults, argv)
    terms = energy_terms(flags)
    terms = terms if isinstance(terms, dict) else dict(hidden_term=terms)
    try:
        from common.training import train
        return train(flags, config.run_name(flags), **terms)
    except KeyboardInterrupt:
        # Only before the loop starts: inside it, SIGINT checkpoints and stops cleanly.
        print('interrupted before training started; nothing to save', file=sys.stderr)
        return 130
