"""TF1 code starts with ``tf.disable_v2_behavior()``; the energy ops, the three
CoMHE terms and the training graphs (RP's and AdvP's) must work after it and
give the same values as without it. The mode is process-wide, so each runs in a
subprocess (tests/scripts/tf1_idiom.py)."""
import json
import subprocess
import sys

import numpy as np

from conftest import ROOT, train_env

SCRIPT = ROOT / 'tests' / 'scripts' / 'tf1_idiom.py'


def run_mode(mode, weights):
    out = subprocess.run([sys.executable, str(SCRIPT), mode, str(weights)], env=train_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_same_values_with_and_without_v2_behaviour(tmp_path):
    weights = tmp_path / 'weights.npz'
    v2 = run_mode('v2', weights)      # writes the initial weights that v1 then loads
    assert weights.exists()
    v1 = run_mode('v1', weights)
    assert sorted(v1) == sorted(v2)
    assert {k for k in v2 if k.startswith('energy_')} == {
        f'energy_{p}_{s}' for p in ('0', '1', '2', 'a0', 'a1', 'a2') for s in ('full', 'half')}
    assert {'rp', 'ap', 'advp', 'train_random_projection', 'train_adversarial_projection'} <= set(v2)
    for key in v2:
        if key.startswith('train_'):
            *steps, test_acc = v2[key]
            assert len(steps) == 3 and np.isfinite(steps).all(), key
            np.testing.assert_allclose(np.array(v1[key][:-1], float), np.array(steps, float),
                                       rtol=1e-6, err_msg=key)
            assert v1[key][-1] == test_acc
        else:
            value = np.asarray(v2[key])
            assert np.isfinite(value).all() and np.abs(value).max() > 0, key
            np.testing.assert_allclose(np.asarray(v1[key]), value, rtol=1e-12, err_msg=key)
    # The graph ops give the formula's values (the NumPy reference), in both modes.
    import numpy_oracle as oracle
    W = np.random.default_rng(0).standard_normal((40, 64))
    for p in ('0', '2', 'a1'):
        np.testing.assert_allclose(v1[f'energy_{p}_half'], oracle.energy(W, p, True), rtol=1e-10)
