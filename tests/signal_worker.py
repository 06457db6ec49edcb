"""``ofa-deploy ARGS`` for ``test_sigterm_commands.py``, with a test-only hook: the
``OFA_TEST_MARK_AT``-th call of ``evaluate_accuracy`` (one subnet's accuracy, in ``eval`` and
``catalog build``) first creates the file ``OFA_TEST_MARKER`` and waits there up to 30 s,
so the test sends ``SIGTERM`` while a unit of work is in progress, not during start-up.
The product has no such hook."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _install() -> None:
    from ofa_deploy.evaluate import metrics, population

    at, marker = os.environ.get("OFA_TEST_MARK_AT"), os.environ.get("OFA_TEST_MARKER")
    if at is None or marker is None:
        return
    original = metrics.evaluate_accuracy
    calls = [0]

    def evaluate_accuracy(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(at):
            Path(marker).write_text(str(os.getpid()))
            time.sleep(30)  # SIGTERM arrives here
        return original(*args, **kwargs)

    metrics.evaluate_accuracy = evaluate_accuracy  # catalog build imports it when it runs
    population.evaluate_accuracy = evaluate_accuracy  # eval: imported by name already


if __name__ == "__main__":
    _install()
    from ofa_deploy.cli import main

    sys.exit(main(sys.argv[1:]))
