#!/usr/bin/env bash
# One device session: GPU tests, the diffusers adapter throughput checks (SD and SD3 shapes), and CUDA
# mixture timings.
# Usage on a CUDA machine from the repo root: bash scripts/gpu_session.sh   (wheels in .whl/ if needed)
set -u
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
echo "== pytest -m gpu"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tail -25
echo "== adapter throughput (tiny SD pipeline)"
python3 scripts/gpu_check.py --tiny --steps 20 --batch 8 2>&1 | tail -15
echo "== SD3-shaped random transformer (bfloat16): adapter vs bare scheduler.step loop"
python3 scripts/gpu_sd3_check.py --layers 4 --size 64 --steps 20 --batch 8 2>&1 | tail -6
echo "== CLI sweep on an SD-1.5-shaped random pipeline (float16, CUDA): kill, resume, compare"
SD=/tmp/sd_shaped; rm -rf "$SD" /tmp/sweep_full /tmp/sweep_resumed
python3 scripts/sd_shaped_pipeline.py "$SD" | tail -1
SWEEP=(python3 -m critwin.cli sweep --model "$SD" --prompt-embeds "$SD/embeds.safetensors" --guidance 1
       --device cuda --dtype float16 --steps 25 --n 8 --n-per-time 2 --chunk-size 4 --no-progress)
/usr/bin/time -f "full sweep: %e s" "${SWEEP[@]}" --out /tmp/sweep_full 2>&1 | tail -4
"${SWEEP[@]}" --out /tmp/sweep_resumed >/dev/null 2>&1 &
PID=$!; sleep 15; kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null
echo "killed after 15 s with $(ls /tmp/sweep_resumed/units 2>/dev/null | wc -l) units done"
"${SWEEP[@]}" --out /tmp/sweep_resumed 2>&1 | tail -2
cmp /tmp/sweep_full/table.csv /tmp/sweep_resumed/table.csv && echo "resumed table identical"
echo "== mixture score+posterior on CUDA (K=64, d=256)"
python3 - <<'PY'
import time, torch
from critwin import GaussianMixture
g = torch.Generator().manual_seed(0)
for kind in ("iso", "full"):
    means = 3 * torch.randn(64, 256, generator=g)
    if kind == "iso":
        covs = torch.rand(64, generator=g) + 0.5
    else:
        A = torch.randn(64, 256, 256, generator=g) / 16
        covs = A @ A.transpose(1, 2) + 0.5 * torch.eye(256)
    mix = GaussianMixture(means, covs).to(device="cuda")
    x = torch.randn(100_000, 256, device="cuda")
    mix.score_and_posterior(x, 0.8); torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        mix.score_and_posterior(x, 0.8)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / 5
    flops = 2 * 100_000 * 256 * 64 * (3 * 256 if kind == "full" else 2)
    print(f"{kind}: n=1e5 score+posterior {dt*1e3:.1f} ms, {flops/dt/1e12:.2f} TFLOP/s")
PY
