"""The elastic supernet and the static networks extracted from it (needs torch)."""

from .static import StaticSubnet
from .supernet import Supernet

__all__ = ["Supernet", "StaticSubnet"]
