"""The few array operations the math of ``comhe.energy`` and ``comhe.projections``
needs, for each array library it runs on: PyTorch tensors, JAX arrays, and
anything else through ``keras.ops`` (TensorFlow tensors under Keras).

``namespace_of(x)`` picks one from the type of ``x``; the math is written once
against that interface (keras.ops's names, plus ``eye``/``as_tensor`` that
take the device and dtype of an existing array, and ``custom_gradient``).
No library is imported here until an array of it arrives, so ``import comhe``
needs none of them.
"""
import sys


def _is_torch(x):
    torch = sys.modules.get('torch')
    return torch is not None and isinstance(x, torch.Tensor)


def _is_jax(x):
    jax = sys.modules.get('jax')
    return jax is not None and isinstance(x, jax.Array)


class TorchOps:
    """PyTorch: results keep the input's dtype and device (a float64 weight stays float64)."""

    def __init__(self):
        import torch
        self.torch = torch
        for name in ('square', 'sqrt', 'rsqrt', 'log', 'arccos', 'matmul', 'swapaxes', 'moveaxis',
                     'reshape', 'mean', 'stack', 'zeros_like', 'where'):
            setattr(self, name, getattr(torch, name))

    def sum(self, x, axis=None, keepdims=False):
        return self.torch.sum(x, dim=axis, keepdim=keepdims)

    def expand_dims(self, x, axis):
        return self.torch.unsqueeze(x, axis)

    def maximum(self, x, floor):
        return self.torch.clamp(x, min=floor)     # propagates NaN, keeps the dtype

    def clip(self, x, low, high):
        return self.torch.clamp(x, low, high)

    def eye(self, n, like):
        return self.torch.eye(n, dtype=like.dtype, device=like.device)

    def as_tensor(self, x, like):
        return self.torch.as_tensor(x, dtype=like.dtype, device=like.device)

    def stop_gradient(self, x):
        return x.detach()

    def power(self, x, exponent):
        return self.torch.pow(x, exponent)

    def fori_loop(self, lower, upper, body, init):
        carry = init
        for i in range(lower, upper):
            carry = body(i, carry)
        return carry

    def custom_gradient(self, forward, backward):
        """``f(W)`` = ``forward(W)[0]``, its gradient ``backward(W, parts, upstream)``."""
        from comhe.torch_function import custom_gradient
        return custom_gradient(forward, backward)


class JaxOps:
    """JAX (``jax.numpy``): pure, traceable under ``jit``, ``grad`` and ``vmap``."""

    def __init__(self):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        for name in ('square', 'sqrt', 'log', 'arccos', 'matmul', 'swapaxes', 'moveaxis', 'reshape', 'mean',
                     'stack', 'zeros_like', 'where', 'maximum', 'clip', 'expand_dims', 'power'):
            setattr(self, name, getattr(jnp, name))
        self.rsqrt = jax.lax.rsqrt
        self.stop_gradient = jax.lax.stop_gradient
        self.fori_loop = jax.lax.fori_loop

    def sum(self, x, axis=None, keepdims=False):
        return self.jnp.sum(x, axis=axis, keepdims=keepdims)

    def eye(self, n, like):
        return self.jnp.eye(n, dtype=like.dtype)

    def as_tensor(self, x, like):
        return self.jnp.asarray(x, dtype=like.dtype)

    def custom_gradient(self, forward, backward):
        jax = self.jax

        @jax.custom_vjp
        def f(W):
            return forward(W)[0]

        def f_forward(W):
            value, parts = forward(W)
            return value, (W, parts)

        def f_backward(residuals, upstream):
            W, parts = residuals
            return (backward(W, parts, upstream),)

        f.defvjp(f_forward, f_backward)
        return f


class KerasOps:
    """``keras.ops`` on the active Keras backend (TensorFlow tensors, NumPy arrays)."""

    def __init__(self):
        from keras import ops
        self.ops = ops
        for name in ('square', 'sqrt', 'rsqrt', 'log', 'arccos', 'matmul', 'swapaxes', 'moveaxis',
                     'reshape', 'mean', 'stack', 'zeros_like', 'where', 'maximum', 'clip', 'expand_dims',
                     'power', 'stop_gradient', 'fori_loop', 'sum'):
            setattr(self, name, getattr(ops, name))

    def eye(self, n, like):
        return self.ops.eye(n, dtype=like.dtype)

    def as_tensor(self, x, like):
        return self.ops.cast(self.ops.convert_to_tensor(x), like.dtype)

    def custom_gradient(self, forward, backward):
        @self.ops.custom_gradient
        def f(W):
            value, parts = forward(W)

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return backward(W, parts, upstream)

            return value, grad

        return f


_CACHE = {}


def namespace_of(x):
    """The operations for ``x``'s library: ``TorchOps``, ``JaxOps`` or ``KerasOps``."""
    if _is_torch(x):
        kind = TorchOps
    elif _is_jax(x):
        kind = JaxOps
    elif 'keras' in sys.modules:
        kind = KerasOps
    else:
        raise TypeError(f'expected a torch.Tensor or a jax.Array, got {type(x).__name__}: use comhe.torch '
                        'or comhe.jax, or keras_comhe under Keras')
    if kind not in _CACHE:
        _CACHE[kind] = kind()
    return _CACHE[kind]
