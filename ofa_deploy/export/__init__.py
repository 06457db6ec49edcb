"""Export: a subnet of a trained supernet -> ONNX (+ calibration data) -> TensorRT engine.

Host side (needs torch): ``workflow.export_run(run_dir, ...)`` is ``ofa-deploy export RUN`` as a
library call (choose subnets, name the output, load data, export each); it calls
``export_subnet(supernet, subnet, target, out_dir, ...)``, which extracts
the static subnet, recalibrates its BN statistics, exports ONNX, checks ONNX Runtime
against PyTorch and writes the directory::

    out_dir/model.onnx        the network, NCHW float32 input "input", output "logits"
    out_dir/model.json        the sidecar (subnet, cost, accuracy, parity, versions, SHA-256s)
    out_dir/calibration.npy   float32 (N, C, 32, 32) normalised training images (TensorRT / int8 targets)

Device side (TensorRT + pycuda, no torch): ``ofa_deploy.export.tensorrt`` builds
``model.engine`` + ``engine.json`` from that directory and runs engines (``TrtRunner``).

Importing this package does not import torch; ``export_subnet`` imports it when called.
"""

from __future__ import annotations

from typing import Any

from .sidecar import CALIBRATION_FILE, ONNX_FILE, SIDECAR_FILE, read_sidecar, verify_files

__all__ = [
    "CALIBRATION_FILE",
    "ONNX_FILE",
    "SIDECAR_FILE",
    "export_subnet",
    "read_sidecar",
    "verify_files",
]


def __getattr__(name: str) -> Any:
    if name == "export_subnet":
        from .pipeline import export_subnet

        return export_subnet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
