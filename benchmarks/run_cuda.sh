#!/usr/bin/env bash
# The CUDA checks, as run on a lent GPU machine (about 7 minutes on an H200 for all three):
#   tests:    tests/train/test_cuda.py (bf16/fp16 autocast, grad scaler, NHWC, fused Adam, CUDA graphs, a GPU run
#             loads on a CPU);
#   speed:    the CUDA training-speed table (textbook loop vs aeopt's trainer with and without its CUDA
#             graph, same run);
#   optimize: a short `optimize` benchmark on the GPU (2-minute budget, seed trained for the same wall time).
#   codec:    (not in the default three; not run yet) the photo codec trained on the GPU, channel-wise on
#             the mean grid, 256 crops in batches of 8, CODEC_MINUTES (default 3.5) per lambda at 0.0067 and
#             0.0025, then measured (on the machine's CPUs, whole files) on the 200 BSDS500 test photos
#             against the peers: $OUT/codec_photos.json, to set beside the published hyperprior figures.
#             Needs BSDS500 in .bsds/{train,val,test} (cp -r ../shared/data/bsds500 .bsds; 37 MB) and
#             constriction (its wheel in .whl/ where the machine lacks it): carry [".bsds", ".whl"].
# Usage, from the repository root, with the Fashion-MNIST IDX files in .fmnist/ (and, where the machine
# lacks optuna, its wheels in .whl/):   OUT=/tmp/aeopt-cuda bash benchmarks/run_cuda.sh [tests] [speed] [optimize] [codec]
# (no argument: the first three).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/aeopt-cuda}
mkdir -p "$OUT"
if ! python3 -c "import optuna, constriction" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

STAGES=" ${*:-tests speed optimize} "

[[ $STAGES == *" tests "* ]] && python3 -m pytest -q -p no:cacheprovider tests/train/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
[[ $STAGES == *" speed "* ]] && python3 benchmarks/train_speed.py --device cuda --limit 0 --epochs 2 --models seed,conv \
  --threads 16 --without-graph --data-dir .fmnist --out "$OUT/train_speed_cuda.md" 2>&1 | tail -n 20 \
  | tee "$OUT/train_speed_cuda.log"
[[ $STAGES == *" optimize "* ]] && python3 benchmarks/optimize.py --device cuda --budget 2m --subset 10000 --epochs 6 --max-front 3 --threads 16 \
  --data-dir .fmnist --out /tmp/aeopt-bench-optimize --results "$OUT" --name optimize_cuda 2>&1 \
  | tail -n 30 | tee "$OUT/optimize_cuda.log"
if [[ $STAGES == *" codec "* ]]; then
  export AEOPT_BSDS=$PWD/.bsds
  for spec in "gpu-cg256 0.0067" "gpu-cg256-low 0.0025"; do
    set -- $spec
    python3 benchmarks/codec.py train-photos --name "$1" --lmbda "$2" --entropy channelwise --latent-grid mean \
      --patch 256 --batch 8 --lr 3e-4 --minutes "${CODEC_MINUTES:-3.5}" --epochs 200 --threads 16 2>&1 | tail -n 3 \
      | tee -a "$OUT/codec_gpu.log"
  done
  python3 benchmarks/codec.py photos --runs gpu-cg256,gpu-cg256-low --results "$OUT" 2>&1 | tail -n 5 \
    | tee -a "$OUT/codec_gpu.log"
fi
