"""Supernet training: subnet schedules (RSS, PS, ablations), the trainer, resume and DDP.

>>> from ofa_deploy.train import TrainConfig, train, resume
>>> run_dir = train(TrainConfig(dataset="digits", method="rss", epochs=2, out="runs/demo"))
"""

from .config import PAPER_EPOCHS, PRESETS, TrainConfig
from .schedules import METHODS, FlopsBalancedSampler, Phase, Schedule
from .trainer import SUMMARY, read_summary, resume, train

__all__ = ["METHODS", "PAPER_EPOCHS", "PRESETS", "SUMMARY", "FlopsBalancedSampler", "Phase", "Schedule",
           "TrainConfig", "read_summary", "resume", "train"]
