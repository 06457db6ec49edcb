"""How a command meets ``SIGTERM`` and ``SIGINT``: one line and a known exit status, never a
traceback, and a long job checkpoints at a safe point instead of dying mid-write.

A cluster scheduler (SLURM, Kubernetes) stops a job with ``SIGTERM``, waits a grace period,
then sends ``SIGKILL``. While :func:`handled` is active (the CLI's whole run):

- ``SIGTERM`` raises :class:`~ofa_deploy.errors.Terminated` where the program is (an atomic
  write in progress removes its temporary file on the way out) and the CLI exits 143;
  inside :func:`deferred` (the training loop) it only sets a flag, which the loop polls at
  every step end (:func:`requested`): it then writes a checkpoint at that exact step and
  raises ``Terminated`` itself.
- ``SIGINT`` (Ctrl-C) raises ``KeyboardInterrupt`` as Python does (the CLI exits 130); a
  command with something to say about it (training's last checkpoint, the search's
  journal) turns it into :class:`~ofa_deploy.errors.Interrupted` with that line.
- After the first of either, further ``SIGINT``/``SIGTERM`` are ignored, so that the
  clean-up of the first (temporary files, the process group, the interpreter's own
  shutdown) is not cut short by a second signal into a ``KeyboardInterrupt`` traceback.
  ``SIGKILL`` still ends the process at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .errors import Terminated

_state = {"defer": 0, "pending": False, "stopping": False}


def _stop_listening() -> None:
    _state["stopping"] = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _on_sigterm(signum: int, frame: Any) -> None:
    if _state["stopping"]:
        return
    if _state["defer"] > 0:
        _state["pending"] = True  # the training loop checkpoints at its next step end
        return
    _stop_listening()
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


def _on_sigint(signum: int, frame: Any) -> None:
    if _state["stopping"]:
        return
    _stop_listening()
    raise KeyboardInterrupt


@contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the block (main thread only; elsewhere a no-op) and put
    back the previous ones after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _state.update(defer=0, pending=False, stopping=False)
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if not _state["stopping"]:
            signal.signal(signal.SIGINT, saved[0])
            signal.signal(signal.SIGTERM, saved[1])
        # else: a signal is ending the process; the interpreter's shutdown still runs after
        # this block, and a second Ctrl-C there would print a KeyboardInterrupt traceback
        _state.update(defer=0, pending=False)


def active() -> bool:
    """True when ``SIGTERM`` is ours (inside :func:`handled`)."""
    return signal.getsignal(signal.SIGTERM) is _on_sigterm


@contextmanager
def deferred() -> Iterator[None]:
    """Inside the block ``SIGTERM`` sets :func:`requested` instead of raising; a request
    still pending when the block ends raises ``Terminated`` then."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
    if _state["defer"] == 0 and _state["pending"] and not _state["stopping"]:
        stop("terminated by SIGTERM")


def requested() -> bool:
    """Whether a ``SIGTERM`` arrived inside :func:`deferred` and awaits its safe point."""
    return bool(_state["pending"])


def stop(message: str) -> None:
    """Raise ``Terminated(message)``, ignoring further signals during the clean-up."""
    _state["pending"] = False
    if active():
        _stop_listening()
    raise Terminated(message)


__all__ = ["handled", "active", "deferred", "requested", "stop"]
