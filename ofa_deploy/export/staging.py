"""Output directories that appear only complete: built beside their final path, renamed at the end.

The rules (what may be replaced, never an input, no replacing what appeared meanwhile)
live in ``ofa_deploy.outputs``; this is the export's use of them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

from ..outputs import EXPORT, Kind, staged_output_dir


@contextmanager
def staged_directory(final: str | os.PathLike, *, overwrite: bool = False, kind: Kind = EXPORT,
                     inputs: Sequence[Tuple[str, Optional[str | os.PathLike]]] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; when the block ends normally it
    is renamed to ``final`` (replacing an existing one only with ``overwrite``, and only if
    it is an ofa-deploy export), and on any error it is removed, so ``final`` is either
    absent, the old directory, or complete."""
    with staged_output_dir(final, kind, overwrite=overwrite, inputs=inputs) as tmp:
        yield tmp
