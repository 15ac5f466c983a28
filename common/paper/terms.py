"""What each variant adds to the loss (docs/protocol.md sections 3 and 8), said once for
both engines: a ``train.py`` returns a ``Terms``; ``common.tf1_engine.terms`` builds it as
graph ops, ``common.keras_engine.terms`` computes it with the library.

A ``Terms`` says what the first layer (conv1_0), the nine hidden layers (conv1_1 ..
conv3_2, fc6) and the score layer add to the loss. Hidden layers have one ``kind``:
``'rp'`` (fresh Gaussian projections each step), ``'angle'`` / ``'adversarial'`` (a
learned P per layer, its ``iters`` steps before each main step), ``'energy'`` (the
plain energy of W), or None (no energy term anywhere). For every kind but ``'energy'``
the first layer adds its half-space energy (kernel '2') and the score layer 10 times its
full-space energy, as the CoMHE release does.
"""
from dataclasses import dataclass

from comhe.projections import VARIANTS as LEARNED_KINDS
from comhe.projections import num_projections

from common.paper.protocol import COMHE_POWER, COMHE_SCORE_WEIGHT


@dataclass(frozen=True)
class Terms:
    """What one run adds to the loss, engine-neutral (see the module's docstring)."""
    kind: str = None             # of the hidden layers: rp | angle | adversarial | energy | None
    pd: int = 0
    pn: int = 0                  # rp: projections per layer (or N // pnd)
    pnd: int = 0
    iters: int = 0               # angle / adversarial: P steps per iteration
    lookahead_decay: bool = False
    power: str = COMHE_POWER     # energy: the kernel of every term
    half_space: bool = True      # energy: hidden and first layer in the half space
    hidden_weight: float = 1.0   # energy: the weights of docs/protocol.md section 8
    score_weight: float = COMHE_SCORE_WEIGHT

    @property
    def has_energy(self):
        return self.kind is not None

    @property
    def learned(self):
        return self.kind in LEARNED_KINDS

    def num_projections(self, n):
        return num_projections(n, self.pn, self.pnd)


def random_projection(pd, pn, pnd):
    """RP: T = pn (or N // pnd) fresh Gaussian [pd, d] projections per layer per iteration."""
    return Terms('rp', pd=pd, pn=pn, pnd=pnd)


def learned_projection(variant, pd, iters, lookahead_decay=False):
    """AP (``'angle'``) or AdvP (``'adversarial'``): a learned [pd, d] P per layer."""
    return Terms(variant, pd=pd, iters=iters, lookahead_decay=lookahead_decay)


def term_weights(power):
    """(hidden weight, score weight) of docs/protocol.md section 8: the angular s=1, 2 kernels
    are far larger near a zero angle, so the release scaled them down 10x."""
    return (0.1, 1.0) if power in ('a1', 'a2') else (1.0, 10.0)


def mhe_terms(model_name, power):
    """A comparison row of mhe/train.py: no energy (``'baseline'``), or the energy of the
    unprojected filters (``'mhe'``; ``'half_mhe'``: the hidden and first layers in the half space)."""
    if model_name == 'baseline':
        return Terms()
    hidden_weight, score_weight = term_weights(power)
    return Terms('energy', power=power, half_space=model_name == 'half_mhe',
                 hidden_weight=hidden_weight, score_weight=score_weight)
