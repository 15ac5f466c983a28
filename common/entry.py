"""What every train.py does: parse and check its flags, select the GPU, then import the
chosen engine (TensorFlow or Keras only now) and train.

It sits above ``common.run.config`` (flags) and the engines, so that neither of those
imports the other.
"""
import sys

from common.run import config


def main(description, variant, variant_defaults, variant_terms, argv=None):
    """A train.py's whole job: flags, then training on the engine ``--engine`` names.

    ``variant_terms(flags)`` gives the variant's ``common.paper.terms.Terms``, which
    either engine computes.
    """
    flags = config.parse(description, variant, variant_defaults, argv)
    try:
        terms = variant_terms(flags)
        if flags.engine == 'keras':
            from common.keras_engine.engine import train as keras_train
            return keras_train(flags, config.run_name(flags), terms)
        from common.tf1_engine.terms import graph_terms
        from common.tf1_engine.training import train
        return train(flags, config.run_name(flags), **graph_terms(terms))
    except KeyboardInterrupt:
        # Only before the loop starts: inside it, SIGINT checkpoints and stops cleanly.
        print('interrupted before training started; nothing to save', file=sys.stderr)
        return 130
