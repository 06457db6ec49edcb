#!/usr/bin/env bash
# Issue 14 on one NVIDIA GPU (written for an H100): the training benchmark, one-epoch RSS runs,
# GPU latency and the full-scale F-MNIST reproduction. NOT RUN by the project so far (no GPU was
# lent to the session that wrote it). Run from the repository root after the README's set-up:
#   DATA=/path/to/fashion-mnist bash results/gpu-h100/run.sh
# Everything it measures lands in results/gpu-h100/out/ (JSON + logs); checkpoints stay in $WORK.
set -euo pipefail
DATA=${DATA:-/usr/share/datasets/fashion-mnist}   # the four F-MNIST IDX .gz files
WORK=${WORK:-/tmp/ofa-gpu}                         # run directories, exports (not committed)
OUT=results/gpu-h100/out
mkdir -p "$OUT" "$WORK"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$OUT/timeline.txt"; }

stamp "start $(git rev-parse HEAD)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv"
python -c "import torch, json; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), 'bf16': torch.cuda.is_bf16_supported()}))" > "$OUT/versions.json"

# 1. training steps: supernet vs extracted, eager vs CUDA graphs, bf16 vs fp32 (fp16 only eager)
stamp "bench_train graphs"
python benchmarks/bench_train.py --device cuda --precisions fp32,bf16 --rounds 9 --steps 20 > "$OUT/bench_train_cuda.json"
stamp "bench_train eager incl. fp16"
python benchmarks/bench_train.py --device cuda --precisions fp32,bf16,fp16 --graphs off --rounds 9 --steps 20 > "$OUT/bench_train_cuda_eager.json"

# 2. one RSS epoch of F-MNIST (60,000 images, batch 64): epoch_time_s in each metrics.jsonl
for variant in "bf16-graphs:--amp bf16 --cuda-graphs on" "bf16-eager:--amp bf16 --cuda-graphs off" \
               "fp32-graphs:--amp fp32 --cuda-graphs on" "fp32-eager:--amp fp32 --cuda-graphs off"; do
  name=${variant%%:*}; flags=${variant#*:}
  stamp "train rss 1 epoch $name"
  # shellcheck disable=SC2086
  ofa-deploy train --dataset fmnist --data-dir "$DATA" --method rss --epochs 1 --device cuda $flags \
      --out "$WORK/rss-1ep-$name" --json > "$OUT/train-rss-1ep-$name.json" 2> "$OUT/train-rss-1ep-$name.log"
  cp "$WORK/rss-1ep-$name/metrics.jsonl" "$OUT/train-rss-1ep-$name.metrics.jsonl"
done

# 3. GPU latency of a batch-1 subnet (goal: CoV <= 1 %): torch eager vs CUDA-graph replay, events = device time
stamp "export + profile"
ofa-deploy export "$WORK/rss-1ep-bf16-graphs" --smallest --target cuda --precision fp32 --data-dir "$DATA" \
    --out "$WORK/export-smallest" --overwrite
ofa-deploy profile "$WORK/export-smallest" --target cuda --backend torch --device cuda --cov-threshold 0.01 \
    --json --out "$OUT/profile-torch-eager.json"
ofa-deploy profile "$WORK/export-smallest" --target cuda --backend torch --device cuda --cuda-graph \
    --cov-threshold 0.01 --json --out "$OUT/profile-torch-graph.json"
if python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
  ofa-deploy profile "$WORK/export-smallest" --target cuda --backend onnxruntime --device cuda --cuda-graph \
      --cov-threshold 0.01 --json --out "$OUT/profile-ort-cuda-graph.json"
fi

# 4. the whole Table-1 protocol at full scale: PS, RSS, RSS-short, 100 subnets x 6 buckets each
stamp "reproduce full scale"
/usr/bin/time -v -o "$OUT/reproduce.time.txt" ofa-deploy reproduce --dataset fmnist --data-dir "$DATA" \
    --device cuda --out "$WORK/fmnist" --json > "$OUT/reproduce.json" 2> "$OUT/reproduce.log"
cp -r "$WORK/fmnist/report" "$OUT/report"
stamp "end"
