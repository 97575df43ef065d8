#!/usr/bin/env bash
# LLaMA-Factory's own environment (.venv-train): its pins (transformers <= 5.6, torchvision, ...) clash
# with the core environment, so madef launches it as a subprocess through Dagster Pipes.
set -euo pipefail
VENV=${1:-.venv-train}
PYTHON=${PYTHON:-python3.11}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
$PYTHON -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "$TORCH_SPEC" llamafactory "torchvision<0.29" dagster-pipes
# torchvision from PyPI does not match the CPU torch build; LLaMA-Factory's text SFT does not need it.
"$VENV/bin/pip" uninstall --quiet -y torchvision
# LLaMA-Factory imports torchaudio unconditionally, but no torchaudio release matches torch 2.13: keep its
# Python package and drop its compiled extension, which text SFT never calls.
"$VENV/bin/pip" install --quiet --no-deps "torchaudio==2.11.0"
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
"$VENV/bin/python" -c "import llamafactory, torchaudio, dagster_pipes; print('training env ready:', llamafactory.__version__)"
