"""Training precision: which autocast dtype a run uses, and the loss scaler it needs.

``--amp`` takes ``bf16``, ``fp16`` or ``fp32``; without it (``None``) the run uses bf16 on
a CUDA GPU that supports it and fp32 everywhere else (so CPU runs stay fp32, bit for bit
what they were before this switch existed). The resolved choice is a hyper-parameter:
it is recorded in ``config.toml`` and a resumed run keeps it, whatever device it resumes on.

* bf16 has fp32's exponent range: no loss scaling. It works on a CPU too (``torch.autocast``
  on CPU), which is how its code path is tested without a GPU.
* fp16 needs a ``GradScaler`` and only runs on CUDA (CPU autocast has no fp16 policy here).
* fp32 runs without autocast, as before.

``config.toml`` records fp32 as ``amp = false``: the key predates the choice (it was a flag),
and keeping its old value keeps every existing CPU run directory and checkpoint comparable
with a new request for the same run. The old ``amp = true`` keeps its meaning (CUDA only,
bf16 where supported, else fp16).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager

from ..errors import OfaError

PRECISIONS = ("bf16", "fp16", "fp32")


def _cuda_device(device: str) -> bool:
    """Whether the device name ``train`` was given means CUDA (``auto`` = CUDA when present)."""
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _cuda_present() -> bool:
    """Whether torch sees a GPU (without one, the trainer's device check says so, not this module)."""
    import torch

    return torch.cuda.is_available()


def _bf16_on_cuda() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(requested: Any, device: str) -> str:
    """The precision a run with ``--amp requested`` uses on ``device`` (a ``--device`` value).

    ``requested``: ``None`` (the default for the device), one of ``PRECISIONS``, or a bool
    from an older ``config.toml`` or caller (false = fp32; true = the old flag, CUDA only: bf16
    where supported, else fp16). Raises ``OfaError``
    for a precision the device cannot run (fp16 on a CPU, bf16 on a GPU without it); no
    file is written before this check.
    """
    if requested is False:
        return "fp32"
    if requested is None:
        return "bf16" if _cuda_device(device) and _bf16_on_cuda() else "fp32"
    if requested is True:  # the old flag: mixed precision on CUDA, bf16 where supported, else fp16
        if not _cuda_device(device):
            raise OfaError("amp = true (mixed precision, the flag of older runs) needs a CUDA device; use --amp "
                           "bf16 or fp32 on a CPU")
        return "bf16" if _bf16_on_cuda() else "fp16"
    if requested not in PRECISIONS:
        raise OfaError(f"--amp {requested!r} is not a precision; choose one of {', '.join(PRECISIONS)}")
    if requested == "fp16" and not _cuda_device(device):
        raise OfaError("--amp fp16 needs a CUDA device (loss-scaled fp16 autocast); use --amp bf16 or fp32 on a "
                       "CPU")
    if requested == "bf16" and _cuda_device(device) and _cuda_present() and not _bf16_on_cuda():
        raise OfaError("--amp bf16: this GPU does not support bfloat16 (torch.cuda.is_bf16_supported() is "
                       "false); use --amp fp16 or fp32")
    return requested


def table_value(precision: str) -> Any:
    """How ``config.toml`` records ``precision`` (fp32 as ``false``, see the module docstring)."""
    return False if precision == "fp32" else precision


def autocast(device_type: str, precision: str, *, in_cuda_graph: bool = False) -> ContextManager:
    """The autocast context of one forward pass (a no-op for fp32).

    Inside a CUDA graph capture autocast's weight-cast cache must be off: a cached cast
    made during capture lives in the graph's memory pool and would be read after the
    graph released it (PyTorch's CUDA graphs notes)."""
    if precision == "fp32":
        return nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type, dtype=dtype, cache_enabled=not in_cuda_graph)


def grad_scaler(precision: str, device_type: str):
    """A ``GradScaler`` for fp16 on CUDA, else ``None`` (bf16 and fp32 need no scaling)."""
    if precision != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(device_type)


__all__ = ["PRECISIONS", "resolve_precision", "table_value", "autocast", "grad_scaler"]
