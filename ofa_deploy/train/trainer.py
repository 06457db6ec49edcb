"""The trainer: one loop for every schedule, with checkpoints, exact resume and DDP.

Data flow per step: the global batch of ``batch_size`` indices (a permutation seeded by
(seed, epoch)) -> this rank's slice -> ``grad_accum`` micro-batches of (n, C, 32, 32)
images, augmented on the device -> for each subnet of the step, forward and backward of
cross-entropy (+ ``kd_ratio`` x soft cross-entropy against the teacher for PS) scaled by
1 / (micro-batches x ranks) -> gradients summed over ranks -> one SGD step at the
schedule's learning rate. Dropout is reseeded from (seed, epoch, step, subnet,
micro-batch) before every forward, so every random draw of the run is a pure function of
the seed: a run resumed from its last epoch-end checkpoint replays exactly.

Preemption (``SIGTERM`` under the CLI, ``signals.py``): the step in progress finishes, then
``last.pt`` is written at that exact step - the epoch's running sums, the subnets it trained
so far and its augmentation generator with it (``"partial"``) - and the run stops with exit
143; ``--resume`` continues with the next step, bit-identical on a CPU to a run never
stopped. The time from the signal to the exit is one step plus one checkpoint write
(``benchmarks/bench_preempt.py`` measures it).

On a CPU the run trains channels-last with the supernet's CPU kernels and fused SGD
(``layout.py`` says what that gains, and why exact resume needs the teacher built as in
``_teacher``), on one torch thread unless told otherwise, the count saved in every
checkpoint and reused on resume (``threads.py`` says why).

Each ``metrics.jsonl`` line lists the distinct subnets the epoch trained with their MACs
(the first 32 for per-step schedules, with ``distinct_subnets`` and ``subnet_steps``
counting all); ``lr`` is the learning rate of the epoch's last step.

Over 400 lines on purpose: the loop, its checkpoint and its resume are one state machine
(every field a checkpoint saves is one the loop advances); split, the exact-resume
invariant would span modules. Its helpers already live beside it (``amp``, ``dist``,
``cuda_graphs``, ``layout``, ``threads``, ``progress``, ``histogram``).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__, run, signals, weights
from ..data import load_dataset, resolve_policy
from ..data.augment import apply as apply_augment
from ..data.augment import sample_params as augment_params
from ..data.folder import folder_summary
from ..errors import Interrupted, OfaError
from ..io import atomic_write, atomic_write_json, atomic_write_text, json_text
from ..space import SearchSpace, Subnet
from . import amp, dist
from .config import TrainConfig
from .cuda_graphs import EpochGraphs, prime_momentum
from .fidelity import with_defaults
from .histogram import SamplingHistogram
from .layout import resolve_device, training_layout
from .progress import EpochProgress
from .resolution import ResolutionSampler, check_training_space
from .run_tables import completed, config_from_dir, config_tables, data_info, same_run, write_summary
from .schedules import Phase, Schedule
from .threads import cpu_threads, explicit_threads

OnEpoch = Callable[[int, int], None]
"""Called on the main rank after each epoch with (epochs done, total epochs) - for callers
that show their own progress (``ofa-deploy quickstart``)."""

MAX_LISTED_SUBNETS = 32


class _StopAtStep(Exception):
    """Raised out of an epoch when a stop was requested: ``_Trainer.partial`` holds where."""


def train(config: TrainConfig, *, progress: bool = True, on_epoch: OnEpoch | None = None,
          resume_with: str | None = None) -> Path:
    """Train ``config`` into its run directory and return the directory.

    A directory already holding the same run (same data, space and hyper-parameters) is
    resumed, or returned as is if complete; one holding a different run is refused.
    ``resume_with`` is how the ``SIGTERM`` stop line says to continue (a caller that resumes
    its runs itself, ``reproduce``: its own command); default ``ofa-deploy train --resume OUT``.
    """
    cfg = config.resolved()
    data = data_info(cfg)
    space = SearchSpace(in_channels=data.in_channels, num_classes=data.num_classes, image_size=cfg.input_size(),
                        macs_in_channels=cfg.macs_stem, width_mult=cfg.width_mult)
    cfg.schedule(space)  # validates the subnet spec before anything is written
    check_training_space(space, cfg.resolutions)
    out = Path(cfg.out) if cfg.out else Path("runs") / (cfg.name or f"{cfg.dataset}-{cfg.method}-s{cfg.seed}")
    tables = config_tables(cfg, space, out)
    if out.exists():
        if (out / run.CONFIG).is_file():
            existing = run.read_config(out)
            if not same_run(existing, tables):
                raise OfaError(f"{out} holds a different run; choose another --out, or --resume {out} to "
                               f"continue that one")
            return _Trainer(out, config_from_dir(out, cfg), progress, on_epoch=on_epoch,
                            resume_with=resume_with).fit()
        from ..outputs import RUN, check_own_dir

        check_own_dir(out, RUN)  # empty (leftovers of a killed start aside), else the user's: refused
    return _Trainer(out, cfg, progress, tables=tables, on_epoch=on_epoch, resume_with=resume_with).fit()


def resume(run_dir: str | Path, *, progress: bool = True, quiet: bool | None = None,
           device: str | None = None, on_epoch: OnEpoch | None = None, cuda_graphs: str | None = None,
           threads: int | None = None) -> Path:
    """Continue the run in ``run_dir`` from its last epoch-end checkpoint (or from the start
    if it was stopped during its first epoch); a finished run is returned as is. ``device``
    overrides the one the run was started on (bit-identity is promised on the same device);
    ``threads`` the checkpoint's CPU thread count (bit-identity needs the same count)."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_tables(run.read_config(run_dir))
    if quiet is not None:
        cfg.quiet = quiet
    if device is not None:
        cfg.device = device
    if cuda_graphs is not None:
        cfg.cuda_graphs = cuda_graphs
    cfg.threads = threads
    return _Trainer(run_dir, cfg, progress, on_epoch=on_epoch).fit()


