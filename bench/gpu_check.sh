#!/usr/bin/env bash
# The prepared GPU check: the vLLM backend and bf16 training on one GPU, in under 8 minutes, one table.
#
#   bash bench/gpu_check.sh            # on a machine with one CUDA GPU; results in $OUT or state/gpu_check
#
# What it needs, in this order of preference:
#   1. vllm importable by $PYTHON already (and LLaMA-Factory in $TRAIN_PYTHON, default .venv-train/bin/python);
#   2. the offline bundle that bench/gpu_bundle.sh builds (.gpu/parts/part*, or $MADEF_GPU_PARTS): unpacked once
#      into $MADEF_GPU_BUNDLE_DIR, vLLM and the model on PYTHONPATH, LLaMA-Factory's own transformers kept apart
#      in site-train (the vllm extra and LLaMA-Factory pin different transformers, as in the Makefile's two envs);
#   3. otherwise a separate .venv-gpu with the vllm extra from the package index (machines with internet; this
#      path has not run yet: the lent GPU machines have no network).
# Every step runs under its own time limit and leaves a row; a failing step does not stop the next.
# A machine without network that takes uploads of at most ~60 MiB: build the bundle here (bash bench/gpu_bundle.sh),
# copy each .gpu/parts/partNN (and SHA256SUMS) into one folder there, one upload per part, then run
#   MADEF_GPU_PARTS=<that folder> bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-state/gpu_check}
mkdir -p "$OUT"
RESULTS=$OUT/gpu_check_results.jsonl
rm -f "$RESULTS"
PARTS=${MADEF_GPU_PARTS:-.gpu/parts}
BUNDLE=${MADEF_GPU_BUNDLE_DIR:-/tmp/madef-gpu}
TRAIN_PYTHON=${TRAIN_PYTHON:-.venv-train/bin/python}
TRAIN_PYTHONPATH=""
CONVERT_PYTHONPATH=""
# Converted models and the training checkpoint stay out of $OUT (only results and logs are kept there).
export PYTHONUNBUFFERED=1 MADEF_STATE_DIR=${MADEF_STATE_DIR:-/tmp/madef-gpu-state}

note() { "$PYTHON" bench/gpu_check.py note --results "$RESULTS" --step "$1" --status "$2" --detail "$3"; }
# ok only when pytest ran tests and none failed (all skipped means vLLM or CUDA was missing: not ok).
pytest_status() { grep -qE "[0-9]+ passed" <<<"$1" && ! grep -qE "failed|error" <<<"$1" && echo ok || echo FAILED; }

if ! "$PYTHON" -c "import vllm" 2>/dev/null; then
  if [ -d "$BUNDLE/site-vllm" ] || ls "$PARTS"/part* >/dev/null 2>&1; then
    if [ ! -d "$BUNDLE/site-vllm" ]; then
      (cd "$PARTS" && sha256sum -c --quiet SHA256SUMS) || { echo "bundle parts do not match SHA256SUMS"; exit 1; }
      mkdir -p "$BUNDLE"
      cat "$PARTS"/part* | "$PYTHON" -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall(sys.argv[1], filter='fully_trusted')" "$BUNDLE"
    fi
    export PYTHONPATH="$BUNDLE/site-vllm:$BUNDLE/site-model:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export VLLM_USE_FLASHINFER_SAMPLER=0  # flashinfer (a JIT kernel library) is not in the bundle
    TRAIN_PYTHON=$PYTHON
    TRAIN_PYTHONPATH="$BUNDLE/site-train:$PWD"
    # The GGUF -> HF conversion runs with the bundle's newer transformers (see bench/gpu_bundle.sh).
    CONVERT_PYTHONPATH="$BUNDLE/site-convert:$BUNDLE/site-model:$PWD"
  else
    "$PYTHON" -m venv --system-site-packages .venv-gpu && .venv-gpu/bin/pip install --quiet -e ".[vllm,test]" || exit 1
    PYTHON=.venv-gpu/bin/python
    [ -x "$TRAIN_PYTHON" ] || make train-env || exit 1
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1  # models come from local folders; nothing is sent anywhere

timeout 60 "$PYTHON" bench/gpu_check.py machine --results "$RESULTS" || note machine FAILED "exit $?"
PYTHONPATH=${CONVERT_PYTHONPATH:-$PYTHONPATH} timeout 240 "$PYTHON" bench/gpu_check.py model --results "$RESULTS" \
  || note "bundled model" FAILED "exit $?"

started=$SECONDS
timeout 300 "$PYTHON" -m pytest madef_assets_tests/test_vllm_backend.py -m gpu -q -p no:cacheprovider \
  -o addopts="" -o filterwarnings=ignore::DeprecationWarning 2>&1 | tee "$OUT/pytest_gpu.log"
summary=$(grep -E "(passed|failed|error|skipped)" "$OUT/pytest_gpu.log" | tail -1)
note "pytest -m gpu (vLLM generate, option log-probs and perplexity vs transformers, one engine, release)" \
  "$(pytest_status "$summary")" "${summary:-no summary} in $((SECONDS - started)) s"

# The release step runs vLLM's Triton attention backend; pytest and throughput its default for the GPU.
MADEF_VLLM_ATTENTION_BACKEND=${MADEF_VLLM_ATTENTION_BACKEND:-TRITON_ATTN} \
  timeout 300 "$PYTHON" bench/gpu_check.py release --results "$RESULTS" --prompts 64 --max-new-tokens 32 \
  --train-python "$TRAIN_PYTHON" --train-pythonpath "$TRAIN_PYTHONPATH" || note release FAILED "exit $?"
# The transformers baseline once (about a minute on an H200), vLLM three times.
timeout 300 "$PYTHON" bench/gpu_check.py throughput --results "$RESULTS" --baseline-repeats 1 || note throughput FAILED "exit $?"

echo
"$PYTHON" bench/gpu_check.py table --results "$RESULTS" | tee "$OUT/gpu_check_table.md"
