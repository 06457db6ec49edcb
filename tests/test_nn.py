"""The supernet against its independent oracles: extracted static networks,
FlopCounterMode for MACs, numel for params."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ofa_deploy.cost import cost
from ofa_deploy.errors import OfaError
from ofa_deploy.nn import StaticSubnet, Supernet
from ofa_deploy.nn.elastic import ElasticDepthwise, ElasticMBConv
from ofa_deploy.space import SearchSpace


def randomised_supernet(space: SearchSpace, seed: int = 0) -> Supernet:
    """Random weights, non-trivial BN statistics and kernel transforms away from identity,
    so that extraction has to get every slice and transform right."""
    torch.manual_seed(seed)
    net = Supernet(space)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return net


@pytest.fixture(scope="module")
def gray_net() -> Supernet:
    return randomised_supernet(SearchSpace(in_channels=1, num_classes=10), seed=0)


def subnets(space: SearchSpace, n: int, seed: int):
    rng = random.Random(seed)
    return [space.smallest(), space.middle(), space.largest()] + [space.sample(rng) for _ in range(n - 3)]


def test_extract_matches_supernet_eval_mode_and_cost_matches_flop_counter(gray_net):
    space = gray_net.space
    gray_net.eval()
    x = torch.randn(4, 1, 32, 32)
    worst = 0.0
    for s in subnets(space, 105, seed=1):
        gray_net.set_active(s)
        expected = gray_net(x)
        static = gray_net.extract(s)
        assert isinstance(static, StaticSubnet) and not static.training
        worst = max(worst, (static(x) - expected).abs().max().item())
        with FlopCounterMode(display=False) as counter:
            static(x[:1])
        macs, params = cost(space, s)
        assert counter.get_total_flops() == 2 * macs, str(s)
        assert sum(p.numel() for p in static.parameters()) == params, str(s)
    assert worst <= 1e-5


def test_extract_matches_supernet_train_mode(gray_net):
    space = gray_net.space
    x = torch.randn(8, 1, 32, 32)
    for s in subnets(space, 12, seed=2):
        net = randomised_supernet(space, seed=3)
        net.train()
        static = net.extract(s)
        assert static.training
        torch.manual_seed(5)  # the same dropout mask on both sides
        expected = net(x, s)
        torch.manual_seed(5)
        got = static(x)
        assert (got - expected).abs().max().item() <= 1e-5
        # Both updated their running statistics the same way: the supernet's active slices
        # equal the static copy's, and inactive channels were left alone.
        block, spec = net.blocks[0], space.block_specs(s)[0]
        assert torch.allclose(block.expand_bn.running_mean[: spec.mid], static.blocks[0].expand_bn.running_mean)
        untouched = randomised_supernet(space, seed=3).blocks[0].expand_bn.running_mean[spec.mid :]
        assert torch.equal(block.expand_bn.running_mean[spec.mid :], untouched)


def test_cost_matches_flop_counter_for_rgb_and_many_classes():
    space = SearchSpace(in_channels=3, num_classes=100)
    net = Supernet(space).eval()
    for s in subnets(space, 8, seed=4):
        static = net.extract(s)
        with FlopCounterMode(display=False) as counter:
            static(torch.randn(1, 3, 32, 32))
        assert cost(space, s) == (counter.get_total_flops() // 2, sum(p.numel() for p in static.parameters()))


def test_paper_extremes():
    space = SearchSpace()
    assert cost(space, space.smallest())[0] == 3_935_184
    assert cost(space, space.middle())[0] == 7_083_584
    assert cost(space, space.largest())[0] == 15_198_240


def test_extracted_is_plain_and_owns_its_weights(gray_net):
    s = gray_net.space.middle()
    static = gray_net.extract(s)
    assert not any(isinstance(m, (ElasticMBConv, ElasticDepthwise, Supernet)) for m in static.modules())
    leaf_types = {type(m) for m in static.modules() if not list(m.children())}
    assert leaf_types <= {nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Hardswish, nn.Hardsigmoid, nn.Dropout}
    super_ptrs = {t.data_ptr() for t in list(gray_net.parameters()) + list(gray_net.buffers())}
    assert not super_ptrs & {t.data_ptr() for t in list(static.parameters()) + list(static.buffers())}
    before = gray_net.state_dict()["stem.conv.weight"].clone()
    with torch.no_grad():
        static.stem.conv.weight.add_(1.0)
    assert torch.equal(gray_net.state_dict()["stem.conv.weight"], before)


def test_sort_channels_keeps_largest_function_and_orders_by_importance():
    space = SearchSpace(in_channels=1, num_classes=10)
    net = randomised_supernet(space, seed=6).eval()
    x = torch.randn(4, 1, 32, 32)
    before = net(x, space.largest())
    mid_before = net(x, space.middle())
    net.sort_channels()
    assert (net(x, space.largest()) - before).abs().max().item() <= 1e-5
    assert not torch.allclose(net(x, space.middle()), mid_before)  # smaller widths now keep other channels
    for block in net.blocks:
        importance = block.project.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])


def test_state_dict_round_trip_and_forward_with_explicit_subnet(gray_net):
    space = gray_net.space
    copy = Supernet(space)
    copy.load_state_dict(gray_net.state_dict())
    copy.eval()
    gray_net.eval()
    x = torch.randn(2, 1, 32, 32)
    s = space.sample(9)
    gray_net.set_active(s)
    assert torch.equal(copy(x, s), gray_net(x))
    assert gray_net.active == s


def test_kernel_transform_is_used_and_trained():
    space = SearchSpace(in_channels=1, num_classes=10)
    net = Supernet(space).train()
    s = space.subnet([3] * 20, [4] * 20, [2] * 5)
    loss = net(torch.randn(4, 1, 32, 32), s).square().mean()
    loss.backward()
    grad = net.blocks[0].dw.transforms["5to3"].grad
    assert grad is not None and grad.abs().sum() > 0
    assert net.blocks[0].dw.transforms["7to5"].grad is not None
    assert net.blocks[2].expand.weight.grad is None  # inactive block (depth 2)


def test_subnet_of_another_space_is_rejected(gray_net):
    other = SearchSpace(depth_choices=(1, 2, 3))
    with pytest.raises(OfaError):
        gray_net.set_active(other.smallest())
