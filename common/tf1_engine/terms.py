"""The TF1 engine's energy terms: a variant's ``common.paper.terms.Terms`` as the hooks of
``common.paper.model.cnn9`` (``hidden_term(W, ctx)``, ``first_term(W)``, ``score_term(W)``;
a hook returning None adds nothing to its layer)."""
from common.paper import projections
from common.paper.energy import hyperspherical_energy
from common.paper.model import comhe_first_term, comhe_score_term


def graph_terms(terms):
    """``dict(hidden_term=, first_term=, score_term=)`` for ``build_graph``/``train``."""
    if terms.kind is None:
        return dict(hidden_term=lambda W, ctx: None, first_term=lambda W: None, score_term=lambda W: None)
    if terms.kind == 'energy':
        def first_term(W):
            return terms.hidden_weight * hyperspherical_energy(W, terms.power, half_space=terms.half_space)

        def score_term(W):
            return terms.score_weight * hyperspherical_energy(W, terms.power)
        return dict(hidden_term=lambda W, ctx: first_term(W), first_term=first_term, score_term=score_term)
    if terms.kind == 'rp':
        def hidden_term(W, ctx):
            T = terms.num_projections(W.shape[1])
            return projections.random_projection_term(W, terms.pd, T, ctx.seed, ctx.global_step, ctx.index)
    elif terms.learned:
        def hidden_term(W, ctx):
            return projections.learned_projection_term(W, terms.pd, ctx.lr, terms.kind, terms.iters,
                                                       terms.lookahead_decay)
    else:
        raise ValueError(f'no TF1 term for the kind {terms.kind!r}')
    return dict(hidden_term=hidden_term, first_term=comhe_first_term, score_term=comhe_score_term)
