"""Conformance with MIT's reference implementation (``ofa`` on PyPI, installed by .ci/run).

Seeded random ``OFAMobileNetV3`` supernets (width 1.0 and 1.2; 32x32 with 10 classes and
224x224 with 1000) with non-identity kernel-transform matrices and perturbed BN statistics
are saved the way OFA's run manager saves them, imported with ``ofa-deploy import-ofa``,
and compared subnet by subnet: OFA's dynamic net (``set_active_subnet``) against the
imported ``Supernet``, OFA's ``get_active_subnet`` against ``Supernet.extract``, in fp32
logits to 1e-5 of their scale and in fp64 to 1e-9; one exported ONNX per 32x32
configuration against OFA as well; MACs and parameters against OFA's own counters.
Planted mapping errors (a transposed transform matrix, a dropped key) must make the
comparison fail.

Without ``ofa`` the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.conftest import run_cli

TOL = 1e-5
CONFIGS = {  # (width, image size, classes) -> random subnets besides the smallest and largest
    "w1.0-32": (1.0, 32, 10, 18),
    "w1.2-32": (1.2, 32, 10, 18),
    "w1.0-224": (1.0, 224, 1000, 3),
    "w1.2-224": (1.2, 224, 1000, 3),
}


def _ofa():
    try:
        from ofa.imagenet_classification.elastic_nn import networks
        from ofa.utils import count_net_flops, count_parameters
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MIT's ofa package is missing under CI ({exc}); .ci/run installs it with "
                        "pip install --no-deps ofa")
        pytest.skip(f"MIT's ofa package is not installed ({exc}): pip install --no-deps ofa")
    return networks.OFAMobileNetV3, count_net_flops, count_parameters


def make_ofa_supernet(width: float, classes: int, size: int = 32, seed: int = 0):
    """A seeded random OFA supernet whose every tensor matters: transforms away from the
    identity, BN statistics measured (so each layer's output is normalised and every layer
    reaches the logits - random statistics would squash the signal into constants) and then
    perturbed, BN affine parameters and SE biases perturbed."""
    import torch
    from torch import nn

    OFAMobileNetV3, _, _ = _ofa()
    torch.manual_seed(seed)
    net = OFAMobileNetV3(n_classes=classes, width_mult=width, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                         depth_list=[2, 3, 4], dropout_rate=0.1)
    with torch.no_grad():
        for key, t in net.state_dict().items():
            if key.endswith("_matrix"):
                t.add_(0.1 * torch.randn_like(t))
            elif key.endswith("bn.weight"):
                t.uniform_(0.6, 1.4)
            elif key.endswith("bn.bias") or key.endswith("fc.reduce.bias") or key.endswith("fc.expand.bias"):
                t.normal_(0.0, 0.2)
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative: the statistics of the batch below
        net.set_max_net()
        net.train()(torch.randn(8, 3, size, size))
        for m in bns:
            m.momentum = 0.1
            m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn_like(m.running_mean))
            m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
    return net.eval()


def save_like_ofa(net, path: Path, *, prefix: str = "") -> None:
    """As OFA's run manager saves a checkpoint: the state dict under 'state_dict' beside the
    epoch, best accuracy and optimizer state (``module.`` keys when wrapped in DataParallel)."""
    import torch

    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 3, "best_acc": 12.5, "optimizer": opt.state_dict(),
                "state_dict": {prefix + k: v for k, v in net.state_dict().items()}}, path)


def subnets(space, n_random: int, seed: int = 0):
    rng = random.Random(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n_random)]


def worst_difference(ofa_net, ours, chosen, x) -> float:
    """Largest |logit difference| over ``chosen`` (OFA dynamic vs ours dynamic, OFA's
    ``get_active_subnet`` vs ``extract``, and across), relative to the largest |logit| when
    that is above 1: fp32 rounding differs between the two implementations' kernels by a few
    parts in a million of the logits' scale, whatever that scale is."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for s in chosen:
            ofa_net.set_active_subnet(ks=list(s.ks), e=list(s.e), d=list(s.d))
            a = ofa_net(x)
            b = ours(x, s)
            c = ofa_net.get_active_subnet(preserve_weight=True).to(x.dtype).eval()(x)
            d = ours.extract(s).to(x.dtype).eval()(x)
            scale = max(1.0, a.abs().max().item())
            # across (dynamic vs static) only in fp32: both static builders make float32 modules,
            # so in fp64 their copies hold float32-rounded weights
            pairs = ((a, b), (c, d), (a, d)) if x.dtype == torch.float32 else ((a, b), (c, d))
            worst = max(worst, *((p - q).abs().max().item() / scale for p, q in pairs))
    return worst


