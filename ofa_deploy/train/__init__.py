"""Supernet training: subnet schedules (RSS, PS, ablations), the trainer, resume and DDP.

>>> from ofa_deploy.train import TrainConfig, train, resume
>>> run_dir = train(TrainConfig(dataset="digits", method="rss", epochs=2, out="runs/demo"))
"""

import os

# Idle OpenMP workers sleep instead of spinning. On a CPU shared with other work (CI, a
# laptop), spinning workers made each training step 4-10x slower at 2 threads (measured:
# 2 epochs of digits RSS, 114 s spinning vs 10 s passive, 9 s at 1 thread, load 6 on 2
# cores). It only changes how threads wait, never what they compute. Read by OpenMP when
# torch is first imported, so it only acts when this package is imported before torch
# (the CLI); an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import PAPER_EPOCHS, PRESETS, TrainConfig  # noqa: E402
from .run_tables import SUMMARY, read_summary  # noqa: E402
from .schedules import METHODS, FlopsBalancedSampler, Phase, Schedule  # noqa: E402
from .trainer import resume, train  # noqa: E402

__all__ = ["METHODS", "PAPER_EPOCHS", "PRESETS", "SUMMARY", "FlopsBalancedSampler", "Phase", "Schedule",
           "TrainConfig", "read_summary", "resume", "train"]
