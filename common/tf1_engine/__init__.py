"""``train.py --engine tf1`` (the default): the release's TF1 graph in ``tensorflow.compat.v1``,
its session loop and checkpoints (``training``), run through ``common.run.loop``.
"""
