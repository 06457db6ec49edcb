"""Latency on real hardware, and a latency predictor fitted to it. No torch needed:
the onnxruntime and TensorRT paths run on a device that has only those and numpy.

``profile_model(path, target)`` measures one ONNX file, engine or export directory under
the target's protocol (``Protocol``); ``environment()`` describes the machine.
"""

from .environment import environment
from .profiler import profile_model
from .protocol import Protocol, measure, summarize

__all__ = ["Protocol", "environment", "measure", "profile_model", "summarize"]
