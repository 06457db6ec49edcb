"""A briefly trained digits run shared by the eval, report and analyze tests of one session
(trained once, on CPU, in a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RSS on 256 digits images for 3 epochs (one subnet per epoch, so the supernet's shared
    BN statistics belong to the last subnet trained - what recalibration must fix)."""
    from ofa_deploy.train import TrainConfig, train

    out = tmp_path_factory.getbasetemp() / "shared-trained-digits-rss"
    if (out / "final.pt").is_file():
        return out
    return train(TrainConfig(dataset="digits", method="rss", epochs=3, train_subset=256, device="cpu", seed=0,
                             out=str(out), quiet=True, lr=0.05), progress=False)
