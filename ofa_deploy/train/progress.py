"""Per-epoch progress: a rich bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochProgress:
    """``start(epoch, total_epochs, phase, steps)``, ``update(loss, acc, images_per_s)``,
    ``end(summary_line)``. Silent when ``enabled`` is false; a bar only on a TTY."""

    def __init__(self, enabled: bool) -> None:
        self.console = Console(file=sys.stderr)
        self.enabled = enabled
        self.bar = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def start(self, epoch: int, total: int, phase: str, steps: int) -> None:
        if not self.bar:
            return
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}[/] {task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  {task.fields[ips]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, epoch=epoch, epochs=total, phase=phase,
                                             loss=0.0, acc=0.0, ips=0.0)

    def update(self, loss: float, acc: float, images_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss, acc=acc, ips=images_per_s)

    def stop(self) -> None:
        """Take the bar away without a line (the run is stopping; the caller says why)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def end(self, line: str) -> None:
        self.stop()
        if self.enabled:
            self.console.print(line, highlight=False, markup=False)
