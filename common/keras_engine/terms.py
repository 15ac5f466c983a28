"""The Keras engine's energy terms: a variant's ``common.paper.terms.Terms`` computed with
the library (``keras_comhe``), one function per kind of layer."""
from keras_comhe import projections
from keras_comhe.energy import hyperspherical_energy

from common.paper.protocol import COMHE_POWER, COMHE_SCORE_WEIGHT


def first_layer_energy(terms, W):
    """The first layer's (conv1_0) term."""
    if terms.kind == 'energy':
        return terms.hidden_weight * hyperspherical_energy(W, terms.power, terms.half_space)
    return hyperspherical_energy(W, COMHE_POWER, half_space=True)


def hidden_layer_energy(terms, W, P=None, lr=None, draws=None):
    """One hidden layer's term: ``draws [T, pd, d]`` for rp, the layer's P (after its
    steps) and the learning rate for angle / adversarial."""
    if terms.kind == 'rp':
        return projections.random_projection_term(W, draws)
    if terms.learned:
        return projections.learned_projection_term(terms.kind, W, P, lr, terms.lookahead_decay)
    return first_layer_energy(terms, W)


def score_layer_energy(terms, W):
    """The score layer's (fc7) term, in full space."""
    if terms.kind == 'energy':
        return terms.score_weight * hyperspherical_energy(W, terms.power)
    return COMHE_SCORE_WEIGHT * hyperspherical_energy(W, COMHE_POWER)
