"""The search space: the paper's elastic MobileNetV3 and the subnets inside it.

This module is the single description of the architecture. ``cost`` counts MACs from
it, ``nn`` builds the supernet and the static subnets from it, and nothing here needs
torch, so it runs on a device that only has TensorRT and numpy.

A subnet is three setting vectors, as in OFA and the paper:

* ``ks`` - one depthwise kernel size per block (stages x blocks, stage-major, 20 by default),
* ``e``  - one expand ratio per block (20),
* ``d``  - one depth per stage (5): the first ``d[s]`` blocks of stage ``s`` run.

Settings of blocks beyond a stage's depth do not change the network, so a ``Subnet``
is stored canonically (those settings replaced by the smallest choice) and two subnets
with the same active architecture are equal and hash alike.

(Near 500 lines: ``SearchSpace`` and ``Subnet`` refer to each other - a space makes,
checks and samples subnets, a subnet parses and canonicalises against a space - so one
module holds both rather than two joined by a lazy import. The paper's MFLOPs buckets,
which need ``cost``, are in ``buckets``.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from .errors import OfaError


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below ``divisor``
    and never more than 10% below ``value`` (the rule MobileNet and OFA use)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_out(size: int, kernel: int, stride: int) -> int:
    padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: its output width, the stride of its first block, its
    activation (``relu`` or ``hswish``) and whether its blocks have squeeze-excite."""

    width: int
    stride: int
    act: str
    se: bool


PAPER_STAGES: tuple[StageSpec, ...] = (
    StageSpec(24, 2, "relu", False),
    StageSpec(40, 2, "relu", True),
    StageSpec(80, 2, "hswish", False),
    StageSpec(112, 1, "hswish", True),
    StageSpec(160, 2, "hswish", True),
)


@dataclass(frozen=True)
class BlockSpec:
    """The static shape of one active MBConv block of a subnet.

    ``mid`` is the expanded (middle) width, ``se_hidden`` the squeeze-excite hidden
    width (0 without SE); ``size_in``/``size_out`` are the square feature-map sizes.
    """

    stage: int
    index: int
    in_ch: int
    out_ch: int
    mid: int
    kernel: int
    stride: int
    act: str
    se_hidden: int
    residual: bool
    size_in: int
    size_out: int


