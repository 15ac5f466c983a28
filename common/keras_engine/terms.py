"""The energy terms of a run of the Keras engine, per docs/protocol.md sections 3 and 8,
in ``keras_comhe``'s math: what each train.py's ``keras_terms(flags)`` returns.

A ``Terms`` says what the first layer (conv1_0), the nine hidden layers (conv1_1 ..
conv3_2, fc6) and the score layer add to the loss. Hidden layers have one ``kind``:
``'rp'`` (fresh Gaussian projections each step), ``'angle'`` / ``'adversarial'`` (a
learned P per layer, its ``iters`` steps before each main step), ``'energy'`` (the
plain energy of W), or None.
"""
from dataclasses import dataclass

from keras_comhe import projections
from keras_comhe.energy import hyperspherical_energy


@dataclass(frozen=True)
class Terms:
    kind: str = None             # of the hidden layers: rp | angle | adversarial | energy | None
    pd: int = 0
    pn: int = 0                  # rp: projections per layer (or N // pnd)
    pnd: int = 0
    iters: int = 0               # angle / adversarial: P steps per iteration
    lookahead_decay: bool = False
    power: str = '2'             # energy: the kernel of every term
    half_space: bool = True      # energy: hidden and first layer in the half space
    hidden_weight: float = 1.0   # energy: the weights of docs/protocol.md section 8
    score_weight: float = 10.0

    @property
    def has_energy(self):
        return self.kind is not None

    @property
    def learned(self):
        return self.kind in projections.VARIANTS

    def num_projections(self, n):
        return projections.num_projections(n, self.pn, self.pnd)

    def first(self, W):
        if self.kind == 'energy':
            return self.hidden_weight * hyperspherical_energy(W, self.power, self.half_space)
        return hyperspherical_energy(W, '2', half_space=True)

    def hidden(self, W, P=None, lr=None, draws=None):
        """The term of one hidden layer: ``draws [T, pd, d]`` for rp, the layer's P
        (after its steps) and the learning rate for angle / adversarial."""
        if self.kind == 'rp':
            return projections.random_projection_term(W, draws)
        if self.learned:
            return projections.learned_projection_term(self.kind, W, P, lr, self.lookahead_decay)
        return self.first(W)

    def score(self, W):
        if self.kind == 'energy':
            return self.score_weight * hyperspherical_energy(W, self.power)
        return 10.0 * hyperspherical_energy(W, '2')


def random_projection(pd, pn, pnd):
    return Terms('rp', pd=pd, pn=pn, pnd=pnd)


def learned_projection(variant, pd, iters, lookahead_decay=False):
    return Terms(variant, pd=pd, iters=iters, lookahead_decay=lookahead_decay)


def mhe_rows(model_name, power, hidden_weight, score_weight):
    """The comparison rows: no energy (baseline), or the energy of the unprojected filters."""
    if model_name == 'baseline':
        return Terms()
    return Terms('energy', power=power, half_space=model_name == 'half_mhe',
                 hidden_weight=hidden_weight, score_weight=score_weight)
