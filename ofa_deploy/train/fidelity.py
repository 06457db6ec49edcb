"""How faithfully a run follows the paper's released code: six choices and two presets.

The paper's released code (Jordan-HS/RSS-Interference-CVPRW2022) departs from OFA's intent
in six places (ranked by effect in the project's review notes of that code,
``rss_released_code.md``, kept outside this repository).
Each is a choice of a training run; ``FIDELITY_PRESETS`` sets all six at once:

=============== ======================== ===================================================
choice          ``ofa`` (the default)    ``released-code``
=============== ======================== ===================================================
ps_lr           ``restart``: fresh       ``tail``: PS phase epochs are cumulative, each phase
                optimizer and a full     runs the tail of one cosine from the checkpoint's
                cosine per PS phase      epoch + 1, momentum carried over (``tail_start``)
teacher         ``trained`` largest      ``random``: a freshly built largest network, no
                network, eval-mode BN    weights loaded, train-mode BN (``none``: no KD)
sort            ``full`` importance      ``none``: channels never sorted (``ofa``: OFA's
                sort before each expand  sort, which keeps the e=4 prefix first before
                phase                    expand-2; exact, where OFA's float32 offset of
                                         -2e5 rounds importances inside the lowered group)
warmup_epochs   ``None``: 5-epoch ramp   ``0``: no warm-up anywhere
                (at most a fifth of the
                first phase unscaled)
data_protocol   ``ofa-deploy``: all      ``released``: 50k/10k train/validation split,
                training images, crop    crop 8-100 % + flip + brightness jitter, no
                50-100 % + flip,         normalisation, test at the native 28x28
                normalised, 32x32
macs_stem       ``None``: the data's     ``3``: MACs counted as if the stem read 3 channels
                channels                 (bucket edges move by 0.074 MFLOPs on F-MNIST)
=============== ======================== ===================================================

What ofa-deploy does where the released code cannot be copied as is:

* ``teacher=random``: the released teacher is OFA's ``MobileNetV3Large(ks=7,
  expand_ratio=6, depth_param=4)`` built for 3-channel input and the hard-coded CIFAR-100
  run config's classes, so as written it cannot run on F-MNIST. We build the largest
  network of the run's own space instead (the same architecture for the data's channels and
  classes), with PyTorch's default initialisation like the released teacher (OFA's
  ``init_models`` only touches the student), seeded from the run's seed, without dropout
  (its ``dropout_rate=0``), never loaded with weights, and run in train mode (batch-statistic
  BN) as its ``teacher_model.train()``. Only Progressive Shrinking distils.
* ``ps_lr=tail`` reproduces the released phase arithmetic including its lost epoch: the
  phases after the kernel phase train one epoch fewer than their nominal epochs (Table 1's
  25+17+3+17+3+17 trains 25+17+2+16+2+16), because each resumes at its checkpoint's
  ``epoch`` + 1 (``tail_start``). ``ps_epochs``/``epochs`` in config.toml stay the nominal
  numbers; metrics.jsonl and summary.json show the epochs trained. Momentum is not
  permuted when a sort runs inside a carried-over phase (only a custom mix does that).
* ``data_protocol=released`` (``ofa_deploy.data.released``) is the released F-MNIST
  provider; other 1-channel sets (MNIST, digits) follow the same rule (a sixth held out,
  native-size test: 8x8 for digits), 3-channel sets are refused. Validation and test run at
  the native 28x28; MACs, buckets and bucket edges are still counted at the training 32x32
  (the space's ``image_size``), as the paper's 0.074-MFLOP shift is.
* ``macs_stem=3`` changes counting only (``SearchSpace.macs_in_channels``): every subnet's
  MACs grow by 73,728, so subnets near a bucket edge can change bucket.

``resolve_fidelity(preset, **switches)`` turns a preset plus explicit switches into the
choices of a run: without a preset (``None``) the switches change the ``ofa`` defaults
(the preset is then recorded as ``custom`` unless nothing changed); with a preset, a
switch that contradicts it is an error, one that agrees is accepted. Pure Python (no
torch), so ``reproduce`` and the CLI validate before anything is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import OfaError

PS_LR = ("restart", "tail")
TEACHERS = ("trained", "random", "none")
SORTS = ("none", "ofa", "full")
DATA_PROTOCOLS = ("ofa-deploy", "released")
MACS_STEMS = (1, 3)
CUSTOM = "custom"

# How each choice is spelled on the command line (for error messages).
FLAGS = {"ps_lr": "--ps-lr", "teacher": "--teacher", "sort": "--sort", "warmup_epochs": "--warmup-epochs",
         "data_protocol": "--data-protocol", "macs_stem": "--macs-stem"}


@dataclass(frozen=True)
class FidelityChoices:
    """The six choices of a run and the preset they came from.

    ``warmup_epochs`` None = ofa-deploy's rule (``TrainConfig.resolved``); ``macs_stem``
    None = count the stem at the data's own channel count.
    """

    preset: str = "ofa"
    ps_lr: str = "restart"
    teacher: str = "trained"
    sort: str = "full"
    warmup_epochs: int | None = None
    data_protocol: str = "ofa-deploy"
    macs_stem: int | None = None

    def validate(self) -> None:
        for name, allowed in (("ps_lr", PS_LR), ("teacher", TEACHERS), ("sort", SORTS),
                              ("data_protocol", DATA_PROTOCOLS)):
            value = getattr(self, name)
            if value not in allowed:
                raise OfaError(f"unknown {FLAGS[name]} value {value!r}; choose one of {', '.join(allowed)}")
        if self.macs_stem is not None and (isinstance(self.macs_stem, bool) or self.macs_stem not in MACS_STEMS):
            raise OfaError(f"unknown --macs-stem value {self.macs_stem!r}; choose 1 or 3 (input channels the "
                           f"stem's MACs are counted with)")
        if self.warmup_epochs is not None and (isinstance(self.warmup_epochs, bool)
                                               or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0):
            raise OfaError(f"--warmup-epochs {self.warmup_epochs!r} must be a non-negative integer")
        if self.preset not in FIDELITY_PRESETS and self.preset != CUSTOM:
            raise OfaError(f"unknown --fidelity preset {self.preset!r}; choose one of {', '.join(FIDELITY_PRESETS)}")

    def switches(self) -> dict:
        """The six choices without the preset name."""
        d = asdict(self)
        d.pop("preset")
        return d

    def config_fields(self) -> dict:
        """``TrainConfig`` keyword arguments (``fidelity`` = the preset name)."""
        return {"fidelity": self.preset, **self.switches()}


FIDELITY_PRESETS: dict[str, FidelityChoices] = {
    "ofa": FidelityChoices("ofa"),
    "released-code": FidelityChoices("released-code", ps_lr="tail", teacher="random", sort="none", warmup_epochs=0,
                                     data_protocol="released", macs_stem=3),
}
SWITCHES = tuple(f.name for f in fields(FidelityChoices) if f.name != "preset")


def resolve_fidelity(preset: str | None = None, **switches) -> FidelityChoices:
    """The choices of a run from a preset name (None or ``custom`` = no explicit preset) and
    explicit switches (keyword = a ``SWITCHES`` name; a value of None = not given).

    Raises ``OfaError`` (one line naming the flag) for an unknown preset, switch or value,
    and for a switch that contradicts an explicitly chosen preset.
    """
    return _resolve(preset, switches, {})


def _resolve(preset: str | None, switches: dict, concrete: dict) -> FidelityChoices:
    """``resolve_fidelity``; ``concrete`` maps a choice whose preset value is None (a rule:
    ``warmup_epochs``, ``macs_stem``) to the value the rule gives for this run, so that an
    explicit switch equal to it neither contradicts ``ofa`` nor makes the run ``custom``."""
    unknown = sorted(set(switches) - set(SWITCHES))
    if unknown:
        raise OfaError(f"unknown fidelity switch {unknown[0]!r}; known: {', '.join(SWITCHES)}")
    given = {k: v for k, v in switches.items() if v is not None}
    if preset in (None, CUSTOM):
        base = FIDELITY_PRESETS["ofa"]
        replace(base, **given).validate()
        changed = {k: v for k, v in given.items() if _effective(base, k, concrete) != v}
        choices = replace(base, **changed)
        return replace(choices, preset=CUSTOM) if changed else choices
    if preset not in FIDELITY_PRESETS:
        raise OfaError(f"unknown --fidelity preset {preset!r}; choose one of {', '.join(FIDELITY_PRESETS)}")
    base = FIDELITY_PRESETS[preset]
    replace(base, **given).validate()  # an unknown value is named before any contradiction
    for name, value in given.items():
        wanted = _effective(base, name, concrete)
        if wanted != value:
            shown = "ofa-deploy's rule" if wanted is None else wanted
            raise OfaError(f"{FLAGS[name]} {value} contradicts --fidelity {preset} (which sets {shown}); drop one "
                           f"of them")
    return base


def _effective(choices: FidelityChoices, name: str, concrete: dict):
    value = getattr(choices, name)
    return concrete.get(name) if value is None else value


def fidelity_fields(*, fidelity: str | None, warmup_rule: int, in_channels: int, **switches) -> dict:
    """The ``TrainConfig`` fields of a run after resolution: ``fidelity`` the preset name
    (``ofa``, ``released-code`` or ``custom``), every switch a value, ``warmup_epochs`` a
    number (``warmup_rule`` = ofa-deploy's rule for this run) and ``macs_stem`` None when
    it equals the data's ``in_channels`` (so runs without the switch keep their [space])."""
    choices = _resolve(fidelity, switches, {"warmup_epochs": warmup_rule, "macs_stem": in_channels})
    out = choices.config_fields()
    if out["warmup_epochs"] is None:
        out["warmup_epochs"] = warmup_rule
    if out["macs_stem"] == in_channels:
        out["macs_stem"] = None
    return out


def choices_from_table(train: dict) -> FidelityChoices:
    """The choices recorded in a run's [train] table; a table written before these choices
    existed (no keys) reads as the ``ofa`` preset, which is what such a run trained."""
    kwargs = {name: train.get(name, getattr(FIDELITY_PRESETS["ofa"], name)) for name in SWITCHES}
    return FidelityChoices(preset=train.get("fidelity", "ofa"), **kwargs)


def with_defaults(train: dict) -> dict:
    """``train`` (a [train] table or a checkpoint's copy) with missing fidelity keys filled
    in as ``ofa``, so a run written before these choices compares equal to its reread config."""
    out = dict(train)
    out.setdefault("fidelity", "ofa")
    for name in SWITCHES:
        if name != "warmup_epochs":  # warmup_epochs predates the presets: always recorded
            out.setdefault(name, getattr(FIDELITY_PRESETS["ofa"], name))
    return out


def tail_start(phase_epochs: list[int] | tuple[int, ...], phase: int) -> int:
    """The cosine epoch s_j at which the released code starts PS phase ``phase`` (0 = largest).

    The released code trains each phase as a separate run whose ``n_epochs`` is the
    cumulative total T_j = e_0 + ... + e_j and whose start epoch is its checkpoint's
    ``epoch`` + 1: the largest phase saves its last epoch index (e_0 - 1), so the kernel
    phase starts at s_1 = e_0; every later phase saves ``epoch = n_epochs``, so it starts at
    s_j = T_{j-1} + 1 and trains T_j - s_j = e_j - 1 epochs. The learning rate is OFA's
    cosine 0.5 lr_j (1 + cos(pi (s_j + t) / T_j)) after t epochs of the phase, lr_j = lr /
    divisor (``Phase.lr_start``/``lr_span``). At F-MNIST's Table-1 epochs (25, 17, 3, 17, 3,
    17) the phases start at 0.353, 0.00487, 0.155, 0.00233 and 0.0914 of lr_j.
    """
    before = sum(phase_epochs[:phase])
    return before if phase <= 1 else before + 1


def tail_phase_epochs(phase_epochs: list[int] | tuple[int, ...]) -> list[int]:
    """Epochs each PS phase trains under ``ps_lr=tail``: e_0, e_1, then e_j - 1 (the epoch
    the released code skips by resuming at the checkpoint's ``epoch`` + 1)."""
    return [int(e) if j <= 1 else max(0, int(e) - 1) for j, e in enumerate(phase_epochs)]


__all__ = ["FidelityChoices", "FIDELITY_PRESETS", "SWITCHES", "PS_LR", "TEACHERS", "SORTS", "DATA_PROTOCOLS",
           "MACS_STEMS", "CUSTOM", "resolve_fidelity", "fidelity_fields", "choices_from_table", "with_defaults",
           "tail_start", "tail_phase_epochs"]
