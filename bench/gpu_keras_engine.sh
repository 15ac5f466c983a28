#!/bin/bash
# The Keras engine's GPU checks in one call of the device tool (docs/keras_engine.md,
# "On a GPU"): on a machine with JAX and CUDA but no TensorFlow.
#
#  1. bench/keras_engine_step.py: the compiled step of every configuration (no energy,
#     half-space MHE, RP, AP, AdvP) and the test pass, full width, batch 128; and the real loop, its values fetched a
#     step later (the engine's way on a GPU) and each step waited for, against bare steps;
#  2. bench/keras_engine_full_run.py: one complete RP run, 75,000 iterations at full
#     width, batch 128, on a synthetic CIFAR-100-format set of 50,000 images, stopped
#     (SIGTERM, checkpointed) if not done when the script has run TOTAL - 20 s (its
#     synthetic set's writing counted).
#
# What travels: Keras and the two small packages it needs that the device image lacks,
# as wheels in .whl/ (ignored by git), fetched here once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 namex optree          # 2.9 MB: keras, namex, optree 0.20.0
# then: run(command="bash bench/gpu_keras_engine.sh", carry=[".whl"], timeout_s=600).
# Everything comes back from $OUT, 8 files (the device tool's limit): versions.txt,
# keras_engine_step.{md,json}, full_run.{md,json}, run.txt, log_train_00.txt, log_test_00.txt.
#
# Elsewhere (a GPU of your own, Keras installed), the same: OUT=somewhere bash bench/gpu_keras_engine.sh
# A smoke test of the script on a CPU (minutes):
#   PYTHON=.venv/bin/python STEP_ARGS=--quick RUN_ARGS=--quick OUT=/tmp/gpu bash bench/gpu_keras_engine.sh
set -u
OUT=${OUT:-bench/results/gpu_run}
PYTHON=${PYTHON:-python3}
TOTAL=${TOTAL:-550}             # s for the whole script: inside the device tool's 600 s call
BENCH_LIMIT=${BENCH_LIMIT:-150}
STEP_ARGS=${STEP_ARGS:---steps 50 --rounds 3 --loop 1000}
RUN_ARGS=${RUN_ARGS:-}
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
"$PYTHON" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" \
    > "$OUT/versions.txt" 2>&1
nvidia-smi -L >> "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

# SIGINT at the limit: the benchmark reports the rounds it took (-k: killed 15 s later).
timeout -k 15 -s INT "$BENCH_LIMIT" "$PYTHON" bench/keras_engine_step.py $STEP_ARGS \
    --json "$OUT/keras_engine_step.json" > "$OUT/keras_engine_step.md"   # its progress: on stderr
echo "step benchmark: exit $?"; cat "$OUT/keras_engine_step.md"

# What is left of TOTAL, less 20 s for the run's last checkpoint and the report.
RUN_LIMIT=${RUN_LIMIT:-$((TOTAL - SECONDS - 20))}
echo "full run: stopped at $RUN_LIMIT s if not done"
"$PYTHON" bench/keras_engine_full_run.py --out "$OUT" --timeout "$RUN_LIMIT" $RUN_ARGS
echo "full run: exit $?"
