#!/bin/bash
# As run, with machine paths replaced: REPO = the ofa-deploy worktree at the commit named in the log,
# WORK = a scratch directory holding the image folder my-photos (make_folder.py).
cd "$WORK"
export PYTHONPATH="$REPO" OMP_NUM_THREADS=1 OFA_DEPLOY_CACHE="$WORK/cache"
O="python -m ofa_deploy"
step() { echo "=== $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg) :: $*"; /usr/bin/time -f "wall %e s" "$@"; echo "rc=$?"; }
echo "commit $(git -C "$REPO" rev-parse --short HEAD)"
step $O train --dataset folder --data-dir my-photos --image-size 64 --epochs 10 --out runs/photos
step $O train --dataset folder --data-dir my-photos --image-size 64 --epochs 10 --out runs/photos
step $O eval runs/photos --buckets 15,25,35,45 --per-bucket 5 --calib-n 500 --quiet
step $O catalog build runs/photos --target cpu --catalog photos.db --n 20 --finalists 4 --calib-images 500 --torch-threads 1
step $O catalog select --catalog photos.db --target cpu --max-latency-ms 5 --json
step $O catalog select --catalog photos.db --target cpu --max-latency-ms 5 --allow-unstable --json
echo "=== end $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
