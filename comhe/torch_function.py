"""The PyTorch custom gradient of ``comhe.namespaces.TorchOps``: one
``torch.autograd.Function`` defined at import, so that ``torch.compile`` traces
through it (Dynamo cannot trace a class defined while it traces)."""
import torch
from torch.autograd.function import once_differentiable

# index -> (forward(W) -> (value, parts), backward(W, parts, upstream) -> dW)
FUNCTIONS = []


class CustomGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W, index):
        value, parts = FUNCTIONS[index][0](W)
        ctx.index = index
        ctx.parts = parts
        ctx.save_for_backward(W)
        return value

    @staticmethod
    @once_differentiable   # what backward uses was computed without a graph: no second order
    def backward(ctx, upstream):
        (W,) = ctx.saved_tensors
        # In the weights' own precision, as the forward pass (a loss.backward() called
        # under autocast would otherwise run it in half precision).
        with torch.autocast(W.device.type, enabled=False):
            return FUNCTIONS[ctx.index][1](W, ctx.parts, upstream.to(W.dtype)), None


def custom_gradient(forward, backward):
    """``f(W) = forward(W)[0]`` whose gradient is ``backward(W, parts, upstream)``."""
    FUNCTIONS.append((forward, backward))
    index = len(FUNCTIONS) - 1
    return lambda W: CustomGradient.apply(W, index)
