"""The Keras engine's TensorBoard scalars, written by tensorboardX (no TensorFlow needed,
so the JAX and PyTorch backends write them too)."""
import sys


class Scalars:
    """``scalars(iteration, name=value, ...)``: one event per call, flushed at once (a
    killed run keeps what it logged). The file starts with a session-start event at the
    run's first iteration (tensorboardX's ``purge_step``), so that TensorBoard drops what
    a killed run wrote after its checkpoint, as the TF1 engine's writer does."""

    def __init__(self, folder, start):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:   # a machine with the library's dependencies only: the logs suffice
            self.writer = None
            print('note: tensorboardX is not installed, so no TensorBoard events are written (the '
                  'logs are); pip install tensorboardX', file=sys.stderr)
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(folder), purge_step=start, filename_suffix='.keras')

    def __call__(self, iteration, **values):
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, float(value), iteration)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
