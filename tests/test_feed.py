"""Keeping a GPU fed (issue 13): TrainBatches gives train_batch's arrays bit for
bit; AP/AdvP's P steps and main step in one session call give the values of
the two-call loop; the test pass in calls of 1,000 gives the accuracy of
batches of 100; and bench/feed.py --quick runs (one call per iteration, the
old loop's logs, a GPU kernel for every op of the training graphs)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from common.data import pipeline
from common.tf1_engine import training
from common.paper.projections import PROJECTION_COLLECTION, learned_projection_term
from conftest import ROOT, bench_env, entry_flags, graph_terms_of, load_entry_point


def random_set(n, shape=(32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 100, n)


# ------------------------------------------------------------------ TrainBatches

@pytest.mark.parametrize('n,batch_size,shape,seed', [(300, 64, (32, 32, 3), 345),
                                                     (300, 7, (32, 32, 3), 7),
                                                     (40, 3, (12, 20, 1), 1)])
def test_train_batches_are_train_batch_bit_for_bit(n, batch_size, shape, seed):
    images, labels = random_set(n, shape, seed)
    batches = pipeline.TrainBatches(images, labels, seed, batch_size)
    per_epoch = pipeline.batches_per_epoch(n, batch_size)
    for it in [*range(2 * per_epoch + 2), 7 * per_epoch + 1, 3]:   # epochs in and out of order
        x, y = batches(it)
        want_x, want_y = pipeline.train_batch(images, labels, seed, it, batch_size)
        assert x.shape == want_x.shape and x.dtype == np.uint8 and x.flags.c_contiguous
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)
    # Flipped and unflipped images both occur (the test covers both paths).
    flips = pipeline.augment_draws(np.random.default_rng([seed, 1, 0]), batch_size)[2]
    assert 0 < flips.sum() < batch_size or batch_size < 8


def test_train_batches_make_each_epoch_permutation_once(monkeypatch):
    images, labels = random_set(100)
    made = []
    permutation = pipeline.epoch_permutation
    monkeypatch.setattr(pipeline, 'epoch_permutation',
                        lambda n, seed, epoch: made.append(epoch) or permutation(n, seed, epoch))
    batches = pipeline.TrainBatches(images, labels, 345, 10)
    for it in range(25):
        batches(it)
    assert made == [0, 1, 2]


def test_train_batches_need_a_batch_that_fits():
    with pytest.raises(ValueError, match='does not fit'):
        pipeline.TrainBatches(*random_set(10), 345, 11)


# ------------------------------------------------------------------ one session call

def two_graphs(variant, iters):
    """The entry point's graph (P steps in the training op) and the graph of the
    two-call loop (terms that read P), started from the same variable values."""
    module = load_entry_point(variant)
    flags = entry_flags(module, '--width', '0.125', '--batch_size', '8', '--pd', '5',
                        '--iters', str(iters))
    kind = 'angle' if variant == 'angle_projection' else 'adversarial'
    built = []
    for term in (graph_terms_of(module, flags)['hidden_term'],
                 lambda W, ctx: learned_projection_term(W, flags.pd, ctx.lr, kind, 0)):
        graph = tf.Graph()
        with graph.as_default():
            g = training.build_graph(flags, term)
            init = tf.global_variables_initializer()
            variables = {v.op.name: v for v in tf.global_variables()}
        sess = tf.Session(graph=graph, config=training.session_config())
        sess.run(init)
        built.append((graph, g, sess, variables))
    (graph, _, sess, variables), (graph_b, _, sess_b, variables_b) = built
    assert sorted(variables) == sorted(variables_b)
    # One session call each way: every distinct call costs TensorFlow a new executor.
    values = sess.run(variables)
    with graph_b.as_default():
        sess_b.run(tf.group(*[v.assign(values[name]) for name, v in variables_b.items()]))
    return built


@pytest.mark.parametrize('variant', ['angle_projection', 'adversarial_projection'])
def test_one_session_call_gives_the_values_of_the_two_call_loop(variant, monkeypatch):
    # With grappler, as a user's run: the P steps' order inside the one call is what is tested.
    monkeypatch.setenv('COMHE_GRAPPLER', '1')
    (graph, g, sess, variables), (graph_b, g_b, sess_b, variables_b) = two_graphs(variant, 3)
    assert g.p_steps_in_train_op and not g_b.p_steps_in_train_op
    one, two = training.SessionCalls(sess, g), training.SessionCalls(sess_b, g_b)
    assert one.p_steps is None and two.p_steps is not None
    P_names = sorted(v.op.name for v in graph.get_collection(PROJECTION_COLLECTION))
    assert len(P_names) == 9
    rng = np.random.default_rng(4)
    for it in range(4):
        x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 100, 8)
        got, want = one.train(x, y, 0.1), two.train(x, y, 0.1)
        assert all(np.isfinite(got)) and got[2] > 0
        np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=f'iteration {it}')
    # P, W, momentum and BN averages alike after the four iterations.
    after, after_b = sess.run(variables), sess_b.run(variables_b)
    for name in sorted(variables):
        np.testing.assert_allclose(after[name], after_b[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # The checkpoint's finite check fetches thom: that computes the next P steps
    # but must not take them.
    before = sess.run([variables[n] for n in P_names])
    sess.run([g.weights_finite, g.reg, g.thom, g.thomf], {g.lr: 0.1})
    for a, b in zip(before, sess.run([variables[n] for n in P_names])):
        np.testing.assert_array_equal(a, b)
    sess.close()
    sess_b.close()


def test_mixed_learned_projections_are_refused():
    module = load_entry_point('adversarial_projection')
    flags = entry_flags(module, '--width', '0.125', '--pd', '5', '--iters', '2')
    terms = iter([2, 0] * 10)

    def term(W, ctx):
        return learned_projection_term(W, flags.pd, ctx.lr, 'adversarial', next(terms))
    with tf.Graph().as_default(), pytest.raises(ValueError, match='same iters'):
        training.build_graph(flags, term)


# ------------------------------------------------------------------ evaluation

def test_evaluation_in_calls_of_1000_gives_the_accuracy_of_batches_of_100():
    from bench import legacy
    module = load_entry_point('mhe')
    flags = entry_flags(module, '--width', '0.125', '--model_name', 'baseline')
    graph = tf.Graph()
    with graph.as_default():
        g = training.build_graph(flags, **graph_terms_of(module, flags))
        init = tf.global_variables_initializer()
    sess = tf.Session(graph=graph, config=training.session_config())
    sess.run(init)
    images, labels = random_set(2500, seed=5)
    logits = np.concatenate([sess.run(g.model.logits, {g.images: x, g.is_training: False})
                             for x, _ in pipeline.test_batches(images, labels, 100)])
    # Half the labels are the network's own answers, so the accuracy is about 1/2.
    labels[:1250] = logits[:1250].argmax(1)
    calls = training.SessionCalls(sess, g)
    assert training.EVAL_BATCH == 1000
    acc = training.evaluate(calls, images, labels)
    assert 0.45 < acc < 0.6
    assert acc == pytest.approx(legacy.evaluate(calls, images, labels), abs=1e-9)
    big = sess.run(g.model.logits, {g.images: images[:1000], g.is_training: False})
    # (Untrained, the test-mode logits are huge: float32 rounding relative to the largest.)
    np.testing.assert_allclose(big, logits[:1000], rtol=1e-4, atol=1e-5 * np.abs(logits).max())
    sess.close()


def test_training_refuses_images_that_are_not_uint8(tmp_path):
    module = load_entry_point('random_projection')
    flags = entry_flags(module, '--log_dir', str(tmp_path))
    images, labels = random_set(200)
    with pytest.raises(ValueError, match='float32, expected uint8'):
        training.train(flags, 'x', **graph_terms_of(module, flags),
                       dataset=(images.astype(np.float32), labels, images, labels))


# ------------------------------------------------------------------ the benchmark

def test_quick_feed_benchmark(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / 'bench' / 'feed.py'), '--quick', '--json',
                          str(tmp_path / 'feed.json')], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=bench_env())
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / 'feed.json').read_text())
    assert result['quick'] is True and result['machine']['cpu_count'] >= 1
    rows = result['pipeline']['rows']
    for name in ('old', 'new'):
        assert rows[name]['images_per_s'] > 0 and rows[name]['handover_ms']['median'] > 0
    ap = result['loop']['ap']
    assert ap['old']['calls_per_iteration'] == 2 and ap['new']['calls_per_iteration'] == 1
    assert ap['logs']['same_count'] and ap['logs']['lines'] >= 1 and ap['logs']['max_rel_diff'] < 1e-4
    assert 0 < ap['new']['host_ms_per_iteration'] < 1000
    assert result['test_pass']['same_accuracy']
    assert result['test_pass']['old']['calls'] == 3 and result['test_pass']['new']['calls'] == 1
    assert result['gpu_kernels']['advp']['ops_checked'] > 1000
    assert result['gpu_kernels']['advp']['op_types_without_gpu_kernel'] == {}
    what = [t['what'] for t in result['targets']]
    assert any('images/s' in w for w in what) and any('session calls per iteration' in w for w in what)
    assert '| input pipeline: images/s through the prefetcher |' in (tmp_path / 'feed.md').read_text()


@pytest.mark.parametrize('key', ['rp', 'ap', 'half_mhe'])
def test_every_op_of_the_training_graph_has_a_gpu_kernel(key):
    from bench import feed, feed_measure
    args = feed.parse(['--quick'])
    args.kernel_variants = [key]
    result = feed_measure.gpu_kernels(args, lambda message: None)[key]
    assert result['ops_checked'] > 1000 and result['op_types_without_gpu_kernel'] == {}


def test_kernel_check_finds_cpu_only_ops():
    from bench.gpu_kernels import ops_without_gpu_kernel
    graph = tf.Graph()
    with graph.as_default():
        text = tf.placeholder(tf.string, [None])
        number = tf.strings.to_number(text)          # CPU kernel only
        x = tf.placeholder(tf.float32, [3])
        total = tf.reduce_sum(tf.square(x))
    missing, checked = ops_without_gpu_kernel(graph, [number, total])
    assert set(missing) == {'StringToNumber'} and checked >= 5
