"""Measuring many subnets for a latency predictor: a designed set, exported to ONNX and
timed in interleaved rounds, kept in a resumable JSON-lines file.

Why interleaved: on a shared or thermally drifting machine, timing subnet A for a few
seconds and then subnet B attributes any slow phase to one of them. Each round here
visits every loaded model in a fresh random order for a short burst, and a model's
statistics pool its bursts, so slow phases are spread over all models alike.

Why anchors: interleaving evens out drift *within* a chunk, not between chunks. In six
campaigns of 160 subnets x 5 CPU landscapes (``results/predictor-transfer/drift``) the
chunks of one process ran 5-20 % apart (the first usually fastest); as a chunk's
latencies move together, that is noise a predictor cannot fit and a bias between sets
measured apart (training vs held-out). So every chunk also times a few fixed
*anchor* subnets (split "anchor", one row per chunk), and ``LatencyDataset`` divides each
chunk's latencies by its anchors' drift from their median over all chunks, shrunk toward
no drift by as much as the anchors' own noise could explain it (``profile.drift``: with
2 s per subnet on a quiet machine the drift was often smaller than that noise). Rows
without anchors (imported, or from before) are used as measured.

Export needs torch (``ofa_deploy.export``); it is imported only when exporting.
"""

from __future__ import annotations

import gc
import json
import math
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ..buckets import macs_range, sample_in_bucket
from ..cost import macs
from ..errors import OfaError
from ..io import json_text
from ..space import SearchSpace, Subnet, as_rng
from .backends import onnxruntime_runner
from .drift import chunk_drift
from .protocol import Protocol, robust_cov, summarize, time_once

Progress = Callable[[str, int, int], None]


