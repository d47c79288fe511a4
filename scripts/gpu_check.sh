#!/usr/bin/env bash
# GPU check of the diffusers adapter (see scripts/gpu_check.py). Exits 0 with a message where there is
# no CUDA device or no local model; pass --tiny to check CUDA code paths with a tiny random SD pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
exec "$PY" scripts/gpu_check.py "$@"
