#!/usr/bin/env bash
# Issue 35: the GPU path measured in one prepared run of <= 9 minutes on one H100/H200 (the
# `device` tool's machine: a copy of the working tree, no network, its own torch), writing
# every figure as JSON under $OUT in priority order, so a run cut off still returns the most
# important ones:
#   (a) benchmarks/bench_train.py --device cuda: supernet vs extracted, eager vs CUDA graphs,
#       fp32 vs bf16 - smallest, middle and largest subnet          (goal: ratio <= 1.15)
#   (b) one RSS epoch of Fashion-MNIST (60,000 images, batch 64), defaults and graphs off
#                                                                   (goal: <= 3 s)
#   (c) batch-1 latency of an exported subnet with CUDA events: torch eager vs graph replay,
#       ONNX Runtime's CUDA provider when present, CoV              (goal: CoV <= 1 %)
#   (d) the predictor-transfer campaign's GPU landscapes, shortened to the time left
#
# What travels (the `device` tool's carry, <= 64 MiB in all), prepared here once:
#   data/fashion-mnist/   the four IDX .gz files:  mkdir -p data && cp -r /usr/share/datasets/fashion-mnist data/
#   .whl/                 tomli_w (not in the GPU image):  pip download --no-deps --only-binary=:all: -d .whl tomli_w
# (both ignored by git: `echo /data/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude`)
# Device command:  bash benchmarks/gpu_check.sh      (timeout_s 600, carry ["data", ".whl"])
#
# Without CUDA it refuses in one line (exit 2) before doing anything. GPU_CHECK_DEVICE=cpu runs
# the same steps on a CPU with tiny sizes, to check the script itself (not a measurement).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-check-out}
DATA=${DATA:-data/fashion-mnist}
WORK=${WORK:-/tmp/ofa-gpu-check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
START=$(date +%s)
PY=${PYTHON:-python3}

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch here; run it on a GPU machine (GPU_CHECK_DEVICE=cpu checks the script)" >&2
  exit 2
fi
if [ "$DEVICE" = cuda ] && [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  echo "gpu_check: Fashion-MNIST not found in $DATA (carry it: see the top of this script)" >&2
  exit 2
fi
mkdir -p "$OUT" "$WORK"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl \
    && export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this tree's ofa_deploy, not an installed one
OFA=("$PY" -m ofa_deploy)

if [ "$DEVICE" = cpu ]; then  # the script's own check: every step, tiny sizes
  STEPS=2; ROUNDS=1; PRECISIONS=fp32; TRAIN=(--dataset digits --train-subset 256 --test-subset 64); GRAPHS_OFF=(--cuda-graphs off)
  PROFILE=(--min-time-s 0.2 --min-iterations 5 --warmup-s 0.1); DATA_ARGS=()
else
  STEPS=20; ROUNDS=7; PRECISIONS=fp32,bf16; TRAIN=(--dataset fmnist --data-dir "$DATA"); GRAPHS_OFF=(--cuda-graphs off)
  PROFILE=(--min-time-s 2 --min-iterations 200 --warmup-s 1); DATA_ARGS=(--data-dir "$DATA")
fi

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# step NAME LIMIT_S CMD...: runs CMD with at most LIMIT_S (less if the budget is nearly spent),
# records name, exit code and wall time in $OUT/steps.jsonl; a failed step does not stop the rest
step() {
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 15 ]; then
    echo "{\"step\": \"$name\", \"skipped\": \"budget spent\"}" >> "$OUT/steps.jsonl"; return 0
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@"
  local rc=$?
  local t1; t1=$(date +%s.%N)
  echo "{\"step\": \"$name\", \"rc\": $rc, \"limit_s\": $limit, \"wall_s\": $(awk "BEGIN{print $t1 - $t0}")}" >> "$OUT/steps.jsonl"
  echo "gpu_check: $name rc=$rc" >&2
}

"$PY" - > "$OUT/versions.json" <<EOF
import json, platform, subprocess, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
except OSError:
    commit = None
print(json.dumps({"device": "$DEVICE", "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(), "commit": commit}))
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>/dev/null || true

# (a) training steps
step bench_train 200 "$PY" benchmarks/bench_train.py --device "$DEVICE" --precisions "$PRECISIONS" --rounds "$ROUNDS" \
  --steps "$STEPS" > "$OUT/bench_train.json"

# (b) one RSS epoch: defaults (graphs auto) and graphs off; epoch_time_s is in metrics.jsonl
for variant in default graphs-off; do
  extra=(); [ "$variant" = graphs-off ] && extra=("${GRAPHS_OFF[@]}")
  rm -rf "$WORK/rss-$variant"
  step "rss_epoch_$variant" 90 "${OFA[@]}" train "${TRAIN[@]}" --method rss --epochs 1 --device "$DEVICE" "${extra[@]}" \
    --out "$WORK/rss-$variant" --quiet --json > "$OUT/rss-epoch-$variant.json"
  cp "$WORK/rss-$variant/metrics.jsonl" "$OUT/rss-epoch-$variant.metrics.jsonl" 2>/dev/null || true
done

# (c) batch-1 latency of the smallest subnet: torch eager, torch graph replay, ORT CUDA if present
rm -rf "$WORK/export"
step export 60 "${OFA[@]}" export "$WORK/rss-default" --smallest --target cuda --precision fp32 "${DATA_ARGS[@]}" \
  --no-accuracy --out "$WORK/export" --json > "$OUT/export.json"
step profile_torch_eager 45 "${OFA[@]}" profile "$WORK/export" --target cuda --backend torch --device "$DEVICE" \
  "${PROFILE[@]}" --cov-threshold 0.01 --json --out "$OUT/profile-torch-eager.json"
if [ "$DEVICE" = cuda ]; then
  step profile_torch_graph 45 "${OFA[@]}" profile "$WORK/export" --target cuda --backend torch --device cuda --cuda-graph \
    "${PROFILE[@]}" --cov-threshold 0.01 --json --out "$OUT/profile-torch-graph.json"
  if "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    step profile_ort_cuda 45 "${OFA[@]}" profile "$WORK/export" --target cuda --backend onnxruntime --device cuda \
      "${PROFILE[@]}" --cov-threshold 0.01 --json --out "$OUT/profile-ort-cuda.json"
  else
    echo '{"step": "profile_ort_cuda", "skipped": "onnxruntime has no CUDAExecutionProvider here"}' >> "$OUT/steps.jsonl"
  fi
fi

# (d) the transfer campaign's GPU landscapes, in the time left
if [ "$DEVICE" = cuda ] && [ "$(left)" -gt 60 ]; then
  step transfer_campaign $(( $(left) - 10 )) "$PY" experiments/predictor-transfer/transfer_campaign.py \
    results/predictor-transfer/drift/source-cpu-physics/predictor.json "$WORK/campaign" --pool 40 --holdout 60 \
    --pool-seed 22 --holdout-seed 21 --chunk 40 --rounds 4 --min-time-s 0.3 --min-iterations 60 \
    --landscapes torch-cuda,torch-cuda-graph > "$OUT/campaign.log" 2>&1
  cp "$WORK/campaign/"*.jsonl "$OUT/" 2>/dev/null || true
fi
echo "{\"total_wall_s\": $(( $(date +%s) - START ))}" >> "$OUT/steps.jsonl"
