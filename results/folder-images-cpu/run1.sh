#!/bin/bash
cd /tmp/r1/readme-work
export PYTHONPATH=/work/wt-r1 OMP_NUM_THREADS=1 OFA_DEPLOY_CACHE=/tmp/r1/readme-cache
O="/work/main/.venv/bin/python -m ofa_deploy"
step() { echo "=== $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg) :: $*"; /usr/bin/time -f "wall %e s" "$@"; echo "rc=$?"; }
echo "commit $(git -C /work/wt-r1 rev-parse --short HEAD)"
step $O train --dataset folder --data-dir /tmp/r1/my-photos --image-size 64 --epochs 10 --out runs/photos
step $O train --dataset folder --data-dir /tmp/r1/my-photos --image-size 64 --epochs 10 --out runs/photos
step $O eval runs/photos --buckets 15,25,35,45 --per-bucket 5 --calib-n 500 --quiet
step $O catalog build runs/photos --target cpu --catalog photos.db --n 20 --finalists 4 --calib-images 500 --torch-threads 1
step $O catalog select --catalog photos.db --target cpu --max-latency-ms 5 --json
step $O catalog select --catalog photos.db --target cpu --max-latency-ms 5 --allow-unstable --json
echo "=== end $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
