"""What every train.py does: parse and check its flags, select the GPU, then
import TensorFlow (through ``common.tf1_engine.training``) and train.

It sits above ``common.run.config`` (flags) and ``common.tf1_engine.training`` (the graph and
loop), so that neither of those imports the other.
"""
import sys

from common.run import config


def main(description, variant, variant_defaults, energy_terms, argv=None, keras_terms=None):
    """A train.py's whole job: flags, then (TensorFlow or Keras imported only now) training.

    ``energy_terms(flags)`` gives the TF1 engine's hidden-layer term ``fn(W, ctx)``, or a
    dict of ``hidden_term``, ``first_term`` and ``score_term`` (see model.cnn9);
    ``keras_terms(flags)`` the Keras engine's ``common.keras_engine.terms.Terms``.
    """
    flags = config.parse(description, variant, variant_defaults, argv)
    try:
        if flags.engine == 'keras':
            from common.keras_engine.engine import train as keras_train
            return keras_train(flags, config.run_name(flags), keras_terms(flags))
        terms = energy_terms(flags)
        terms = terms if isinstance(terms, dict) else dict(hidden_term=terms)
        from common.tf1_engine.training import train
        return train(flags, config.run_name(flags), **terms)
    except KeyboardInterrupt:
        # Only before the loop starts: inside it, SIGINT checkpoints and stops cleanly.
        print('interrupted before training started; nothing to save', file=sys.stderr)
        return 130
