"""The Keras 3 example of docs/keras.md, run as written (JAX backend, in its own
process): it must train, the loss falling and the validation accuracy above 0.9."""
import json
import re
import subprocess
import sys

from conftest import ROOT, subprocess_env


def keras_example():
    text = (ROOT / 'docs' / 'keras.md').read_text()
    blocks = re.findall(r'```python\n(.*?)```', text, re.S)
    (block,) = [b for b in blocks if 'model.fit(' in b]
    return block


def test_the_keras_example_of_the_docs_trains(tmp_path):
    script = tmp_path / 'example.py'
    script.write_text(keras_example() + '\nimport json\nprint("HISTORY", json.dumps(history.history))\n')
    env = dict(subprocess_env(), KERAS_BACKEND='jax', PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads(result.stdout.split('HISTORY ', 1)[1])
    assert len(history['loss']) == 10
    assert history['loss'][-1] < history['loss'][0] - 1, history   # the fit and the terms together
    assert history['val_accuracy'][-1] > 0.9, history
