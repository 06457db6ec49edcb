"""``ofa-deploy import-ofa`` without MIT's package: OFA-format checkpoints written from the
project's own ``Supernet`` through the inverse key mapping, the width multiplier in the
space, the export of a run without data, and bad input (one line, exit 2, nothing written).
Conformance with the reference itself is tests/test_ofa_conformance.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_fake_run, run_cli


def ofa_checkpoint(path: Path, *, width: float = 1.0, classes: int = 10, old_names: bool = False,
                   prefix: str = "", wrap: bool = True, seed: int = 0) -> dict:
    """An OFA-format checkpoint of a random ``Supernet`` (names through ``ours_to_ofa``;
    ``old_names``: OFA's dynamic spellings ``bn.bn.``, ``conv.conv.weight``, ``linear.linear.``
    and ``mobile_inverted_conv``). Returns our state dict."""
    import torch

    from ofa_deploy.nn import Supernet
    from ofa_deploy.ofa_import import ours_to_ofa
    from ofa_deploy.space import SearchSpace

    torch.manual_seed(seed)
    net = Supernet(SearchSpace(num_classes=classes, width_mult=width))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = net.state_dict()
    state = {}
    for key, value in ours.items():
        name = ours_to_ofa(key)
        assert name is not None, key
        if old_names and name.startswith("blocks."):
            name = name.replace(".conv.", ".mobile_inverted_conv.", 1)
            name = name.replace(".bn.", ".bn.bn.").replace("conv.conv.weight", "conv.conv.conv.weight") \
                if ".blocks.0." not in "." + name else name
        if old_names and name.startswith("classifier."):
            name = name.replace(".linear.", ".linear.linear.")
        state[prefix + name] = value
    torch.save({"state_dict": state, "epoch": 1} if wrap else state, path)
    return ours


@pytest.mark.parametrize("variant", [{}, {"old_names": True, "prefix": "module."}, {"wrap": False, "width": 1.2}])
def test_round_trip_of_every_tensor(tmp_path, capsys, variant):
    import json

    import torch

    ours = ofa_checkpoint(tmp_path / "c.pth", **variant)
    code, out, err = run_cli(capsys, "import-ofa", tmp_path / "c.pth", "--out", tmp_path / "run", "--image-size", 32)
    assert code == 0, err
    loaded = torch.load(tmp_path / "run" / "final.pt", weights_only=True)["model"]
    assert set(loaded) == set(ours) and all(torch.equal(loaded[k], ours[k]) for k in ours)
    code, out, _ = run_cli(capsys, "space", "--run", tmp_path / "run", "--json")
    assert code == 0 and json.loads(out)["space"].get("width_mult", 1.0) == variant.get("width", 1.0)


def test_width_mult_space():
    from ofa_deploy.cost import cost
    from ofa_deploy.nn import Supernet
    from ofa_deploy.space import SearchSpace

    assert "width_mult" not in SearchSpace().to_dict()  # old runs' [space] unchanged
    space = SearchSpace(width_mult=1.2, image_size=64)
    assert (space.stem_channels, [space.stage_width(s) for s in range(5)], space.final_expand_channels,
            space.feature_mix_channels) == (24, [32, 48, 96, 136, 192], 1152, 1536)
    assert SearchSpace.from_dict(space.to_dict()) == space
    net = Supernet(space).eval()
    for s in (space.smallest(), space.largest()):
        assert sum(p.numel() for p in net.extract(s).parameters()) == cost(space, s)[1]


def test_export_without_data(tmp_path, capsys):
    import json

    ofa_checkpoint(tmp_path / "c.pth", classes=7)
    assert run_cli(capsys, "import-ofa", tmp_path / "c.pth", "--out", tmp_path / "run", "--image-size", 32)[0] == 0
    code, _, err = run_cli(capsys, "export", tmp_path / "run", "--smallest", "--target", "cpu")
    assert code == 2 and "--no-recalibrate" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "export", tmp_path / "run", "--smallest", "--target", "cpu", "--no-recalibrate",
                           "--out", tmp_path / "e")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "e" / "model.json").read_text())
    assert sidecar["accuracy"] is None and sidecar["bn"]["recalibrated"] is False
    assert sidecar["parity"]["source"].startswith("random") and sidecar["parity"]["passed"]
    assert sidecar["input"]["normalization"]["dataset"] == "imagenet" and sidecar["num_classes"] == 7
    code, _, err = run_cli(capsys, "eval", tmp_path / "run", "--subnet", "smallest")
    assert code == 2 and "no data set" in err


def _bad(capsys, tmp_path, checkpoint, *extra) -> str:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "import-ofa", checkpoint, "--out", out, *extra)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ofa-deploy: error: "), err
    assert not out.exists()
    return lines[0]


def test_bad_checkpoints(tmp_path, capsys):
    import argparse

    import torch

    z = torch.zeros(2, 2)
    torch.save({"state_dict": {"input_stem.0.conv.conv.weight": z}}, tmp_path / "resnet.pth")
    assert "ResNet" in _bad(capsys, tmp_path, tmp_path / "resnet.pth")
    torch.save({"first_conv.conv.weight": z, "blocks.1.conv.depth_conv.conv.weight": z,
                "feature_mix_layer.conv.weight": z, "feature_mix_layer.bn.weight": z,
                "classifier.linear.weight": z}, tmp_path / "proxyless.pth")
    assert "ProxylessNAS" in _bad(capsys, tmp_path, tmp_path / "proxyless.pth")

    ofa_checkpoint(tmp_path / "good.pth")
    assert "--width-mult 1.2 does not match" in _bad(capsys, tmp_path, tmp_path / "good.pth", "--width-mult", "1.2")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "truncated or not a PyTorch checkpoint" in _bad(capsys, tmp_path, tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    assert "not a PyTorch checkpoint" in _bad(capsys, tmp_path, tmp_path / "text.pth")
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "code.pth")
    assert "needs code to load" in _bad(capsys, tmp_path, tmp_path / "code.pth")
    assert "does not exist" in _bad(capsys, tmp_path, tmp_path / "missing.pth")


def test_classifier_of_another_class_count_than_the_data(tmp_path, capsys):
    run_dir = make_fake_run(tmp_path / "run", num_classes=7)  # digits has 10 classes
    code, _, err = run_cli(capsys, "eval", run_dir, "--subnet", "smallest", "--calib-n", 10)
    assert code == 2 and "10 classes, the run's classifier 7" in err
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--target", "cpu", "--out", tmp_path / "e")
    assert code == 2 and "10 classes" in err and not (tmp_path / "e").exists()
