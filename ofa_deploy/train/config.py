"""``TrainConfig``: every choice of a training run, and its resolution into a schedule.

A config is what the user asked for (``epochs=None`` = the method's default, or the
paper's with ``preset="paper"``); ``resolve`` turns it into the exact numbers the run
uses, which are what the run directory's ``config.toml`` records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import OfaError
from ..space import SearchSpace
from ..specs import resolve_subnet
from .amp import resolve_precision, table_value
from .fidelity import SWITCHES as FIDELITY_SWITCHES
from .fidelity import fidelity_fields
from .schedules import (
    METHODS,
    RSS,
    Fixed,
    Phase,
    ProgressiveShrinking,
    Sandwich,
    Schedule,
    TwoSubnets,
    ps_phase_epochs,
    scale_epochs,
)

# Table 1 of the paper: Progressive Shrinking's phase epochs (supernet B, then kernel,
# depth x2, expand x2), RSS and RSS-short. "digits" (not in the paper) is a quick preset.
PAPER_EPOCHS: dict[str, dict[str, object]] = {
    "digits": {"ps": [4, 3, 1, 3, 1, 3], "rss": 15, "rss-short": 4},
    "mnist": {"ps": [10, 7, 3, 7, 3, 7], "rss": 37, "rss-short": 10},
    "fmnist": {"ps": ps_phase_epochs(25), "rss": 82, "rss-short": 25},
    "cifar10": {"ps": ps_phase_epochs(180), "rss": 590, "rss-short": 180},
    "cifar100": {"ps": ps_phase_epochs(180), "rss": 590, "rss-short": 180},
}
PRESETS = ("paper", "paper-short")
LR_SCHEDULES = ("cosine", "constant")
DEFAULT_EPOCHS = 5  # without --epochs and without a preset: a quick run (PS split in paper proportions)
WARMUP_EPOCHS = 5


@dataclass
class TrainConfig:
    """A training run. Defaults are the paper's hyper-parameters (SGD, Nesterov momentum 0.9,
    lr 0.01, batch 64, weight decay 3e-5 without BN and biases, cosine per step).

    ``method``: one of ``METHODS``. ``per_batch``: subnets per step for ``rss`` (None = one
    per epoch, the paper's RSS) or random subnets per step for ``sandwich`` (default 2).
    ``balance``: ``none`` or ``flops``. ``subnet``: for ``fixed``. ``epochs``: total epochs
    (a multi-phase schedule is split in the paper's proportions); ``ps_epochs``: PS's six
    phase epochs explicitly. ``preset``: ``paper`` (Table 1 epochs for the dataset and
    method; RSS-short with ``paper-short``). ``lr_schedule``: None = cosine, constant for the
    paper's two-subnet sequences. ``warmup_epochs``: None = the reference's 5 with a preset,
    otherwise 5 but at most a fifth of the first phase (none with a constant lr). ``batch_size`` is
    the global batch (split over DDP ranks and ``grad_accum`` micro-batches). ``device``: ``auto`` =
    CUDA when available. ``amp``: the autocast precision (``amp.py``; ``resolved`` fills in the
    device's default: bf16 on a CUDA GPU with bf16, else fp32). ``cuda_graphs``: ``auto``/``on``/``off``, CUDA-graph
    replay of one-subnet epochs (``cuda_graphs.py``); not a hyper-parameter, so not in [train].
    ``fidelity`` (``ofa``/``released-code``) and ``ps_lr``, ``teacher``, ``sort``,
    ``data_protocol``, ``macs_stem``: how closely to follow the paper's released code
    (``fidelity.py``); None = the preset's value, ``warmup_epochs`` is the sixth choice.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    method: str = "rss"
    per_batch: int | None = None
    balance: str = "none"
    subnet: str | None = None
    epochs: int | None = None
    ps_epochs: list[int] | None = None
    preset: str | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    name: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    val_size: int = 0
    image_size: int | None = None  # the data's and the space's input size (None: 32, or the largest resolution)
    width_mult: float = 1.0  # OFA's width multiplier of the space (recorded in [space], not [train])
    val_fraction: float | None = None  # --dataset folder as one tree: held-out fraction per class (default 0.2)
    data_hash: str | None = None  # --dataset folder: hash of the folder trained on (resolved() fills it in)
    quiet: bool = False
    lr_schedule: str | None = None
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    warmup_epochs: int | None = None
    kd_ratio: float = 1.0
    amp: str | bool | None = None  # None: bf16 on a CUDA GPU with bf16, else fp32 (see amp.py)
    augment: str = "default"
    grad_accum: int = 1
    cuda_graphs: str = "auto"  # how the run executes, not what it trains: not in [train] (cuda_graphs.py)
    # torch intra-op threads on a CPU; None: $OMP_NUM_THREADS if set, else 1 for a new run and
    # the checkpoint's count on resume (trainer.cpu_threads). Not in [train] either.
    threads: int | None = None
    resolutions: list[int] | None = None  # elastic resolution: one of these input sizes per batch
    # fidelity to the paper's released code (fidelity.py): the preset, then its six choices;
    # None = not given (the preset's value, ofa-deploy's without a preset)
    fidelity: str | None = None
    ps_lr: str | None = None
    teacher: str | None = None
    sort: str | None = None
    data_protocol: str | None = None
    macs_stem: int | None = None

    def validate(self) -> None:
        from ..data.datasets import check_data_options

        check_data_options(self.dataset, data_dir=self.data_dir, image_size=self.image_size,
                           val_fraction=self.val_fraction, preset=self.preset)
        if self.method not in METHODS:
            raise OfaError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.preset is not None and self.preset not in PRESETS:
            raise OfaError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.preset == "paper-short" and self.method != "rss":
            raise OfaError("preset paper-short (RSS-short) only applies to --method rss")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise OfaError(f"unknown lr schedule {self.lr_schedule!r}; choose cosine or constant")
        if self.epochs is not None and self.epochs < 1:
            raise OfaError(f"epochs={self.epochs} must be at least 1")
        if self.epochs is not None and self.ps_epochs is not None and self.epochs != sum(self.ps_epochs):
            raise OfaError(f"epochs={self.epochs} disagrees with ps_epochs={list(self.ps_epochs)}; give one of them")
        if self.ps_epochs is not None and self.method != "ps":
            raise OfaError("ps_epochs only applies to --method ps")
        if self.per_batch is not None and self.method not in ("rss", "sandwich"):
            raise OfaError("--per-batch applies to --method rss and sandwich only")
        if self.balance != "none" and self.method not in ("rss", "sandwich"):
            raise OfaError("--balance applies to --method rss and sandwich only")
        if self.subnet is not None and self.method != "fixed":
            raise OfaError("--subnet applies to --method fixed only")
        if self.method == "fixed" and self.subnet is None:
            raise OfaError("--method fixed needs --subnet smallest|middle|largest|SPEC")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise OfaError(f"{name}={getattr(self, name)} must be at least 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.kd_ratio < 0 or not 0 <= self.momentum < 1:
            raise OfaError("lr must be > 0, weight_decay and kd_ratio >= 0, momentum in [0, 1)")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise OfaError(f"warmup_epochs={self.warmup_epochs} must not be negative")
        from .cuda_graphs import MODES as graph_modes  # imports torch: only here

        if self.cuda_graphs not in graph_modes:
            raise OfaError(f"--cuda-graphs {self.cuda_graphs!r}: choose one of {', '.join(graph_modes)}")
        from ..validate import finite

        finite(self.width_mult, "--width-mult", lo=0.1, hi=4.0)
        if self.resolutions is not None and (not isinstance(self.resolutions, (list, tuple)) or not self.resolutions):
            raise OfaError("resolutions must be a non-empty list of image sizes")

    # -- resolution ---------------------------------------------------------------------
    def resolved(self) -> "TrainConfig":
        """A copy with epochs, ps_epochs, lr_schedule, warmup_epochs and the fidelity
        choices filled in."""
        from ..data import dataset_info

        self.validate()
        cfg = replace(self)
        if cfg.lr_schedule is None:
            cfg.lr_schedule = "constant" if cfg.method in TwoSubnets.ORDERS else "cosine"
        table = PAPER_EPOCHS.get(cfg.dataset, PAPER_EPOCHS["cifar10"])  # folder: PS phase proportions only
        if cfg.dataset == "folder" and cfg.data_hash is None:
            from ..data.folder import scan

            cfg.data_hash = scan(cfg.data_dir).hash
        if cfg.method == "ps":
            if cfg.ps_epochs is None:
                if cfg.epochs is not None:
                    cfg.ps_epochs = scale_epochs(table["ps"], cfg.epochs)
                elif cfg.preset == "paper":
                    cfg.ps_epochs = list(table["ps"])
                else:
                    cfg.ps_epochs = scale_epochs(table["ps"], DEFAULT_EPOCHS)
            cfg.ps_epochs = [int(e) for e in cfg.ps_epochs]
            cfg.epochs = sum(cfg.ps_epochs)
        elif cfg.epochs is None:
            cfg.epochs = int(table["rss-short" if cfg.preset == "paper-short" else "rss"]) if cfg.preset \
                else DEFAULT_EPOCHS
        channels = dataset_info(cfg.dataset, **cfg.data_options()).in_channels
        cfg = replace(cfg, **fidelity_fields(fidelity=cfg.fidelity, warmup_rule=cfg._warmup_rule(),
                                             in_channels=channels,
                                             **{name: getattr(cfg, name) for name in FIDELITY_SWITCHES}))
        if cfg.data_protocol == "released":
            if channels != 1 or cfg.dataset == "folder":
                raise OfaError(f"--data-protocol released (the released code's F-MNIST provider) applies to "
                               f"1-channel datasets only, not {cfg.dataset}")
            if cfg.augment == "default":
                cfg.augment = "released"
        if cfg.method == "sandwich" and cfg.per_batch is None:
            cfg.per_batch = 2
        cfg.amp = resolve_precision(cfg.amp, cfg.device)
        return cfg

    def _warmup_rule(self) -> int:
        """ofa-deploy's warm-up: 5 epochs with a preset, else at most a fifth of the first
        phase; none with a constant lr."""
        first = self.ps_epochs[0] if self.method == "ps" else self.epochs
        if self.lr_schedule == "constant":
            return 0
        if self.preset:
            return min(WARMUP_EPOCHS, first)
        return min(WARMUP_EPOCHS, first // 5)

    def schedule(self, space: SearchSpace) -> Schedule:
        """The subnet schedule of this (resolved) config."""
        cfg = self if self.epochs is not None and self.warmup_epochs is not None else self.resolved()
        phase = Phase(cfg.method, cfg.epochs, cfg.lr, cfg.warmup_epochs)
        if cfg.method == "ps":
            return ProgressiveShrinking.build(space, cfg.ps_epochs, cfg.lr, cfg.warmup_epochs, cfg.seed,
                                              kd=cfg.kd_ratio > 0 and cfg.teacher != "none",
                                              ps_lr=cfg.ps_lr or "restart", sort=cfg.sort or "full")
        if cfg.method == "rss":
            return RSS(space, phase, cfg.seed, per_batch=cfg.per_batch, balance=cfg.balance)
        if cfg.method == "sandwich":
            return Sandwich(space, phase, cfg.seed, n_random=cfg.per_batch, balance=cfg.balance)
        if cfg.method == "fixed":
            return Fixed(space, phase, cfg.seed, subnet=resolve_subnet(space, cfg.subnet))
        return TwoSubnets(space, phase, cfg.seed, order=cfg.method)

    # -- config.toml --------------------------------------------------------------------
    def train_table(self) -> dict:
        """The [train] table: every hyper-parameter of the (resolved) run."""
        keys = ("method", "per_batch", "balance", "subnet", "epochs", "ps_epochs", "preset", "lr_schedule",
                "batch_size", "lr", "momentum", "nesterov", "weight_decay", "warmup_epochs", "kd_ratio", "amp",
                "augment", "grad_accum", "fidelity", *FIDELITY_SWITCHES)
        table = {k: getattr(self, k) for k in keys}
        if isinstance(self.amp, str):
            table["amp"] = table_value(self.amp)
        if self.resolutions:  # only then: checkpoints of single-resolution runs keep their [train] table
            table["resolutions"] = sorted(int(r) for r in self.resolutions)
        return table

    def data_table(self) -> dict:
        return {"dataset": self.dataset, "data_dir": str(Path(self.data_dir).expanduser().resolve())
                if self.data_dir else None, "train_subset": self.train_subset, "test_subset": self.test_subset,
                "val_size": self.val_size, "image_size": self.image_size, "val_fraction": self.val_fraction,
                "data_hash": self.data_hash}

    def input_size(self) -> int:
        """The size the data are loaded at and the space's ``image_size``: ``--image-size``,
        else the largest of ``--resolutions``, else the paper's 32."""
        from ..data import IMAGE_SIZE

        return self.image_size or (max(self.resolutions) if self.resolutions else IMAGE_SIZE)

    def data_options(self) -> dict:
        """``load_dataset`` / ``dataset_info`` keywords for this run's data."""
        return {"data_dir": self.data_dir, "image_size": self.input_size(), "val_fraction": self.val_fraction,
                "data_hash": self.data_hash, "protocol": self.data_protocol}

    @classmethod
    def from_tables(cls, config: dict) -> "TrainConfig":
        """Rebuild the config of a run directory (for ``resume``)."""
        run, data, train = config.get("run", {}), config.get("data", {}), config.get("train", {})
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in {**train, **data}.items() if k in known}
        kwargs.update(seed=run.get("seed", 0), device=run.get("device", "auto"), name=run.get("name"))
        kwargs["width_mult"] = float((config.get("space") or {}).get("width_mult", 1.0))  # runs before it: 1.0
        return cls(**kwargs)

    def as_dict(self) -> dict:
        return asdict(self)


__all__ = ["TrainConfig", "PAPER_EPOCHS", "PRESETS", "LR_SCHEDULES"]
