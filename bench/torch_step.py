"""What the PyTorch front's CoMHE terms cost a training step: the small CNN of
examples/torch_digits.py (batch 64 of 8x8 digits), one SGD step with RP, AP or AdvP
on its hidden layers (and half-space MHE on the first) against the same step without
a term, on the CPU or a GPU. Configurations are timed in turns, round after round,
so that a change in the machine's load touches all of them alike; the report gives
each one's median step time and its ratio to the step without a term.

    .venv/bin/python bench/torch_step.py                      # CPU; --device cuda on a GPU
    .venv/bin/python bench/torch_step.py --out bench/results/torch_step_cpu

Needs only PyTorch, NumPy and scikit-learn (and this checkout's comhe).
"""
import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.torch_digits import cnn, digits, regularisers

CONFIGS = ('none', 'rp', 'ap', 'advp')


def make_step(method, device, seed=0):
    torch.manual_seed(seed)
    model = cnn().to(device)
    regs = regularisers(model, method, seed, weight=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        for reg in regs:
            reg.take_projection_steps(optimizer)
        loss = nn.functional.cross_entropy(model(x), y) + sum(reg() for reg in regs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    return step


def time_steps(step, x, y, steps, device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    loss.item()   # waits for the device
    return (time.perf_counter() - start) / steps


def machine(device):
    cpu = platform.processor()
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if device.startswith('cuda') else None
    return {'cpu': cpu, 'cores': torch.get_num_threads(), 'gpu': gpu, 'torch': torch.__version__,
            'python': platform.python_version()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--steps', type=int, default=20, help='steps per configuration per round')
    parser.add_argument('--out', help='write OUT.json and OUT.md')
    args = parser.parse_args()

    x_train, y_train, _, _ = digits()
    x, y = x_train[:args.batch_size].to(args.device), y_train[:args.batch_size].to(args.device)
    steps = {method: make_step(method, args.device) for method in CONFIGS}
    for method in CONFIGS:            # warm-up: first calls, allocator, kernels
        time_steps(steps[method], x, y, 3, args.device)
    times = {method: [] for method in CONFIGS}
    for _ in range(args.rounds):
        for method in CONFIGS:
            times[method].append(time_steps(steps[method], x, y, args.steps, args.device))
    median = {m: statistics.median(t) for m, t in times.items()}
    rows = [(m, median[m] * 1e3, median[m] / median['none'], min(times[m]) / min(times['none'])) for m in CONFIGS]
    info = dict(machine(args.device), date=datetime.date.today().isoformat(), device=args.device,
                command='python ' + ' '.join(sys.argv), batch_size=args.batch_size, rounds=args.rounds,
                steps_per_round=args.steps)
    lines = [f"# PyTorch front: step time of the digits CNN with each CoMHE term ({args.device})", '',
             f"{info['date']}; {info['cpu']}, {info['cores']} threads; GPU: {info['gpu'] or 'none'}; "
             f"torch {info['torch']}, Python {info['python']}.", '',
             f"Command: `{info['command']}` (batch {args.batch_size}; {args.rounds} rounds of {args.steps} "
             'steps per configuration, in turns).', '',
             '| term on the hidden layers | median step (ms) | ratio to none (medians) | ratio (fastest rounds) |',
             '|---|---:|---:|---:|']
    lines += [f'| {m} | {ms:.2f} | {r:.2f}x | {rmin:.2f}x |' for m, ms, r, rmin in rows]
    lines += ['', "'none' is the same network and optimiser without a term; rp, ap and advp add half-space "
              'MHE on the first layer and the term (pd 30; RP pn 20; AP iters 1; AdvP iters 10) on the '
              'three hidden layers, P steps included.']
    print('\n'.join(lines))
    if args.out:
        Path(args.out + '.json').write_text(json.dumps(dict(info, step_ms={m: ms for m, ms, _, _ in rows},
                                                            ratio={m: r for m, _, r, _ in rows}), indent=1) + '\n')
        Path(args.out + '.md').write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
