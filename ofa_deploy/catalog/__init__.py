"""Per-device model catalogs: one SQLite file joining subnets, their accuracy, their
measured latency on each target and their exported artifacts. No torch needed to read,
import into or select from a catalog (the device side); filling one from a run's subnets
(``catalog build``, which evaluates and exports them with torch) is ``ofa_deploy.search``.
"""

from .db import Catalog
from .entries import NothingFits, entries, pareto, select
from .importer import import_results
from .schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Catalog", "NothingFits", "entries", "import_results", "pareto", "select"]