def _soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's softmax (OFA's distillation loss, T = 1)."""
    return -(F.softmax(teacher_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def _step_seed(seed: int, *parts: int) -> int:
    return random.Random(":".join(str(p) for p in (seed, "dropout", *parts))).getrandbits(63)


class _Trainer:
    """One training session of a run directory (fresh or resumed)."""

    def __init__(self, out: Path, cfg: TrainConfig, progress: bool, tables: dict | None = None,
                 on_epoch: OnEpoch | None = None, resume_with: str | None = None) -> None:
        self.on_epoch = on_epoch
        self.resume_with = resume_with or f"ofa-deploy train --resume {out}"
        self.out, self.cfg = out, cfg.resolved()
        self.tables = tables
        self.show = progress and not cfg.quiet

    # -- set-up ---------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        requested = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) \
            else "cpu"
        self.ctx = dist.init_from_env(requested)
        self.device = resolve_device(cfg.device, self.ctx.local_rank)
        self.layout = training_layout(self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.threads))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        parts = self.ctx.world_size * cfg.grad_accum
        if cfg.batch_size % parts:
            raise OfaError(f"batch_size {cfg.batch_size} must divide evenly over {self.ctx.world_size} rank(s) x "
                           f"{cfg.grad_accum} micro-batch(es)")
        if cfg.batch_size // parts < 2:
            raise OfaError(f"batch_size {cfg.batch_size} leaves fewer than 2 images per micro-batch; BatchNorm "
                           f"needs at least 2")
        self.train_set = load_dataset(cfg.dataset, "train", **cfg.data_options(), download=cfg.download,
                                      subset=cfg.train_subset, val_size=cfg.val_size, seed=cfg.seed,
                                      device=self.device)
        self.val_set = load_dataset(cfg.dataset, "val", **cfg.data_options(), val_size=cfg.val_size,
                                    seed=cfg.seed, device=self.device) if cfg.val_size else None
        if len(self.train_set) < cfg.batch_size:
            raise OfaError(f"the training set has {len(self.train_set)} images, fewer than one batch of "
                           f"{cfg.batch_size}; use a larger --train-subset or a smaller batch")
        self.steps = len(self.train_set) // cfg.batch_size
        self.space = SearchSpace(in_channels=self.train_set.in_channels, num_classes=self.train_set.num_classes,
                                 image_size=cfg.input_size(), macs_in_channels=cfg.macs_stem,
                                 width_mult=cfg.width_mult)
        if self.show and self.ctx.is_main and cfg.dataset == "folder":
            EpochProgress(True).end(folder_summary(cfg.data_options()))
        self.schedule: Schedule = cfg.schedule(self.space)
        self.policy = resolve_policy(cfg.augment, cfg.dataset)
        self.resolutions = ResolutionSampler(cfg.resolutions, cfg.seed)
        self.histogram = SamplingHistogram(self.space)
        self.precision = amp.resolve_precision(cfg.amp, self.device.type)  # fp16 resumed on a CPU: refused
        self.scaler = amp.grad_scaler(self.precision, self.device.type)
        self.graphs = EpochGraphs(cfg.cuda_graphs, self.device, self.precision, self.ctx.world_size, cfg.grad_accum,
                                  autocast=lambda: amp.autocast(self.device.type, self.precision, in_cuda_graph=True))
        # fused SGD: one update kernel instead of ~5 ops per parameter (2.6 vs 15.3 ms per step of
        # the middle subnet on one CPU thread: the whole supernet's tensors are updated). Other
        # last bits than the per-tensor SGD, so a run keeps the one it started with (``_load``).
        self.fused_sgd = self.device.type == "cpu" or bool(self.graphs.sgd_options().get("fused"))

    def _build(self) -> None:
        from ..nn import Supernet

        torch.manual_seed(self.cfg.seed)
        # converted before any checkpoint is loaded: load_state_dict copies into these
        # tensors and keeps their strides, so a resumed net has exactly the fresh one's
        self.net = Supernet(self.space).to(self.device, memory_format=self.layout).train()
        self.teacher: nn.Module | None = None
        self.optimizer = self._optimizer(self.schedule.phases[0])
        self.epoch = 0
        self.partial: dict | None = None  # the epoch in progress when a checkpoint is mid-epoch
        self.wall_time = 0.0
        self.metrics: list[dict] = []

    def _optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        """SGD with weight decay on conv/linear weights only (not on BN parameters and biases)."""
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        cfg = self.cfg
        return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}], lr=phase.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0,
                               **({"fused": True} if self.fused_sgd else {}))

    # -- the run ----------------------------------------------------------------------------
    def fit(self) -> Path:
        if completed(self.out):
            if self.show and int(os.environ.get("RANK", "0")) == 0:
                EpochProgress(True).end(f"{self.out} is already complete")
            return self.out
        saved_threads = torch.get_num_threads()
        try:
            self._setup()
            self.created = False
            try:
                self._prepare_dir()
                self._loop()
            except BaseException as exc:  # a run stopped before its first checkpoint leaves no directory
                if self.created and self.ctx.is_main and not (self.out / run.LAST).exists():
                    shutil.rmtree(self.out, ignore_errors=True)
                if isinstance(exc, KeyboardInterrupt) and (self.out / run.LAST).is_file():
                    # Ctrl-C stops at once (no checkpoint at the step, unlike SIGTERM): say what is kept
                    raise Interrupted(f"interrupted in epoch {self.epoch + 1}: the run continues from its last "
                                      f"checkpoint ({self.out / run.LAST}, written at each epoch end) with "
                                      f"{self.resume_with}") from None
                raise
            return self.out
        finally:
            torch.set_num_threads(saved_threads)  # a caller's own count (quickstart, tests) is left alone
            if hasattr(self, "ctx"):
                dist.shutdown(self.ctx)

    def _prepare_dir(self) -> None:
        """Create the run directory (main rank; ``self.created``) or load its last checkpoint."""
        self._build()
        dist.barrier(self.ctx)
        last = self.out / run.LAST
        if last.is_file():
            self._load(weights.load_checkpoint(last, map_location=str(self.device)))
        elif self.ctx.is_main:
            if not self.out.exists():
                self.out.mkdir(parents=True)
                self.created = True
            if not (self.out / run.CONFIG).is_file():
                tables = self.tables or config_tables(self.cfg, self.space, self.out)
                tables["run"]["device"] = str(self.device)
                run.write_config(self.out, tables)
        dist.barrier(self.ctx)

    def _loop(self) -> None:
        with signals.deferred():  # SIGTERM: a checkpoint at the next step end, then exit 143
            self._epochs()

    def _stop_requested(self) -> bool:
        """Whether to stop now; under DDP every rank learns it at the same step (torchrun
        forwards SIGTERM to all, each may see it at another step)."""
        if not (self.ctx.enabled and signals.active()):
            return signals.requested()
        return dist.all_reduce_sum([float(signals.requested())], self.ctx, self.device)[0] > 0

    def _epochs(self) -> None:
        sched = self.schedule
        bar = EpochProgress(self.show and self.ctx.is_main)
        session_start = None
        wall_before = self.wall_time
        while self.epoch < sched.total_epochs:
            epoch = self.epoch
            index, phase, in_phase = sched.locate(epoch)
            if in_phase == 0 and self.partial is None:  # a mid-epoch checkpoint has its phase started
                self._start_phase(phase)
            if session_start is None:
                session_start = time.perf_counter()
            bar.start(epoch + 1, sched.total_epochs, phase.name, self.steps)
            try:
                row = self._train_epoch(epoch, phase, in_phase, bar)
            except _StopAtStep:
                self.wall_time = wall_before + (time.perf_counter() - session_start)
                step = self.partial["step"] if self.partial else 0
                self._checkpoint_and_stop(f"epoch {epoch + 1} step {step}/{self.steps}", bar)
            if not math.isfinite(row["loss"]):  # diverged: keep the last good checkpoint, write nothing
                raise OfaError(f"training diverged in epoch {epoch + 1}: the loss is {row['loss']}; lower --lr "
                               f"(now {phase.lr:g}) and start a new run")
            self.wall_time = wall_before + (time.perf_counter() - session_start)
            self.epoch += 1
            self.metrics.append(row)
            if self.ctx.is_main:
                self._save(run.LAST)
                self._write_logs()
            dist.barrier(self.ctx)
            if self.epoch < sched.total_epochs and self._stop_requested():
                self._checkpoint_and_stop(f"the end of epoch {self.epoch}", bar, saved=True)
            if self.on_epoch is not None and self.ctx.is_main:
                self.on_epoch(self.epoch, sched.total_epochs)
            val = f"  val {row['val_acc']:.4f}" if "val_acc" in row else ""
            bar.end(f"epoch {epoch + 1}/{sched.total_epochs} [{phase.name}] loss {row['loss']:.4f}  "
                    f"acc {row['train_acc']:.4f}{val}  lr {row['lr']:.2e}  {row['images_per_s']:,.0f} img/s  "
                    f"{row['epoch_time_s']:.1f}s")
        if self.ctx.is_main:
            self._finish()
        dist.barrier(self.ctx)

    def _checkpoint_and_stop(self, where: str, bar: EpochProgress, saved: bool = False) -> NoReturn:
        """Write ``last.pt`` at ``where`` (unless ``saved``) and raise ``Terminated``."""
        if self.ctx.is_main and not saved:
            self._save(run.LAST)
            self._write_logs()
        dist.barrier(self.ctx)
        bar.stop()
        signals.stop(f"terminated by SIGTERM: checkpoint at {where} in {self.out / run.LAST}; continue with "
                     f"{self.resume_with}")

    def _start_phase(self, phase: Phase) -> None:
        """Phase boundaries: fresh optimizer (momentum reset, as OFA's separate phase runs)
        unless the phase carries it over, channel sorting before elastic expand, the teacher
        before the first distilled phase."""
        if phase.kd and self.teacher is None:
            rand = self.cfg.teacher == "random"
            self.teacher = self._teacher(None if rand else self.net.extract(self.space.largest()).state_dict(),
                                         self.cfg.teacher)
        if phase.sort_channels:
            self.net.sort_channels(phase.sort_keep)
        if not phase.carry_momentum:
            self.optimizer = self._optimizer(phase)

    def _lr(self, phase: Phase, in_phase: int, step: int) -> float:
        t = in_phase * self.steps + step
        warm = phase.warmup_epochs * self.steps
        if t < warm:
            return phase.lr * (t + 1) / warm
        if self.cfg.lr_schedule == "constant":
            return phase.lr
        if phase.lr_span is not None:
            return phase.tail_lr(t, self.steps)
        span = max(1, (phase.epochs - phase.warmup_epochs) * self.steps)
        return 0.5 * phase.lr * (1 + math.cos(math.pi * (t - warm) / span))

    def _train_epoch(self, epoch: int, phase: Phase, in_phase: int, bar: EpochProgress) -> dict:
        cfg, ctx, device = self.cfg, self.ctx, self.device
        B = cfg.batch_size
        local = B // ctx.world_size
        micro = local // cfg.grad_accum
        perm = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(
            _step_seed(cfg.seed, epoch, -1))).to(device)
        aug_gen = torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, -2))
        images, labels = self.train_set.images, self.train_set.labels
        counts: dict[Subnet, int] = {}
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        lr = phase.lr
        first, elapsed_before = 0, 0.0
        if self.partial is not None:  # resumed from a checkpoint written at a step of this epoch
            part, self.partial = self.partial, None
            first, elapsed_before, lr = part["step"], part["elapsed_s"], part["lr"]
            aug_gen.set_state(part["augment_rng"])
            counts = dict(part["counts"])
            if ctx.is_main:
                seen = part["seen"]
                loss_sum.copy_(part["loss_sum"])
                correct.copy_(part["correct"])
        kd = phase.kd and self.teacher is not None and cfg.kd_ratio > 0
        autocast = amp.autocast(device.type, self.precision)
        if self.fused_sgd:
            prime_momentum(self.optimizer)  # fused SGD needs every buffer of a group or none (cuda_graphs.py)
        graphed = self.graphs.for_epoch(self.net, self.optimizer, self.schedule, epoch, self.steps, kd=kd)
        self.net.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter() - elapsed_before
        for step in range(first, self.steps):
            idx = perm[step * B:(step + 1) * B]
            theta = None if self.policy.identity else augment_params(self.policy, B, aug_gen)
            lo = ctx.rank * local
            subnets = self.schedule.subnets(epoch, step)
            for s in subnets:
                counts[s] = counts.get(s, 0) + 1
            self.optimizer.zero_grad(set_to_none=True)
            for m in range(cfg.grad_accum):
                sl = slice(lo + m * micro, lo + (m + 1) * micro)
                x, y = images[idx[sl]], labels[idx[sl]]
                if theta is not None:
                    x = apply_augment(x, theta[sl])
                x = self.resolutions.apply(x, epoch, step).contiguous(memory_format=self.layout)
                with torch.no_grad(), autocast:
                    t_logits = self.teacher(x).float() if kd else None
                for k, subnet in enumerate(subnets):
                    torch.manual_seed(_step_seed(cfg.seed, epoch, step, k, ctx.rank * cfg.grad_accum + m))
                    if graphed is not None and graphed.covers(subnets, x):  # forward, backward and update replayed
                        loss, logits = graphed.run(x, y, self._lr(phase, in_phase, step))
                    else:
                        with autocast:
                            logits = self.net(x, subnet).float()
                        loss = F.cross_entropy(logits, y)
                        if kd:
                            loss = loss + cfg.kd_ratio * _soft_cross_entropy(logits, t_logits)
                        scaled = loss / (cfg.grad_accum * ctx.world_size)
                        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    loss_sum += loss.detach().double() * y.shape[0]
                    correct += (logits.detach().argmax(1) == y).sum()
                    seen += y.shape[0]
            dist.all_reduce_grads(self.net, ctx)
            lr = self._lr(phase, in_phase, step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            elif not (graphed is not None and graphed.took_step):
                self.optimizer.step()
            if bar.bar:
                elapsed = time.perf_counter() - start
                bar.update(loss_sum.item() / max(1, seen), correct.item() / max(1, seen),
                           (step + 1) * B / max(elapsed, 1e-9))
            if self._stop_requested():
                # the epoch's sums so far, over all ranks (a resume adds them on the main rank only)
                sums = dist.all_reduce_sum([loss_sum.item(), correct.item(), seen], ctx, device) if ctx.enabled \
                    else [loss_sum.detach().cpu().clone(), correct.detach().cpu().clone(), seen]
                self.partial = {"epoch": epoch, "step": step + 1, "lr": lr, "seen": int(sums[2]),
                                "loss_sum": torch.as_tensor(sums[0], dtype=torch.float64),
                                "correct": torch.as_tensor(sums[1], dtype=torch.float64),
                                "augment_rng": aug_gen.get_state(), "counts": list(counts.items()),
                                "elapsed_s": time.perf_counter() - start}
                if graphed is not None:
                    graphed.close()
                raise _StopAtStep
        if graphed is not None:
            graphed.close()
        dist.average_buffers(self.net, ctx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        total_loss, total_correct, total_seen = dist.all_reduce_sum([loss_sum.item(), correct.item(), seen], ctx,
                                                                    device)
        for s, n in counts.items():
            self.histogram.add(s, n)
        row = {
            "epoch": epoch + 1,
            "phase": phase.name,
            "lr": lr,
            "loss": total_loss / total_seen,
            "train_acc": total_correct / total_seen,
            "subnets": [{"subnet": str(s), "macs": self.histogram.macs(s)} for s in list(counts)[:MAX_LISTED_SUBNETS]],
            "distinct_subnets": len(counts),
            "subnet_steps": sum(counts.values()),
            "epoch_time_s": elapsed,
            "images_per_s": self.steps * B / elapsed,
        }
        row.update(self.resolutions.epoch_counts(epoch, self.steps))
        if self.val_set is not None:
            row["val_acc"] = self._validate(self.schedule.subnets(epoch, self.steps - 1)[0])
        return row

    def _validate(self, subnet: Subnet) -> float:
        """Accuracy on the held-out split of ``subnet`` with BN recalibrated on training images."""
        from ..evaluate.bn import recalibrated_subnet
        from ..evaluate.metrics import evaluate_accuracy

        net = recalibrated_subnet(self.net, subnet, self.train_set.images, seed=self.cfg.seed)
        acc, _ = evaluate_accuracy(net, self.val_set.images, self.val_set.labels)
        return acc

    # -- files ------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "epoch": self.epoch,
            "partial": self.partial,
            "schedule": {"method": self.cfg.method, "seed": self.cfg.seed, "epochs": self.schedule.total_epochs,
                         "phase": self.schedule.locate(self.epoch if self.partial else self.epoch - 1)[0],
                         "steps_per_epoch": self.steps},
            "lr_schedule": {"kind": self.cfg.lr_schedule, "last_lr": self.optimizer.param_groups[0]["lr"]},
            "histogram": self.histogram.to_json(),
            "metrics": self.metrics,
            "wall_time_s": self.wall_time,
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
            "sgd": "fused" if self.fused_sgd else "per-tensor",
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "train": self.cfg.train_table(),
            "version": __version__,
        }

    def _teacher(self, state: dict | None, kind: str | None = "trained") -> nn.Module:
        """The frozen teacher holding ``state``, built the same way whether ``state`` was
        just extracted or read from a checkpoint: a fresh net converted to the training
        layout, so its tensors' strides (and with them oneDNN's kernels and the teacher's
        logits, bit for bit) do not depend on where the weights came from.

        ``kind`` ``random`` (``--teacher random``, the released code): ``state`` None on first
        use = a fresh largest network seeded from the run's seed, never loaded with weights,
        without dropout and in train mode (batch-statistics BN), as the released teacher."""
        from ..nn import StaticSubnet

        rand = kind == "random"
        space = replace(self.space, dropout=0.0) if rand else self.space
        if state is None:
            torch.manual_seed(_step_seed(self.cfg.seed, "teacher"))
        teacher = StaticSubnet(space, space.largest()).to(self.device, memory_format=self.layout)
        if state is not None:
            teacher.load_state_dict(state)
        return teacher.train(rand).requires_grad_(False)

    def _save(self, name: str) -> None:
        state = self._state()
        # read back and checked before it replaces the previous checkpoint (a full disk: that one stays)
        atomic_write(self.out / name, lambda f: torch.save(state, f), verify=True)

    def _load(self, ckpt: dict) -> None:
        if with_defaults(ckpt.get("train") or {}) != self.cfg.train_table():
            raise OfaError(f"the checkpoint in {self.out} was written with other hyper-parameters than its "
                           f"config.toml")
        if ckpt.get("schedule", {}).get("steps_per_epoch") != self.steps:
            raise OfaError(f"the checkpoint in {self.out} has {ckpt['schedule'].get('steps_per_epoch')} steps per "
                           f"epoch, this data gives {self.steps}; was the dataset changed?")
        try:
            self.net.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise OfaError(f"checkpoint of {self.out} does not fit its [space]: {str(exc).splitlines()[0]}") from None
        self.epoch = int(ckpt["epoch"])
        self.partial = ckpt.get("partial")
        if self.partial is not None and (self.partial.get("epoch") != self.epoch
                                         or not 0 < int(self.partial.get("step", 0)) <= self.steps):
            raise OfaError(f"the checkpoint in {self.out} stopped at a step that does not fit its epoch count")
        if ckpt.get("teacher") is not None:
            self.teacher = self._teacher(ckpt["teacher"], self.cfg.teacher)
        # checkpoints from before fused SGD on a CPU: the per-tensor SGD they were trained with
        self.fused_sgd = ckpt["sgd"] == "fused" if "sgd" in ckpt else bool(self.graphs.sgd_options().get("fused"))
        if self.epoch < self.schedule.total_epochs:
            self.optimizer = self._optimizer(self.schedule.locate(self.epoch)[1])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.histogram.load_json(ckpt["histogram"])
        self.metrics = list(ckpt["metrics"])
        self.wall_time = float(ckpt["wall_time_s"])
        rng = ckpt.get("rng") or {}
        if rng.get("python") is not None:
            random.setstate(rng["python"])
        if rng.get("torch") is not None:
            torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        threads = ckpt.get("threads")
        if threads is not None and self.device.type == "cpu" and explicit_threads(self.cfg.threads) is None:
            torch.set_num_threads(int(threads))  # resumed at the count it was trained at: bit-identical
        if threads is not None and self.device.type == "cpu" and threads != torch.get_num_threads() \
                and self.ctx.is_main and not self.cfg.quiet:
            print(f"warning: {self.out} was trained with {threads} torch thread(s), this resume uses "
                  f"{torch.get_num_threads()}; it continues exactly, but not bit-identically to an "
                  f"uninterrupted run (resume without --threads and OMP_NUM_THREADS for that)", file=sys.stderr)
        if self.ctx.is_main:
            self._write_logs()  # drop lines of an epoch the crash interrupted after its checkpoint

    def _write_logs(self) -> None:
        atomic_write_text(self.out / run.METRICS, "".join(json_text(m) + "\n" for m in self.metrics))
        atomic_write_json(self.out / run.HISTOGRAM, self.histogram.to_json())

    def _finish(self) -> None:
        with open(self.out / run.LAST, "rb") as src:
            atomic_write(self.out / run.FINAL, lambda f: shutil.copyfileobj(src, f), verify=True)
        config = run.read_config(self.out)
        config["run"]["completed"] = True
        run.write_config(self.out, config)
        write_summary(self.out, self.cfg, self.metrics, self.wall_time, self.schedule.total_epochs)


__all__ = ["train", "resume"]