def design_subnets(space: SearchSpace, n: int, seed: int = 0) -> list[Subnet]:
    """``n`` distinct subnets spanning the space for fitting: the smallest, middle and
    largest, then in turn a uniform draw, a draw whose MACs are stratified over the whole
    range, and a draw restricted to one random kernel and one random expand ratio per
    subnet (extreme, homogeneous networks the uniform draw almost never produces)."""
    rng = as_rng(seed)
    out: dict[Subnet, None] = dict.fromkeys([space.smallest(), space.middle(), space.largest()])
    lo, hi = macs_range(space)
    strata = max(1, n // 3)
    i = 0
    while len(out) < n:
        kind = i % 3
        if kind == 0:
            sub = space.sample(rng)
        elif kind == 1:
            level = (lo + (hi - lo) * ((i // 3) % strata + rng.random()) / strata) / 1e6
            width = max(0.25, (hi - lo) / 1e6 / strata)
            sub = _in_bucket(space, level, width, rng, high=level * 1e6 > (lo + hi) / 2)
        else:
            sub = space.sample(rng, kernel_choices=[rng.choice(space.kernel_choices)],
                               expand_choices=[rng.choice(space.expand_choices)])
        out.setdefault(sub)
        i += 1
    return list(out)[:n]


def _in_bucket(space: SearchSpace, level: float, width: float, rng: random.Random, *, high: bool) -> Subnet:
    """A subnet near ``level`` MFLOPs: free expand ratios first; the ends of the range
    are reachable only with expand ratios locked to their extreme, so then those."""
    for lock, tries in (("none", 300), ("max" if high else "min", 3000)):
        try:
            return sample_in_bucket(space, level, width, rng, lock_width=lock, max_tries=tries)
        except OfaError:
            continue
    return space.sample(rng)


def holdout_subnets(space: SearchSpace, n: int, seed: int, exclude: Iterable[Subnet] = ()) -> list[Subnet]:
    """``n`` uniformly drawn subnets (what a search meets), none of them in ``exclude``."""
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[Subnet] = []
    while len(out) < n:
        sub = space.sample(rng)
        if sub not in seen:
            seen.add(sub)
            out.append(sub)
    return out


ANCHOR = "anchor"
ANCHOR_SEED = 7919


def anchor_subnets(space: SearchSpace) -> list[Subnet]:
    """The subnets every chunk re-measures: the middle one and one fixed uniform draw."""
    return list(dict.fromkeys([space.middle(), *holdout_subnets(space, 1, ANCHOR_SEED)]))


def _check_chunk(row: dict[str, Any]) -> None:
    """A row's chunk, where it has one, is an integer; an anchor's latencies (taken logs
    of) are positive numbers."""
    if ("chunk" in row or row["split"] == ANCHOR) and (not isinstance(row.get("chunk"), int)
                                                        or isinstance(row["chunk"], bool)):
        raise TypeError(f"chunk {row.get('chunk')!r} is not an integer")
    if row["split"] == ANCHOR and not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                          for v in row["latency_ms"].values()):
        raise TypeError("an anchor's latencies must be positive numbers")


class LatencyDataset:
    """Measured subnets in ``path`` (JSON lines), one per subnet and split; appended as
    measured so an interrupted build resumes where it stopped."""

    def __init__(self, path: str | Path, space: SearchSpace) -> None:
        self.path = Path(path)
        self.space = space
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    Subnet.from_dict(row["subnet"], space)
                    row["latency_ms"]["p50"]
                    _check_chunk(row)
                except (json.JSONDecodeError, KeyError, TypeError, OfaError, RecursionError) as exc:
                    if lineno == len(lines):  # a crash mid-append tears at most the last line
                        continue
                    raise OfaError(f"{self.path} line {lineno} is damaged ({exc}); delete it to re-measure") from None
                self.rows[(row["split"], row["key"])] = row
        self._drift: dict[str, tuple[dict[int, float], dict[str, float]]] = {}

    def has(self, split: str, subnet: Subnet) -> bool:
        return (split, str(subnet)) in self.rows

    def add(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json_text(row) + "\n")
            f.flush()
        self.rows[(row["split"], row["key"])] = row
        self._drift = {}

    def next_chunk(self) -> int:
        return 1 + max((r["chunk"] for r in self.rows.values() if "chunk" in r), default=-1)

    def drift(self, statistic: str) -> dict[int, float]:
        """{chunk: factor} its rows are divided by: per chunk with anchors, the geometric mean
        over its anchors of (their ``statistic`` there / their median over all chunks), shrunk
        toward 1 by how much of that the anchors' own noise explains (``profile.drift``)."""
        return self._drift_of(statistic)[0]

    def _drift_of(self, statistic: str) -> tuple[dict[int, float], dict[str, float]]:
        if statistic not in self._drift:
            per_anchor: dict[str, dict[int, float]] = {}
            for row in self.rows.values():
                if row["split"] == ANCHOR and statistic in row["latency_ms"]:
                    per_anchor.setdefault(str(row["subnet"]), {})[row["chunk"]] = float(row["latency_ms"][statistic])
            self._drift[statistic] = chunk_drift(per_anchor)
        return self._drift[statistic]

    def drift_report(self, statistic: str) -> dict[str, Any]:
        """What the anchors saw: per chunk, the factor its latencies were divided by, and the
        shrinkage weight with the anchor noise and chunk drift it was estimated from."""
        factors, details = self._drift_of(statistic)
        return {"anchored_chunks": len(factors), "statistic": statistic,
                "factors": {str(c): round(f, 4) for c, f in sorted(factors.items())},
                **{k: round(v, 4) for k, v in details.items() if math.isfinite(v)}}

    def latency(self, row: dict[str, Any], statistic: str) -> float:
        """``row``'s ``statistic`` (ms) with its chunk's drift divided out (see ``drift``)."""
        factor = self.drift(statistic).get(row["chunk"], 1.0) if "chunk" in row else 1.0
        return float(row["latency_ms"][statistic]) / factor

    def split(self, split: str, statistic: str = "p50") -> tuple[list[Subnet], list[float]]:
        rows = [r for (s, _), r in self.rows.items() if s == split]
        return ([Subnet.from_dict(r["subnet"], self.space) for r in rows],
                [self.latency(r, statistic) for r in rows])


@contextmanager
def quiet_torch() -> Iterator[None]:
    """One torch thread while exporting and timing: idle torch worker threads keep
    spinning after each export and steal the CPU from the runtime being timed (and on a
    busy machine two spinning threads made each export ~5x slower, measured on 2 cores)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def export_for_timing(supernet: Any, subnet: Subnet, target: Any, out_dir: Path) -> Path:
    """``out_dir/model.onnx`` of ``subnet``, exported as the target wants it, with the
    supernet's BN statistics (latency does not depend on weight values). An intact
    earlier export in ``out_dir`` (files matching its sidecar) is reused."""
    from ..export import verify_files

    if (out_dir / "model.json").is_file():
        try:
            verify_files(out_dir)
            return out_dir / "model.onnx"
        except OfaError:
            pass
    import torch

    from ..export import export_subnet

    space = supernet.space
    images = torch.randn((8, space.in_channels, space.image_size, space.image_size),
                         generator=torch.Generator().manual_seed(0))
    # Parity is recorded, not enforced: without BN recalibration a trained supernet's
    # statistics can blow a subnet's logits up to hundreds, where fp32 rounding alone
    # exceeds the relative tolerance - and latency does not depend on the values.
    export_subnet(supernet, subnet, target, out_dir, calib_images=images if target.needs_calibration else None,
                  parity_images=images, recalibrate=False, overwrite=True, strict_parity=False)
    return out_dir / "model.onnx"


def measure_interleaved(
    models: Sequence[Path],
    target: Any,
    *,
    rounds: int,
    protocol: Protocol,
    batch: int = 1,
    on_round: Optional[Callable[[int], None]] = None,
) -> list[dict[str, Any]]:
    """Time each ONNX model in ``models`` in ``rounds`` interleaved bursts of
    ``protocol.min_iterations`` / ``rounds`` iterations and ``min_time_s`` / ``rounds``
    seconds; returns per model ``{"latency_ms": stats, "n", "cov", "unstable"}``."""
    if rounds < 1:
        raise OfaError("rounds must be at least 1")
    runners = [onnxruntime_runner(m, providers=target.providers, threads=target.threads, batch=batch)
               for m in models]
    burst = Protocol(warmup_s=protocol.warmup_s / rounds, min_iterations=max(2, protocol.min_iterations // rounds),
                     min_time_s=protocol.min_time_s / rounds, max_retries=0,
                     cov_threshold=protocol.cov_threshold, max_time_s=protocol.max_time_s)
    samples: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    rng = random.Random(len(models))
    for r in range(rounds):
        rng.shuffle(order)
        for i in order:
            samples[i].extend(time_once(runners[i].step, burst).host_ms)
        if on_round:
            on_round(r)
    for runner in runners:
        runner.close()
    del runners
    gc.collect()  # ORT sessions otherwise outlive their chunk until a collection (RSS 448 vs 106 MB, 170 models)
    out = []
    for xs in samples:
        cov = robust_cov(xs)
        out.append({"latency_ms": summarize(xs), "n": len(xs), "cov": cov, "unstable": cov > protocol.cov_threshold})
    return out


def collect(
    supernet: Any,
    items: Sequence[tuple[str, Subnet]],
    target: Any,
    dataset: LatencyDataset,
    *,
    protocol: Protocol,
    rounds: int = 5,
    chunk: int = 40,
    onnx_dir: Optional[Path] = None,
    seed: int = 0,
    progress: Optional[Progress] = None,
    anchors: Optional[Sequence[Subnet]] = None,
) -> int:
    """Export and measure every (split, subnet) of ``items`` not yet in ``dataset``;
    returns how many were measured now. Each chunk also measures ``anchors`` (default
    ``anchor_subnets``; ``()`` for none) and records them as split "anchor".

    The work is shuffled (by ``seed``) so that splits measured together - training and
    held-out subnets - share the machine's slow and fast phases alike, then done in
    chunks of ``chunk`` subnets (one ONNX Runtime session each, interleaved), each chunk
    saved when done. The ONNX files go to ``onnx_dir/<subnet>/`` and are reused from
    there by later builds; without ``onnx_dir`` they live in a temporary directory."""
    import tempfile

    todo = [(split, sub) for split, sub in dict.fromkeys(items) if not dataset.has(split, sub)]
    random.Random(seed).shuffle(todo)
    space = supernet.space
    anchors = anchor_subnets(space) if anchors is None else list(anchors)
    done = 0
    for start in range(0, len(todo), chunk):
        chunk_id = dataset.next_chunk()
        part = todo[start:start + chunk] + [(ANCHOR, a) for a in anchors]
        with tempfile.TemporaryDirectory(prefix="ofa-latency-") as tmp, quiet_torch():
            base = Path(onnx_dir) if onnx_dir is not None else Path(tmp)
            paths: list[Path] = []
            for _, sub in part:
                if progress:
                    progress("exporting", min(done + len(paths), len(todo)), len(todo))
                # one directory per subnet and precision: an fp32 file must never stand in for int8
                name = str(sub) if target.precision == "fp32" else f"{sub}-{target.precision}"
                paths.append(export_for_timing(supernet, sub, target, base / name))
            if progress:
                progress("measuring", done, len(todo))
            results = measure_interleaved(paths, target, rounds=rounds, protocol=protocol, batch=target.batch)
        for (split, sub), res in zip(part, results):
            key = f"{sub}@{chunk_id}" if split == ANCHOR else str(sub)
            dataset.add({"split": split, "key": key, "subnet": sub.to_dict(), "macs": macs(space, sub),
                         "target": target.name, "chunk": chunk_id, **res})
        done += len(part) - len(anchors)
        if progress:
            progress("measured", done, len(todo))
    return done
