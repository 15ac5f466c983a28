"""The PyTorch custom gradient of ``comhe.namespaces.TorchOps``: one
``torch.autograd.Function`` defined at import, so that ``torch.compile`` traces
through it (Dynamo cannot trace a class defined while it traces)."""
import torch

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
    def backward(ctx, upstream):
        (W,) = ctx.saved_tensors
        return FUNCTIONS[ctx.index][1](W, ctx.parts, upstream), None


def custom_gradient(forward, backward):
    """``f(W) = forward(W)[0]`` whose gradient is ``backward(W, parts, upstream)``."""
    FUNCTIONS.append((forward, backward))
    index = len(FUNCTIONS) - 1
    return lambda W: CustomGradient.apply(W, index)
