"""The energies for Keras 3 kernels: ``comhe.energy``'s math (docs/protocol.md
section 1) on the active Keras backend's tensors, with Keras's layout (a
Dense or Conv kernel's last axis holds the neurons)."""
from keras import ops

from comhe import energy
from comhe.energy import POWERS, cosine_vjp, energy_gradient, pairwise_cosine  # noqa: F401  (this module's API)


def filters_as_matrix(kernel):
    """A Dense or Conv kernel ``[..., N]`` (last axis: the neurons) as ``W [d, N]``."""
    return energy.neurons_as_columns(ops.convert_to_tensor(kernel), -1)


def hyperspherical_energy(W, power='2', half_space=False):
    """Energy of the columns of W: a scalar for ``[d, N]``, ``[T]`` for ``[T, d, N]``."""
    return energy.hyperspherical_energy(ops.convert_to_tensor(W), power, half_space)
