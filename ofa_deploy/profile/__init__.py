"""Latency on real hardware: measuring it. No torch needed: the onnxruntime and TensorRT
paths run on a device that has only those and numpy.

``profile_model(path, target)`` measures one ONNX file, engine or export directory under
the target's protocol (``Protocol``); ``environment()`` describes the machine.

* ``protocol``: warm-up, timed iterations, statistics; ``backends``: the runners
  (onnxruntime, TensorRT, torch); ``model``: what a path to measure is; ``environment``:
  the machine; ``profiler``: ``profile_model``.
* ``collect``: a measuring campaign over many subnets (design, export, interleaved timing,
  the resumable ``latency.jsonl``); ``drift``: the anchors' chunk-drift estimate.
* ``results``: reading ``profile --json`` result files measured elsewhere.

Fitting latency models to such measurements is ``ofa_deploy.predictor``, which imports
this package; nothing here imports it.
"""

from .environment import environment
from .profiler import profile_model
from .protocol import Protocol, measure, summarize

__all__ = ["Protocol", "environment", "measure", "profile_model", "summarize"]
