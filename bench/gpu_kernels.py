"""Which ops of a graph have no GPU kernel, from TensorFlow's kernel registry.

Used where there is no GPU to place a graph on (bench/feed.py, tests/test_feed.py):
for each op needed for the fetches, and each op of the functions in the graph's
library (while loop and cond bodies), is there a kernel registered for the GPU
(or for every device) whose type constraints the op's types meet?
"""
import json

import tensorflow.compat.v1 as tf


def ops_without_gpu_kernel(graph, fetches):
    """Op types (with the attrs that rule the GPU kernels out) of the ops needed
    for `fetches`, and of every function in the graph's library, that have no
    GPU kernel for their types in TensorFlow's kernel registry. -> (missing, ops checked)"""
    from tensorflow.python.framework import kernels
    graph_def = graph.as_graph_def()
    names = sorted({f.op.name if hasattr(f, 'op') else f.name for f in fetches})
    nodes = list(tf.graph_util.extract_sub_graph(graph_def, names).node)
    for function in graph_def.library.function:
        nodes += list(function.node_def)
    registry, missing = {}, {}
    for node in nodes:
        if node.op not in registry:
            # DEFAULT: registered for every device (in host memory where it must be).
            registry[node.op] = [k for k in kernels.get_registered_kernels_for_op(node.op).kernel
                                 if k.device_type in ('GPU', 'DEFAULT')]
        if not any(_constraints_hold(k, node) for k in registry[node.op]):
            types = {c.name: tf.DType(node.attr[c.name].type).name
                     for k in registry[node.op] for c in k.constraint if c.name in node.attr}
            missing.setdefault(node.op, set()).add(json.dumps(types, sort_keys=True))
    return {op: sorted(v) for op, v in missing.items()}, len(nodes)


def _constraints_hold(kernel, node):
    for c in kernel.constraint:
        if c.name not in node.attr:      # left at its default: the kernel's own choice
            continue
        value = node.attr[c.name]
        allowed = set(c.allowed_values.list.type)
        types = list(value.list.type) if value.HasField('list') else [value.type]
        if not set(types) <= allowed:
            return False
    return True
