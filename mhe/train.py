"""Train CNN-9 on CIFAR-100 with the MHE baselines CoMHE is compared with (docs/protocol.md section 8).

--model_name baseline: no energy term at all (plain training; the train log
has the MHE release's shorter line without thom/thomf).
--model_name mhe: the full-space energy (kernel --power_s) of the unprojected
filters of every hidden layer, the first included, and of the score layer.
--model_name half_mhe: as mhe, but the hidden layers (first included) get the
half-space energy of [W, -W]; the score layer stays in full space.
Weights: hidden 1 and score 10 for powers 0, 1, 2, a0; hidden 0.1 and score 1
for a1, a2. Usage: python train.py --help
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # noqa: E402  (no TensorFlow yet: --gpu_no comes first)

VARIANT = 'mhe'
DEFAULTS = dict(model_name='half_mhe', power_s='2')   # the MHE release's best CIFAR-100 row


def term_weights(power):
    """(hidden weight, score weight) of docs/protocol.md section 8: the angular s=1, 2 kernels
    are far larger near a zero angle, so the release scaled them down 10x."""
    return (0.1, 1.0) if power in ('a1', 'a2') else (1.0, 10.0)


def energy_terms(flags):
    """The hidden, first-layer and score-layer terms for ``--model_name``/``--power_s``."""
    if flags.model_name == 'baseline':
        # cnn9 calls every hook; a hook returning None adds no term to that layer.
        return dict(hidden_term=lambda W, ctx: None, first_term=lambda W: None,
                    score_term=lambda W: None)
    from common.paper.energy import hyperspherical_energy
    power, half = flags.power_s, flags.model_name == 'half_mhe'
    hidden_w, score_w = term_weights(power)

    def first_term(W):
        return hidden_w * hyperspherical_energy(W, power, half_space=half)

    def hidden_term(W, ctx):
        return first_term(W)

    def score_term(W):
        return score_w * hyperspherical_energy(W, power)

    return dict(hidden_term=hidden_term, first_term=first_term, score_term=score_term)


def keras_terms(flags):
    """The same terms for --engine keras."""
    from common.keras_engine.terms import mhe_rows
    return mhe_rows(flags.model_name, flags.power_s, *term_weights(flags.power_s))


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, energy_terms, keras_terms=keras_terms))
