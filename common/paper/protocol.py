"""The protocol's fixed numbers (docs/protocol.md), each defined once and read by both
engines and the benchmarks: CNN-9's widths, the batch norm's decay, the label
smoothing, the first and score layers' terms of CoMHE, and (from the library, whose
math uses them too) the weight decay and the energy kernels. Plain numbers: importing
this module imports no framework."""
from comhe.energy import POWERS  # noqa: F401  (this module's API)
from comhe.projections import P_DECAY, P_DECAY_SCALE, WEIGHT_DECAY  # noqa: F401  (this module's API)

WIDTHS = (64, 128, 256, 256)   # channels of conv1_*, conv2_*, conv3_*, fc6
BN_DECAY = 0.999               # the moving averages of the batch norm, as the release's EMA
LABEL_SMOOTHING = 0.01         # t = (1 - 0.01) onehot + 0.01 / n_class
# Every CoMHE variant: the first layer's half-space energy and the score layer's full-space
# energy, times COMHE_SCORE_WEIGHT, both with the kernel COMHE_POWER (docs/protocol.md section 3).
COMHE_POWER = '2'
COMHE_SCORE_WEIGHT = 10.0
