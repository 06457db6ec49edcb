"""Paper-style reports of training runs: figures (matplotlib), Markdown and JSON (no torch).

>>> from ofa_deploy.report import build_report
>>> build_report(["runs/fmnist-rss", "runs/fmnist-ps"], "reports/fmnist")
"""

from ..evals import list_evals, read_eval
from .build import build_report
from .results import RunFacts, load_run

__all__ = ["RunFacts", "build_report", "list_evals", "load_run", "read_eval"]
