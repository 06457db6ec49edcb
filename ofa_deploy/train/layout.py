"""Where and in which memory layout a run trains: the device (``--device``) and the layout.

On a CPU the run trains channels-last with the supernet's CPU kernels (``nn.cpu_ops``),
fused SGD and one thread (``threads.py``): 2.8-4.9x the images/s of plain NCHW eager as it
ran before, 2.25-5.9x at the same single thread, for the smallest to the largest subnet on
a 2-core CPU, quiet or loaded (``results/train-speed-cpu``).

Channels-last once broke bit-identical resume. Why, measured on a PS run with a teacher
resumed in a fresh process from each epoch-end checkpoint and compared tensor by tensor
with the uninterrupted run:

* not the supernet, its gradients or its momentum: a fresh supernet converted to
  channels-last *before* ``load_state_dict`` keeps its strides (``copy_`` writes into the
  existing tensors), ``torch.save``/``torch.load`` keep every momentum buffer's strides
  (40 of them legitimately differ from their parameter's in size-1 dimensions), and one
  more step after the round trip is bit-identical;
* not a different oneDNN algorithm on the first step after loading: oneDNN picks kernels
  from shapes and memory formats only, and with equal strides the steps agree;
* the teacher: the uninterrupted run extracted it from the channels-last supernet
  (``deepcopy`` keeps the stem channels-last), the resumed run rebuilt it from the
  checkpoint as a fresh, NCHW net. A 1-channel input is the same tensor in both layouts,
  so the stem weight's strides decide the layout of the stem's output and with it of the
  whole forward: the extracted teacher ran channels-last, the reloaded one NCHW, on other
  oneDNN kernels, and its logits differed in the last bits. The distillation loss carried
  that into every weight within the epoch: resuming before the first distilled phase was
  exact, after it never.

The fix (``trainer._Trainer._teacher``): the teacher is always a fresh net converted to
the training layout and then loaded with the weights, whether they come from the supernet
or a checkpoint.
"""

from __future__ import annotations

import torch

from ..errors import OfaError


def resolve_device(name: str, ctx_local_rank: int) -> torch.device:
    """``--device`` as a torch device: ``auto`` is CUDA where torch sees it; a bare ``cuda``
    is this rank's local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OfaError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OfaError("CUDA was requested but torch sees no CUDA device; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", ctx_local_rank % torch.cuda.device_count())
    elif device.type != "cpu":
        raise OfaError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def training_layout(device: torch.device) -> torch.memory_format:
    """The memory format a run trains in: channels-last on a CPU (oneDNN's fastest
    layout for this network, see the module docstring), PyTorch's default elsewhere.
    A pure function of the device type, so a resumed run trains in the layout its
    checkpoint was written in."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format
