"""``train.py --engine tf1`` (the default): a variant's terms as the graph's hooks (``terms``),
the release's TF1 graph in ``tensorflow.compat.v1``, its session calls and checkpoints
(``training``), run through ``common.run.loop``.
"""
