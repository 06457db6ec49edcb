#!/usr/bin/env bash
# Issue 16 on a quiet, real accelerator: a transfer campaign on a lent GPU machine (the
# `device` tool's H100/H200), sized for its 10-minute command limit. Run there from the
# repository root; everything it needs travels with the working tree (no training run: the
# supernet is built untrained from the committed source predictor's search space).
#
#   device run: bash experiments/predictor-transfer/device_transfer_campaign.sh      (timeout_s 600)
#
# Writes to $OUT (or ./device-campaign): the GPU's name, the campaign's log and its
# measurements (torch-cuda.jsonl, torch-cuda-graph.jsonl, anchors.jsonl). Then, here:
#   python experiments/predictor-transfer/anchor_correct.py DIR TRUTH --landscapes torch-cuda,torch-cuda-graph
#   python experiments/predictor-transfer/transfer_curves.py results/predictor-transfer/drift/source-cpu-physics/predictor.json \
#       TRUTH CURVES --targets torch-cuda,torch-cuda-graph --sizes 5,10,20,50
set -euo pipefail
out="${OUT:-device-campaign}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi -L > "$out/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$out/gpu.txt"
python3 experiments/predictor-transfer/transfer_campaign.py results/predictor-transfer/drift/source-cpu-physics/predictor.json \
    /tmp/device-campaign --pool 60 --holdout 100 --pool-seed 22 --holdout-seed 21 --chunk 40 \
    --rounds 6 --min-time-s 0.3 --min-iterations 60 --landscapes torch-cuda,torch-cuda-graph \
    2>&1 | tee "$out/campaign.log"
cp /tmp/device-campaign/*.jsonl "$out/"
