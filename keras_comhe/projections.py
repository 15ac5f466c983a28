"""The three CoMHE terms of one layer for Keras 3 tensors: ``comhe.projections``'s
math (docs/protocol.md section 3) with Keras variables and arrays converted to
the active backend's tensors first."""
from keras import ops

from comhe import projections
# Re-exported: this module's API is comhe.projections' for Keras tensors.
from comhe.projections import (FORMS, P_DECAY, VARIANTS, WEIGHT_DECAY, check_form,  # noqa: F401
                               checked_num_projections, descent_costs, num_projections)


def _tensors(*xs):
    return [ops.convert_to_tensor(x) for x in xs]


def random_projection_term(W, draws):
    """RP: mean over ``draws [T, pd, d]`` of the half-space energy of ``P_t W``."""
    return projections.random_projection_term(*_tensors(W, draws))


def p_objective(variant, W, P):
    """P's own loss: ``L_P`` (AP) or ``-E(P W) + decay`` (AdvP)."""
    return projections.p_objective(variant, *_tensors(W, P))


def learned_projection_term(variant, W, P, lr, lookahead_decay=False):
    """AP or AdvP term: the half-space energy of ``P' W``, ``P'`` the look-ahead at ``lr``."""
    W, P = _tensors(W, P)
    return projections.learned_projection_term(variant, W, P, lr, lookahead_decay)


def descend_projection(variant, P, W, lr, iters, form='auto'):
    """P after ``iters`` gradient steps on its own objective (see ``comhe.projections``)."""
    return projections.descend_projection(variant, *_tensors(P, W), lr, iters, form)


def descend_projections(variant, Ps, Ws, lr, iters, form='auto'):
    """``descend_projection`` of several layers, those of one shape stacked."""
    return projections.descend_projections(variant, _tensors(*Ps), _tensors(*Ws), lr, iters, form)
