"""Train CNN-9 on CIFAR-100 with the MHE baselines CoMHE is compared with (docs/protocol.md section 8).

--model_name baseline: no energy term at all (plain training; the train log
has the MHE release's shorter line without thom/thomf).
--model_name mhe: the full-space energy (kernel --power_s) of the unprojected
filters of every hidden layer, the first included, and of the score layer.
--model_name half_mhe: as mhe, but the hidden layers (first included) get the
half-space energy of [W, -W]; the score layer stays in full space.
Weights: hidden 1 and score 10 for powers 0, 1, 2, a0; hidden 0.1 and score 1
for a1, a2. Usage: python train.py --help
"""
import sys
from pathlib import Path

# Run as `python train.py` from this folder: the repository root holds common/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import entry  # imports no TensorFlow: --gpu_no is applied first
from common.paper.terms import mhe_terms

VARIANT = 'mhe'
DEFAULTS = dict(model_name='half_mhe', power_s='2')   # the MHE release's best CIFAR-100 row


def terms(flags):
    """The row --model_name names, with the kernel --power_s."""
    return mhe_terms(flags.model_name, flags.power_s)


if __name__ == '__main__':
    sys.exit(entry.main(__doc__, VARIANT, DEFAULTS, terms))
