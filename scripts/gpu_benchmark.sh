#!/usr/bin/env bash
# Every GPU check, in one run (GPU time is scarce: run it once, keep the output):
#   bash scripts/gpu_benchmark.sh [OUT_DIR]          # default OUT_DIR=outputs/gpu_benchmark
#
# 1. scripts/benchmark.py suite=gpu: the paper's CIFAR setting (L=3, K=32, h=512, batch 64, bf16 autocast)
#    in each memory mode, compiled, channels_last, and batch 256 in invertible mode: images/s, TFLOP/s
#    (torch.utils.flop_counter), peak and activation memory (CUDA max allocated).
# 2. The largest batch (powers of two) that fits in invertible mode, and in mode none for comparison.
# 3. With two or more GPUs: a 2-GPU DDP smoke run of train.py in invertible mode on a synthetic image folder.
# Without CUDA it stops at once with exit code 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-outputs/gpu_benchmark}
if ! $PY -c "import torch" 2>/dev/null; then
    echo "gpu_benchmark.sh: '$PY' cannot import torch: set PYTHON=<the project's python>" >&2
    exit 1
fi
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_benchmark.sh: no CUDA device visible (torch.cuda.is_available() is False): run it on a GPU machine" >&2
    exit 1
fi
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpus.csv"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")

echo "== 1. the paper's CIFAR setting, one GPU =="
$PY scripts/benchmark.py suite=gpu device=cuda json="$OUT/gpu.json" | tee "$OUT/gpu.md" || true

echo "== 2. largest batch that fits (powers of two) =="
for memory in invertible none; do
    for batch in 64 128 256 512 1024 2048 4096; do
        if $PY scripts/benchmark.py suite=one device=cuda precision=bf16 model.steps=32 model.hidden_channels=512 \
                model.memory=$memory batch_size=$batch iters=2 warmup=1 sample_batches=1 \
                json="$OUT/maxbatch_${memory}_${batch}.json" > "$OUT/maxbatch_${memory}_${batch}.log" 2>&1; then
            echo "memory=$memory batch=$batch fits: $(tail -n 1 "$OUT/maxbatch_${memory}_${batch}.log")"
        else
            echo "memory=$memory batch=$batch does not fit (or failed): $(grep -m1 -o 'failed: .*' "$OUT/maxbatch_${memory}_${batch}.log" || true)"
            break
        fi
    done
done | tee "$OUT/maxbatch.txt"

if [ "$GPUS" -ge 2 ]; then
    echo "== 3. 2-GPU DDP smoke run, invertible mode =="
    $PY - "$OUT/synthetic" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for split, count in (("train", 256), ("test", 64)):
    for label in ("a", "b"):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(count // 2):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / label / f"{i}.png")
PY
    GLOW_DATA_DIR="$OUT" $PY train.py experiment=cifar10_glow data=imagefolder data.path=synthetic \
        model.memory=invertible trainer=ddp trainer.devices=2 trainer.precision=bf16-mixed trainer.max_steps=20 \
        trainer.val_check_interval=20 data.batch_size=64 logger=csv paths.log_dir="$OUT/ddp" 2>&1 | tee "$OUT/ddp.log"
else
    echo "== 3. skipped: $GPUS GPU(s), the DDP smoke run needs 2 ==" | tee "$OUT/ddp.log"
fi
echo "results in $OUT"
