"""The authors' published logs, kept in ``logs/authors/``, and which of them a run compares with.

    logs/authors/comhe/<variant>/<configuration>/   the CoMHE release (75,000 iterations)
    logs/authors/mhe/<configuration>/               the MHE release (42,500 iterations)

A run of ours is identified by its entry point (variant) and configuration
folder name (``pd40_pn20``, ``half_mhe_2``, ...): from the ``variant`` and
``configuration`` recorded in its ``flags_NN.json``, or else from its path
(``.../<variant>/<configuration>``). The authors' run of the same variant and
configuration, if they published one, is its reference. No TensorFlow here.
"""
import json
from pathlib import Path

from common import REPO_ROOT
from common.paper.protocol import POWERS
from common.run.runstate import OFFICIAL_DATA

AUTHORS_DIR = REPO_ROOT / 'logs' / 'authors'
VARIANTS = ('random_projection', 'angle_projection', 'adversarial_projection', 'mhe')
# Iterations of each release's schedule (docs/protocol.md sections 5 and 7).
RELEASE_ITERS = {'comhe': 75000, 'mhe': 42500}
MHE_KERNELS = POWERS

# The paper's comparison: (row label, variant, configuration), the authors' defaults.
PAPER_ROWS = ([('baseline', 'mhe', 'baseline')]
              + [(f'MHE, kernel {k}', 'mhe', f'mhe_{k}') for k in MHE_KERNELS]
              + [(f'half-space MHE, kernel {k}', 'mhe', f'half_mhe_{k}') for k in MHE_KERNELS]
              + [('CoMHE random projection', 'random_projection', 'pd40_pn20'),
                 ('CoMHE angle-preserving projection', 'angle_projection', 'pd30_pn1_iter1'),
                 ('CoMHE adversarial projection', 'adversarial_projection', 'pd30_pn1_iter10')])


def release_of(variant):
    """'mhe' for the MHE rows, 'comhe' for the three CoMHE variants."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; one of {", ".join(VARIANTS)}')
    return 'mhe' if variant == 'mhe' else 'comhe'


def authors_run_dir(variant, configuration, root=AUTHORS_DIR):
    """The folder of the authors' run of this variant and configuration, or None."""
    release = release_of(variant)
    folder = Path(root) / release / (configuration if release == 'mhe' else f'{variant}/{configuration}')
    return folder if any(folder.glob('log_t*_00.txt')) else None


def _run_folder(run_path):
    path = Path(run_path)
    return path.parent if path.is_file() else path


def _saved_flags(folder):
    """The readable flags_NN.json files of a run folder, newest first, parsed."""
    for flags_file in sorted(folder.glob('flags_*.json'), reverse=True):
        try:
            yield json.loads(flags_file.read_text())
        except (OSError, ValueError):
            continue


def identify(run_path):
    """(variant, configuration) of one of our runs (a folder or a log file), or None."""
    folder = _run_folder(run_path)
    for saved in _saved_flags(folder):
        if saved.get('variant') in VARIANTS and saved.get('configuration'):
            return saved['variant'], saved['configuration']
    parts = folder.resolve().parts
    if len(parts) >= 2 and parts[-2] in VARIANTS:
        return parts[-2], parts[-1]
    return None


def not_like_the_authors(run_path):
    """What the run's latest flags file says makes its figures unlike the authors' CIFAR-100
    CNN-9 ones: other data (--data_md5) and another --width; [] when it says nothing of either."""
    for saved in _saved_flags(_run_folder(run_path)):
        data = saved.get('data')
        other = data.get('dir') if isinstance(data, dict) and data.get('md5') != OFFICIAL_DATA else None
        return unlike_reasons(saved.get('width', 1.0), other)
    return []


def unlike_reasons(width, other_data=None):
    """Why runs of this --width, on ``other_data`` (a folder; None: CIFAR-100's official
    files) do not compare with the authors' figures; [] when they do."""
    reasons = [f"other data than CIFAR-100's official files ({other_data})"] if other_data else []
    if width != 1.0:
        reasons.append(f"width {width} (the paper's network is 1.0)")
    return reasons


def is_authors_run(run_path, root=AUTHORS_DIR):
    """Whether ``run_path`` lies inside the authors' logs."""
    return Path(root).resolve() in Path(run_path).resolve().parents


def reference_for(run_path, root=AUTHORS_DIR):
    """The authors' run matching ``run_path``, or None if they published none (or it is theirs)."""
    path = Path(run_path).resolve()
    if is_authors_run(path, root):
        return None
    found = identify(path)
    return authors_run_dir(*found, root=root) if found else None
