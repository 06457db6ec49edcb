"""Measuring subnets: BN recalibration, accuracy, population evaluation by MFLOPs bucket."""

from .bn import recalibrate_bn, recalibrated_subnet
from .metrics import evaluate_accuracy

__all__ = ["recalibrate_bn", "recalibrated_subnet", "evaluate_accuracy"]
