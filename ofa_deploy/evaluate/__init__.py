"""Measuring subnets: BN recalibration, accuracy, population evaluation by MFLOPs bucket."""

from .bn import recalibrate_bn, recalibrated_subnet
from .metrics import evaluate_accuracy
from .population import bucket_statistics, evaluate_population, evaluate_subnet, sample_population
from .runs import evaluate_run

__all__ = ["recalibrate_bn", "recalibrated_subnet", "evaluate_accuracy", "bucket_statistics", "evaluate_population",
           "evaluate_subnet", "sample_population", "evaluate_run"]
