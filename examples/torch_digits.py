"""CoMHE in a plain PyTorch CNN: scikit-learn's 8x8 handwritten digits, a few hundred
SGD steps on the CPU, with the RP or AdvP term of ``comhe.torch`` added to the loss.

    pip install ".[torch]" scikit-learn      # from the repository's root
    python examples/torch_digits.py --method advp
    python examples/torch_digits.py --method rp --steps 300

It prints the loss and each regularised layer's energy (its term: the first
layer's half-space MHE, the hidden layers' projected energy), each averaged over
``--every`` steps, then the test accuracy. As in the paper, the first layer gets plain half-space MHE, the hidden
layers the CoMHE term, the score layer none.
"""
import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import comhe.torch as comhe


def digits(seed=0):
    """(x_train, y_train, x_test, y_test): 1,797 images [1, 8, 8] in [0, 1], 360 held out."""
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return x[360:], y[360:], x[:360], y[:360]


def cnn():
    """conv 16 -> conv 32 -> pool -> conv 32 -> pool -> fc 64 -> fc 10, BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


FIRST, HIDDEN = ['0'], ['3', '7', '12']     # module names in the Sequential above


def regularisers(model, method, seed, weight):
    """The terms added to the loss: half-space MHE on the first layer, CoMHE on the hidden ones."""
    if method == 'none':
        return []
    hidden = {'mhe': lambda: comhe.MHE(model, half_space=True, weight=weight, layers=HIDDEN),
              'rp': lambda: comhe.RandomProjection(model, pd=30, pn=20, weight=weight, seed=seed,
                                                          layers=HIDDEN),
              'ap': lambda: comhe.AngleProjection(model, pd=30, iters=1, weight=weight, seed=seed,
                                                          layers=HIDDEN),
              'advp': lambda: comhe.AdversarialProjection(model, pd=30, iters=10, weight=weight,
                                                                  seed=seed, layers=HIDDEN)}
    return [comhe.MHE(model, half_space=True, layers=FIRST), hidden[method]()]


def layer_energies(regs):
    """Each regularised layer's term of the last step: its energy as its regulariser
    measures it (first layer: half-space MHE; hidden layers: the projected energy)."""
    return [t.item() for reg in regs for t in reg.last_terms]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--method', choices=('none', 'mhe', 'rp', 'ap', 'advp'), default='advp')
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=0.05)
    parser.add_argument('--weight', type=float, default=3.0,
                        help="the hidden layers' CoMHE weight (large enough that a few hundred steps show their "
                             'energies falling)')
    parser.add_argument('--every', type=int, default=50, help='print every this many steps')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = (t.to(args.device) for t in digits(args.seed))
    model = cnn().to(args.device)
    regs = regularisers(model, args.method, args.seed, args.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    batches = torch.Generator().manual_seed(args.seed)
    names = ' '.join(f'E[{name}]' for reg in regs for name in reg.layer_names)
    print(f'method {args.method} on {args.device}; mean over {args.every} steps of the loss '
          f'(cross-entropy) and of each layer\'s energy {names}')
    losses, energies = [], []
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(y_train), (args.batch_size,), generator=batches).to(args.device)
        for reg in regs:
            reg.take_projection_steps(optimizer)     # AP/AdvP: P's steps at the current lr
        fit = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        loss = fit + sum(reg() for reg in regs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(fit.item())
        energies.append(layer_energies(regs))
        if step % args.every == 0:
            print(f'step {step:4d}  loss {np.mean(losses[-args.every:]):.4f}  energies '
                  + ' '.join(f'{e:.4f}' for e in np.mean(energies[-args.every:], axis=0)))
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f'test accuracy {accuracy:.4f}')


if __name__ == '__main__':
    main()