@pytest.fixture(scope="module", params=list(CONFIGS))
def imported(request, tmp_path_factory):
    """(config name, OFA net, checkpoint path, imported run directory, input batch)."""
    import torch

    from ofa_deploy.cli import main

    width, size, classes, _ = CONFIGS[request.param]
    net = make_ofa_supernet(width, classes, size)
    where = tmp_path_factory.mktemp(request.param)
    ckpt = where / "ofa.pth"
    save_like_ofa(net, ckpt, prefix="module." if width == 1.2 else "")
    run_dir = where / "run"
    args = ["import-ofa", str(ckpt), "--out", str(run_dir), "--image-size", str(size)]
    assert main(args) == 0
    x = torch.randn(4 if size == 32 else 1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return request.param, net, ckpt, run_dir, x


def test_imported_space_and_provenance(imported):
    from ofa_deploy import run
    from ofa_deploy.io import read_json, sha256_file

    name, _, ckpt, run_dir, _ = imported
    width, size, classes, _ = CONFIGS[name]
    config = run.read_config(run_dir)
    space = run.space_from_config(config)
    assert (space.width_mult, space.image_size, space.num_classes) == (width, size, classes)
    assert (space.kernel_choices, space.expand_choices, space.depth_choices) == ((3, 5, 7), (3, 4, 6), (2, 3, 4))
    assert config["data"]["dataset"] == "none" and config["data"]["normalization"]["dataset"] == "imagenet"
    prov = read_json(run_dir / "import.json")
    assert prov["sha256"] == sha256_file(ckpt) and prov["tensors"] == 475
    assert (prov["width_mult"], prov["resolution"], prov["num_classes"]) == (width, size, classes)


def test_subnets_match_ofa(imported):
    """fp32 to 1e-5 (of the logits' scale), and fp64 to 1e-9: the same function, not a close one."""
    import copy

    from ofa_deploy.weights import load_supernet

    name, net, _, run_dir, x = imported
    ours, _ = load_supernet(run_dir)
    chosen = subnets(ours.space, CONFIGS[name][3])
    assert len(chosen) >= (20 if CONFIGS[name][1] == 32 else 5)
    worst = worst_difference(net, ours, chosen, x)
    assert worst <= TOL, f"{name}: fp32 logits differ from OFA's by {worst:.3g} of their scale"
    few = chosen[:3] if CONFIGS[name][1] == 32 else chosen[:2]
    worst64 = worst_difference(copy.deepcopy(net).double(), ours.double(), few, x.double())
    assert worst64 <= 1e-9, f"{name}: fp64 logits differ from OFA's by {worst64:.3g} of their scale"


def test_macs_and_params_match_ofa_counters(imported):
    from ofa_deploy.cost import cost
    from ofa_deploy.weights import load_supernet

    _, count_net_flops, count_parameters = _ofa()
    name, net, _, run_dir, _ = imported
    space = load_supernet(run_dir)[0].space
    size = CONFIGS[name][1]
    for s in subnets(space, 2, seed=5):
        net.set_active_subnet(ks=list(s.ks), e=list(s.e), d=list(s.d))
        static = net.get_active_subnet(preserve_weight=False)
        macs, params = cost(space, s)
        assert params == count_parameters(static)
        # OFA's counter adds float32 tensors: exact below 2**24 MACs (every 32x32 subnet),
        # float32's rounding of the exact count above
        theirs = count_net_flops(static, (1, 3, size, size))
        assert macs == theirs if macs < 2**24 else abs(macs - theirs) <= 4e-7 * macs, (macs, theirs)


def test_exported_onnx_matches_ofa(imported, tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch

    name, net, _, run_dir, x = imported
    if CONFIGS[name][1] != 32:
        pytest.skip("one ONNX per 32x32 configuration bounds the time; the 224 ones are compared in PyTorch")
    from ofa_deploy import run

    space = run.space_from_config(run.read_config(run_dir))
    s = subnets(space, 1, seed=3)[-1]
    out = tmp_path / "export"
    code = run_cli_quiet(["export", run_dir, "--subnet", str(s), "--target", "cpu", "--no-recalibrate", "--out", out])
    assert code == 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 1].numpy()})[0]
                          for i in range(len(x))])
    net.set_active_subnet(ks=list(s.ks), e=list(s.e), d=list(s.d))
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(got - want).max() <= TOL * max(1.0, float(np.abs(want).max()))


def run_cli_quiet(args) -> int:
    from ofa_deploy.cli import main

    return main([str(a) for a in args])


# -- planted mapping errors: the comparison above must catch them -------------------------------

def test_a_transposed_transform_matrix_is_caught(tmp_path):
    import torch

    from ofa_deploy.weights import load_supernet

    net = make_ofa_supernet(1.0, 10, 32)
    ckpt = tmp_path / "ofa.pth"
    save_like_ofa(net, ckpt)
    assert run_cli_quiet(["import-ofa", ckpt, "--out", tmp_path / "run", "--image-size", 32]) == 0
    ours, _ = load_supernet(tmp_path / "run")
    with torch.no_grad():
        matrix = ours.blocks[0].dw.transforms["5to3"]
        matrix.copy_(matrix.t().clone())  # what a mapping that transposed one matrix would load
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    worst = worst_difference(net, ours, subnets(ours.space, 0), x)
    assert worst > 100 * TOL, f"a transposed 5to3 matrix went unnoticed (difference {worst:.3g} of the scale)"


def test_a_dropped_key_is_refused(tmp_path, capsys, monkeypatch):
    import torch

    import ofa_deploy.ofa_import as imp

    net = make_ofa_supernet(1.0, 10, 32)
    state = net.state_dict()
    del state["blocks.7.conv.depth_conv.conv.7to5_matrix"]
    torch.save({"state_dict": state}, tmp_path / "dropped.pth")
    code, _, err = run_cli(capsys, "import-ofa", tmp_path / "dropped.pth", "--out", tmp_path / "a")
    assert code == 2 and "7to5_matrix" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()
    # a mapping table that forgets a key is caught too: every checkpoint key must find its place
    save_like_ofa(net, tmp_path / "ofa.pth")
    monkeypatch.setattr(imp, "_PATTERNS", tuple(p for p in imp._PATTERNS if "classifier" not in p[1]))
    code, _, err = run_cli(capsys, "import-ofa", tmp_path / "ofa.pth", "--out", tmp_path / "b")
    assert code == 2 and "classifier.linear.weight" in err and not (tmp_path / "b").exists()
