"""Beyond the paper: the interference between subnets and the sampling bias of a run,
measured rather than inferred from accuracy.

``bias`` needs no torch; ``interference`` does (import it explicitly).
"""

from .bias import analyze_run_bias, sampling_bias

__all__ = ["analyze_run_bias", "sampling_bias"]
