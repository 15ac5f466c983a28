"""What bench/step_time.py times: each configuration's graph terms, ours (the train.py
entry points), the naive ones of bench/naive.py, and the floors (our graphs with the
energies taken out)."""
from pathlib import Path

import tensorflow.compat.v1 as tf

from bench import naive
from common.run import config
from common.paper.energy import hyperspherical_energy
from common.paper.model import comhe_first_term, comhe_score_term
from common.paper.projections import random_projection_draws
from common.tf1_engine.terms import graph_terms

ROOT = Path(__file__).resolve().parent.parent


def _entry_point(variant):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'{variant}_train', ROOT / variant / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flags(variant, args, **values):
    module = _entry_point(variant)
    argv = ['--width', str(args.width), '--batch_size', str(args.batch)]
    for name, value in values.items():
        argv += [f'--{name}', str(value)]
    return module, config.build_parser('', module.VARIANT, module.DEFAULTS).parse_args(argv)


def _none(*_):
    return None


def _rp_draws(flags):
    """Floor: only the draws of RP (a negligible term, so that they run)."""
    def term(W, ctx):
        d = W.shape.as_list()[0]
        P = random_projection_draws(d, flags.pd, flags.pn, ctx.seed, ctx.global_step, ctx.index)
        return 1e-30 * tf.reduce_sum(P)
    return term


def _rp_release_draws(flags):
    """The same draws from TensorFlow's own normal sampler (the naive RP's)."""
    def term(W, ctx):
        d = W.shape.as_list()[0]
        P = naive.release_draws(d, flags.pd, flags.pn, ctx.seed, ctx.global_step, ctx.index)
        return 1e-30 * tf.reduce_sum(P)
    return term


def _rp_products(flags):
    """Floor: the draws and the products P W, forward and backward, no energy."""
    def term(W, ctx):
        d = W.shape.as_list()[0]
        P = random_projection_draws(d, flags.pd, flags.pn, ctx.seed, ctx.global_step, ctx.index)
        return 1e-30 * tf.reduce_sum(tf.matmul(tf.reshape(P, [flags.pn * flags.pd, d]), W))
    return term


def _advp_products(flags):
    """Floor of AdvP: its products with W (10 P steps, in the same form as ours,
    the look-ahead and its second derivative) with a sum of squares in place of
    every energy."""
    from common.paper import projections

    def term(W, ctx):
        P = projections.projection_variable(W.shape.as_list()[0], flags.pd)

        def squares(Q):
            return 1e-30 * tf.reduce_sum(tf.square(Q))
        objective = squares(projections._project(P, W))
        tf.add_to_collection(projections.P_OBJECTIVE_COLLECTION, objective)
        tf.add_to_collection(projections.LEARNED_COLLECTION,
                             projections.LearnedProjection(P, W, squares))
        P_ahead = P + ctx.lr * tf.gradients(objective, P)[0]
        return squares(projections._project(P_ahead, W))
    return term


class Config:
    """One graph to time: (hidden_term, first_term, score_term), P steps, label."""

    def __init__(self, key, impl, label, flags, terms, p_iters=0):
        self.key, self.impl, self.label = key, impl, label
        self.name = f'{key}/{impl}'
        self.flags, self.terms, self.p_iters = flags, terms, p_iters
        self.build_s, self.times, self.p_times = [], [], []
        self.first_run_s = None


def configs(args):
    out = []
    rp_module, rp_flags = _flags('random_projection', args, pd=args.rp_pd, pn=args.rp_pn)
    ap_module, ap_flags = _flags('angle_projection', args, pd=args.ap_pd, iters=1)
    adv_module, adv_flags = _flags('adversarial_projection', args, pd=args.ap_pd, iters=args.advp_iters)
    out.append(Config('none', 'ours', 'no energy', rp_flags, (_none, _none, _none)))
    half = (lambda W, ctx: hyperspherical_energy(W, '2', half_space=True),
            comhe_first_term, comhe_score_term)
    naive_half = (naive.hidden_half_mhe_term, naive.first_term, naive.score_term)
    out.append(Config('half_mhe', 'ours', "half-space MHE ('2')", rp_flags, half))
    out.append(Config('half_mhe', 'naive', "half-space MHE ('2')", rp_flags, naive_half))
    rp_label = f'RP (pd {rp_flags.pd}, pn {rp_flags.pn})'
    out.append(Config('rp', 'ours', rp_label, rp_flags,
                      (graph_terms(rp_module.terms(rp_flags))['hidden_term'], comhe_first_term, comhe_score_term)))
    out.append(Config('rp', 'naive', rp_label, rp_flags,
                      (naive_rp_term(rp_flags), naive.first_term, naive.score_term)))
    for key, module, flags, term in (('ap', ap_module, ap_flags, naive.angle_projection_term),
                                     ('advp', adv_module, adv_flags, naive.adversarial_projection_term)):
        label = f'{"AP" if key == "ap" else "AdvP"} (pd {flags.pd}, iters {flags.iters})'
        hidden = graph_terms(module.terms(flags))['hidden_term']
        out.append(Config(key, 'ours', label, flags, (hidden, comhe_first_term, comhe_score_term), flags.iters))
        out.append(Config(key, 'naive', label, flags,
                          (naive_learned_term(term, flags), naive.first_term, naive.score_term),
                          flags.iters))
    out.append(Config('rp_draws', 'floor', 'RP floor: draws only', rp_flags,
                      (_rp_draws(rp_flags), _none, _none)))
    out.append(Config('rp_draws_tf', 'floor', "RP draws by TensorFlow's normal sampler (naive's)",
                      rp_flags, (_rp_release_draws(rp_flags), _none, _none)))
    out.append(Config('rp_products', 'floor', 'RP floor: draws + P W products (fwd+bwd)',
                      rp_flags, (_rp_products(rp_flags), _none, _none)))
    out.append(Config('advp_products', 'floor', 'AdvP floor: its P W products only',
                      adv_flags, (_advp_products(adv_flags), _none, _none), adv_flags.iters))
    return out


def naive_rp_term(flags):
    def term(W, ctx):
        return naive.random_projection_term(W, flags.pd, flags.pn, ctx.seed, ctx.global_step,
                                            ctx.index)
    return term


def naive_learned_term(term, flags):
    return lambda W, ctx: term(W, flags.pd, ctx.lr)