@dataclass(frozen=True)
class SearchSpace:
    """The elastic MobileNetV3 of the paper, at ``image_size`` x ``image_size`` input.

    Fixed parts: a 3x3 stride-2 stem conv to ``stem_width`` (h-swish), one MBConv with
    expand 1 (3x3, ReLU, width ``stem_width``), then the elastic ``stages``, then a 1x1
    conv to ``final_expand`` (h-swish), global average pool, a 1x1 conv to
    ``feature_mix`` (h-swish, no BN, no bias), dropout and a linear classifier.

    ``width_mult``: OFA's width multiplier (its published supernets use 1.0 and 1.2). The
    widths above (``stem_width``, each stage's ``width``, ``final_expand``, ``feature_mix``)
    are the base widths; the network has ``make_divisible(base x width_mult)`` channels
    (``channels``), the base itself at 1.0, so spaces without it are the ones they were.
    Middle and SE widths follow from the scaled widths as always.

    ``macs_in_channels``: count the stem's MACs as if it read this many channels (None =
    ``in_channels``). The paper's counter used a 3-channel stem for grey input too
    (``train --macs-stem 3``), which moves every subnet, and so every bucket edge, by
    2 x 9 x 16 x 16 x 16 = 73,728 MACs (0.074 MFLOPs) at 32x32. Only counting changes.
    """

    in_channels: int = 3
    num_classes: int = 10
    image_size: int = 32
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    stages: tuple[StageSpec, ...] = PAPER_STAGES
    stem_width: int = 16
    final_expand: int = 960
    feature_mix: int = 1280
    dropout: float = 0.1
    macs_in_channels: int | None = None
    width_mult: float = 1.0

    def __post_init__(self) -> None:
        if (isinstance(self.width_mult, bool) or not isinstance(self.width_mult, (int, float))
                or not 0.1 <= self.width_mult <= 4.0):
            raise OfaError(f"width_mult={self.width_mult!r} must be a number from 0.1 to 4")
        if self.in_channels < 1:
            raise OfaError(f"in_channels={self.in_channels} must be at least 1")
        if self.macs_in_channels is not None and self.macs_in_channels < 1:
            raise OfaError(f"macs_in_channels={self.macs_in_channels} must be at least 1")
        if self.num_classes < 2:
            raise OfaError(f"num_classes={self.num_classes} must be at least 2")
        if self.image_size < 8:
            raise OfaError(f"image_size={self.image_size} must be at least 8")
        for name in ("kernel_choices", "expand_choices", "depth_choices"):
            values = getattr(self, name)
            if not values or tuple(sorted(set(values))) != tuple(values):
                raise OfaError(f"{name}={values} must be non-empty, sorted and without repeats")
        if any(k % 2 == 0 for k in self.kernel_choices):
            raise OfaError(f"kernel_choices={self.kernel_choices} must all be odd")
        if self.depth_choices[0] < 1:
            raise OfaError(f"depth_choices={self.depth_choices} must be at least 1")

    # -- shape of the setting vectors -------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def max_depth(self) -> int:
        """Blocks per stage in the supernet."""
        return self.depth_choices[-1]

    @property
    def num_blocks(self) -> int:
        """Length of ``ks`` and ``e``."""
        return self.num_stages * self.max_depth

    # -- derived widths ---------------------------------------------------------------
    def channels(self, base: int) -> int:
        """A base width at this space's ``width_mult``: OFA's ``make_divisible(base x w, 8)``;
        ``base`` itself at 1.0 (so a space of custom widths keeps them exactly)."""
        return base if self.width_mult == 1.0 else make_divisible(base * self.width_mult)

    @property
    def stem_channels(self) -> int:
        """Output width of the stem and of the fixed first block."""
        return self.channels(self.stem_width)

    def stage_width(self, stage: int) -> int:
        """Output width of every block of ``stage``."""
        return self.channels(self.stages[stage].width)

    @property
    def final_expand_channels(self) -> int:
        return self.channels(self.final_expand)

    @property
    def feature_mix_channels(self) -> int:
        return self.channels(self.feature_mix)

    def stage_in_channels(self, stage: int, index: int) -> int:
        """Input width of block ``index`` of ``stage``."""
        if index > 0:
            return self.stage_width(stage)
        return self.stage_width(stage - 1) if stage > 0 else self.stem_channels

    def mid_channels(self, in_ch: int, expand: int) -> int:
        return make_divisible(round(in_ch * expand))

    def se_hidden(self, mid: int) -> int:
        return make_divisible(mid // 4)

    def feature_sizes(self) -> list[int]:
        """Feature-map size at the input of each stage and, last, after the last stage."""
        size = _conv_out(self.image_size, 3, 2)
        sizes = [size]
        for spec in self.stages:
            size = _conv_out(size, 3, spec.stride)
            sizes.append(size)
        return sizes

    @property
    def stem_size(self) -> int:
        return _conv_out(self.image_size, 3, 2)

    def block_specs(self, subnet: "Subnet") -> list[BlockSpec]:
        """The active MBConv blocks of ``subnet`` in execution order."""
        self.check(subnet)
        specs: list[BlockSpec] = []
        sizes = self.feature_sizes()
        for s, stage in enumerate(self.stages):
            size = sizes[s]
            for i in range(subnet.d[s]):
                b = s * self.max_depth + i
                in_ch = self.stage_in_channels(s, i)
                stride = stage.stride if i == 0 else 1
                kernel = subnet.ks[b]
                mid = self.mid_channels(in_ch, subnet.e[b])
                size_out = _conv_out(size, kernel, stride)
                specs.append(
                    BlockSpec(
                        stage=s,
                        index=i,
                        in_ch=in_ch,
                        out_ch=self.stage_width(s),
                        mid=mid,
                        kernel=kernel,
                        stride=stride,
                        act=stage.act,
                        se_hidden=self.se_hidden(mid) if stage.se else 0,
                        residual=stride == 1 and in_ch == self.stage_width(s),
                        size_in=size,
                        size_out=size_out,
                    )
                )
                size = size_out
        return specs

    # -- subnets ----------------------------------------------------------------------
    def subnet(self, ks: Sequence[int], e: Sequence[int], d: Sequence[int]) -> "Subnet":
        """A validated, canonical subnet of this space."""
        return Subnet(ks, e, d, space=self)

    def check(self, subnet: "Subnet") -> None:
        """Raise ``OfaError`` if ``subnet`` was not made for a space with these choices."""
        if subnet.space_key != self._choice_key:
            raise OfaError(
                f"subnet has {len(subnet.d)} stages x {len(subnet.ks) // max(1, len(subnet.d))} blocks "
                f"with choices {subnet.space_key[2:]}, this space expects {self._choice_key}"
            )

    @property
    def _choice_key(self) -> tuple:
        return (self.num_stages, self.max_depth, self.kernel_choices, self.expand_choices, self.depth_choices)

    def smallest(self) -> "Subnet":
        n, s = self.num_blocks, self.num_stages
        return self.subnet([self.kernel_choices[0]] * n, [self.expand_choices[0]] * n, [self.depth_choices[0]] * s)

    def largest(self) -> "Subnet":
        n, s = self.num_blocks, self.num_stages
        return self.subnet([self.kernel_choices[-1]] * n, [self.expand_choices[-1]] * n, [self.depth_choices[-1]] * s)

    def middle(self) -> "Subnet":
        """The median choice of every setting (k5 e4 d3 in the paper's space)."""

        def mid(choices: tuple[int, ...]) -> int:
            return choices[len(choices) // 2]

        n, s = self.num_blocks, self.num_stages
        return self.subnet(
            [mid(self.kernel_choices)] * n, [mid(self.expand_choices)] * n, [mid(self.depth_choices)] * s
        )

    def sample(
        self,
        rng: random.Random | int,
        *,
        kernel_choices: Sequence[int] | None = None,
        expand_choices: Sequence[int] | None = None,
        depth_choices: Sequence[int] | None = None,
    ) -> "Subnet":
        """A subnet with every setting drawn uniformly and independently (the paper's RSS).

        All 45 entries are drawn, inactive ones included, so the sequence of subnets
        drawn from one seed never depends on earlier draws' depths. The optional choice
        lists restrict the draw (Progressive Shrinking's phases do this).
        """
        rng = as_rng(rng)
        return self.subnet(*self.draw(rng, kernel_choices, expand_choices, depth_choices))

    def draw(self, rng: random.Random, kernel_choices: Sequence[int] | None = None,
              expand_choices: Sequence[int] | None = None,
              depth_choices: Sequence[int] | None = None) -> tuple[list[int], list[int], list[int]]:
        """The raw (ks, e, d) lists of one ``sample`` draw, not yet validated."""
        kc = tuple(kernel_choices or self.kernel_choices)
        ec = tuple(expand_choices or self.expand_choices)
        dc = tuple(depth_choices or self.depth_choices)
        n, s = self.num_blocks, self.num_stages
        ks = [rng.choice(kc) for _ in range(n)]
        e = [rng.choice(ec) for _ in range(n)]
        d = [rng.choice(dc) for _ in range(s)]
        return ks, e, d

    @property
    def population_size(self) -> int:
        """Number of distinct active architectures."""
        per_block = len(self.kernel_choices) * len(self.expand_choices)
        per_stage = sum(per_block**depth for depth in self.depth_choices)
        return per_stage**self.num_stages

    def enumerate_stage(self, stage: int) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """Every (depth, [(kernel, expand), ...]) of one stage - for tests and lookup tables."""
        import itertools

        pairs = [(k, x) for k in self.kernel_choices for x in self.expand_choices]
        for depth in self.depth_choices:
            for combo in itertools.product(pairs, repeat=depth):
                yield depth, list(combo)

    def to_dict(self) -> dict:
        extra: dict = {} if self.macs_in_channels is None else {"macs_in_channels": self.macs_in_channels}
        if self.width_mult != 1.0:
            extra["width_mult"] = float(self.width_mult)
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "kernel_choices": list(self.kernel_choices),
            "expand_choices": list(self.expand_choices),
            "depth_choices": list(self.depth_choices),
            "stages": [
                {"width": st.width, "stride": st.stride, "act": st.act, "se": st.se} for st in self.stages
            ],
            "stem_width": self.stem_width,
            "final_expand": self.final_expand,
            "feature_mix": self.feature_mix,
            "dropout": self.dropout,
            **extra,  # only when set: spaces without them keep the dict (and run configs) they had
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "search space") -> "SearchSpace":
        """Inverse of ``to_dict`` (the form stored in run configs and export sidecars);
        ``OfaError`` naming ``where`` and the key for anything of the wrong shape."""
        from .validate import finite, integer

        if not isinstance(data, dict):
            raise OfaError(f"{where} must be an object/table of settings, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise OfaError(f"{where} has unknown search-space keys: {', '.join(sorted(map(str, unknown)))}")
        kwargs = dict(data)
        for key in ("in_channels", "num_classes", "image_size", "stem_width", "final_expand", "feature_mix",
                    "macs_in_channels"):
            if key in kwargs:
                kwargs[key] = integer(kwargs[key], f"{where}: {key}", lo=1, hi=100_000)
        if "dropout" in kwargs:
            kwargs["dropout"] = finite(kwargs["dropout"], f"{where}: dropout", lo=0.0, hi=1.0, hi_open=True)
        if "width_mult" in kwargs:
            kwargs["width_mult"] = finite(kwargs["width_mult"], f"{where}: width_mult", lo=0.1, hi=4.0)
        for key in ("kernel_choices", "expand_choices", "depth_choices"):
            if key in kwargs:
                values = kwargs[key]
                if not isinstance(values, (list, tuple)) or len(values) > 16:
                    raise OfaError(f"{where}: {key} must be a list of at most 16 integers")
                kwargs[key] = tuple(integer(v, f"{where}: {key}[{i}]", lo=1, hi=64) for i, v in enumerate(values))
        if "stages" in kwargs:
            stages = kwargs["stages"]
            if not isinstance(stages, (list, tuple)) or not 1 <= len(stages) <= 16:
                raise OfaError(f"{where}: stages must be a list of 1 to 16 tables")
            out = []
            for i, st in enumerate(stages):
                label = f"{where}: stages[{i}]"
                if not isinstance(st, dict) or set(st) != {"width", "stride", "act", "se"}:
                    raise OfaError(f"{label} must have exactly the keys width, stride, act, se")
                if st["act"] not in ("relu", "hswish") or not isinstance(st["se"], bool):
                    raise OfaError(f"{label}: act must be relu or hswish and se true or false")
                out.append(StageSpec(integer(st["width"], f"{label}.width", lo=1, hi=100_000),
                                     integer(st["stride"], f"{label}.stride", lo=1, hi=2), st["act"], st["se"]))
            kwargs["stages"] = tuple(out)
        return cls(**kwargs)


DEFAULT_SPACE = SearchSpace()


def as_rng(rng: random.Random | int) -> random.Random:
    """Accept a seed or a ``random.Random`` so every sampler is explicitly seeded."""
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int):
        raise OfaError(f"a seed must be an integer or random.Random, got {rng!r}")
    return random.Random(rng)


# ASCII digits only: int() would read other scripts' digits, and no one types those on purpose.
_TEXT_RE = re.compile(r"^[0-9][0-9](-[0-9][0-9])*(_[0-9][0-9](-[0-9][0-9])*)*$")
MAX_TEXT_CHARS = 1024


@dataclass(frozen=True, init=False)
class Subnet:
    """One architecture of the space: ``ks`` and ``e`` per block, ``d`` per stage.

    Immutable and canonical: settings of blocks beyond their stage's depth are replaced
    by the space's smallest choices, so equality and hashing follow the active network.

    Text form (``str(subnet)``, read back by ``Subnet.parse``): stages separated by
    ``_``, active blocks by ``-``, each block two digits, kernel then expand ratio.
    ``"36-54_73-33-54_..."`` starts with a stage of two blocks (k3 e6, k5 e4) and a
    stage of three (k7 e3, k3 e3, k5 e4).
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    space_key: tuple = field(compare=False, repr=False)

    def __init__(
        self,
        ks: Sequence[int],
        e: Sequence[int],
        d: Sequence[int],
        *,
        space: SearchSpace | None = None,
    ) -> None:
        space = space or DEFAULT_SPACE
        ks, e, d = (_int_tuple(name, v) for name, v in (("ks", ks), ("e", e), ("d", d)))
        n_blocks, n_stages = space.num_blocks, space.num_stages
        for name, values, length in (("ks", ks, n_blocks), ("e", e, n_blocks), ("d", d, n_stages)):
            if len(values) != length:
                raise OfaError(f"{name} has {len(values)} entries, the space needs {length}")
        for name, values, choices in (
            ("ks", ks, space.kernel_choices),
            ("e", e, space.expand_choices),
            ("d", d, space.depth_choices),
        ):
            for i, v in enumerate(values):
                if v not in choices:
                    raise OfaError(f"{name}[{i}]={v} not in {choices}: {_position(name, i, space.max_depth)}")
        ks_c, e_c = list(ks), list(e)
        for s, depth in enumerate(d):
            for b in range(s * space.max_depth + depth, (s + 1) * space.max_depth):
                ks_c[b] = space.kernel_choices[0]
                e_c[b] = space.expand_choices[0]
        object.__setattr__(self, "ks", tuple(ks_c))
        object.__setattr__(self, "e", tuple(e_c))
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "space_key", space._choice_key)

    # -- forms ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int]]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d)}

    @classmethod
    def from_dict(cls, data: dict, space: SearchSpace | None = None) -> "Subnet":
        if not isinstance(data, dict):
            raise OfaError(f"a subnet must be an object with ks, e and d, got {type(data).__name__}")
        missing = [k for k in ("ks", "e", "d") if k not in data]
        if missing:
            raise OfaError(f"subnet is missing {', '.join(missing)}")
        extra = set(data) - {"ks", "e", "d"}
        if extra:
            raise OfaError(f"subnet has unknown keys: {', '.join(sorted(extra))}")
        return cls(data["ks"], data["e"], data["d"], space=space)

    def __str__(self) -> str:
        stages = []
        max_depth = len(self.ks) // len(self.d)
        for s, depth in enumerate(self.d):
            blocks = range(s * max_depth, s * max_depth + depth)
            stages.append("-".join(f"{self.ks[b]}{self.e[b]}" for b in blocks))
        return "_".join(stages)

    @classmethod
    def parse(cls, text: str, space: SearchSpace | None = None) -> "Subnet":
        """Read the text form (see the class docstring) or a JSON object ``{"ks","e","d"}``."""
        from .validate import MAX_INLINE_SPEC_CHARS, loads_json

        space = space or DEFAULT_SPACE
        if not isinstance(text, str):
            raise OfaError(f"a subnet spec must be text or an object with ks, e and d, got {type(text).__name__}")
        text = text.strip()
        if text.startswith("{"):
            if len(text) > MAX_INLINE_SPEC_CHARS:
                raise OfaError(f"subnet JSON is {len(text):,} characters long; the limit is {MAX_INLINE_SPEC_CHARS:,}")
            return cls.from_dict(loads_json(text, "subnet JSON"), space)
        if len(text) > MAX_TEXT_CHARS:
            raise OfaError(f"subnet text is {len(text):,} characters long; a subnet of this space has at most "
                           f"{len(str(space.largest()))}")
        if not _TEXT_RE.match(text):
            raise OfaError(
                f"subnet text {text[:80]!r}{'...' if len(text) > 80 else ''} is malformed: "
                "expected stages separated by '_', blocks by '-', "
                f"each block two digits <kernel><expand>, e.g. {space.middle()}"
            )
        stages = text.split("_")
        if len(stages) != space.num_stages:
            raise OfaError(f"subnet text has {len(stages)} stages, the space has {space.num_stages}")
        ks = [space.kernel_choices[0]] * space.num_blocks
        e = [space.expand_choices[0]] * space.num_blocks
        d = []
        for s, stage in enumerate(stages):
            blocks = stage.split("-")
            if len(blocks) not in space.depth_choices:
                raise OfaError(f"stage {s + 1} of {len(stages)} ({stage!r}) has {len(blocks)} "
                               f"block{'' if len(blocks) == 1 else 's'}; a stage has "
                               f"{_either(space.depth_choices)} blocks")
            d.append(len(blocks))
            for i, block in enumerate(blocks):
                ks[s * space.max_depth + i] = int(block[0])
                e[s * space.max_depth + i] = int(block[1])
        return cls(ks, e, d, space=space)

    def active_blocks(self) -> Iterable[int]:
        """Indices into ``ks``/``e`` of the blocks that run."""
        max_depth = len(self.ks) // len(self.d)
        for s, depth in enumerate(self.d):
            yield from range(s * max_depth, s * max_depth + depth)


def _position(name: str, index: int, max_depth: int) -> str:
    """Where ``name[index]`` of a subnet sits, stages and blocks counted from 1 (as the text
    form reads left to right): "the expand ratio of stage 5, block 2"."""
    if name == "d":
        return f"the depth of stage {index + 1} (counting from 1)"
    what = {"ks": "kernel size", "e": "expand ratio"}.get(name, name)
    return f"the {what} of stage {index // max_depth + 1}, block {index % max_depth + 1} (counting from 1)"


def _either(choices: Sequence[int]) -> str:
    """``(2, 3, 4)`` as "2, 3 or 4"."""
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _int_tuple(name: str, values: Sequence[object]) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise OfaError(f"{name} must be a list of integers, got {values!r}")
    out: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise OfaError(f"{name}[{i}]={v!r} is not an integer")
        out.append(v)
    return tuple(out)

