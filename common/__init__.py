"""Shared code of the CoMHE reproduction; the variant folders' train.py import from here.

One subpackage per concern, imports flowing down this list (tests/test_repository.py checks):
``sweep`` (many runs on Ray), ``compare`` (runs beside the authors' logs), ``tf1_engine`` and
``keras_engine`` (the two ways to train), ``run`` (flags, device, loop, run files and logs),
``data`` (CIFAR-100 and its batches), ``paper`` (the paper's math and numbers).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
