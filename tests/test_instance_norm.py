"""models/instance_norm.py: the group-norm CPU path equals nn.InstanceNorm2d, forward and backward,
is taken only where it applies, and is what the networks build for --norm instance."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import networks
from models.instance_norm import InstanceNorm2d, set_group_norm
from scripts.benchmark import parse_args, sweep_configs, to_argv
from scripts.official_reference import PerSlotSetDiscriminator, PerSlotSetGenerator


def count_group_norms(monkeypatch):
    calls = []
    original = F.group_norm
    monkeypatch.setattr(F, 'group_norm', lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def outputs_and_grads(layer, x, seed=0):
    """Output and the gradients of x and of the layer's parameters for a random linear functional."""
    x = x.detach().requires_grad_()
    y = layer(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (y * g).sum().backward()
    return [y, x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize('affine', [False, True])
def test_group_norm_path_equals_instance_norm_forward_and_backward(monkeypatch, affine):
    torch.manual_seed(0)
    ours = InstanceNorm2d(5, affine=affine).double()
    plain = nn.InstanceNorm2d(5, affine=affine).double()
    if affine:
        with torch.no_grad():
            ours.weight.normal_(), ours.bias.normal_()
        plain.load_state_dict(ours.state_dict())          # same parameters, same keys
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64) * 3 + 1
    calls = count_group_norms(monkeypatch)
    fast = outputs_and_grads(ours, x)
    assert calls == [1]
    ref = outputs_and_grads(plain, x)
    assert len(fast) == len(ref) == (4 if affine else 2)
    for a, e in zip(fast, ref):
        assert torch.allclose(a, e, rtol=0, atol=1e-10), (a - e).abs().max()


@pytest.mark.parametrize('shape,kwargs,on,taken', [
    ((2, 4, 8, 8), {}, True, True),
    ((2, 4, 8, 8), {}, False, False),
    ((4, 8, 8), {}, True, False),                         # unbatched input
    ('channels_last', {}, True, False),
    ((2, 4, 8, 8), {'track_running_stats': True}, True, False),
])
def test_layer_takes_the_path_only_where_it_applies(monkeypatch, shape, kwargs, on, taken):
    torch.manual_seed(0)
    layer = InstanceNorm2d(4, **kwargs)
    layer.use_group_norm = on
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last) if shape == 'channels_last' \
        else torch.randn(*shape)
    calls = count_group_norms(monkeypatch)
    y = layer(x)
    assert bool(calls) == taken
    plain = nn.InstanceNorm2d(4, **kwargs)
    assert torch.allclose(y, plain(x), atol=1e-5)


def test_one_pixel_input_keeps_instance_norms_error():
    with pytest.raises(ValueError, match='more than 1 spatial element'):
        InstanceNorm2d(3)(torch.randn(2, 3, 1, 1))


def test_networks_build_it_with_the_official_layout_and_biases():
    norm = networks.get_norm_layer('instance')(8)
    assert isinstance(norm, InstanceNorm2d) and not norm.affine and not norm.track_running_stats
    assert isinstance(networks.get_norm_layer('instance', instance_affine=True)(8), InstanceNorm2d)  # AlphaGAN's
    net = networks.define_G(3, 3, 4, 'set', norm='instance', n_blocks=1)
    # convs before instance norm keep their bias (official checkpoints hold one)
    assert net.encoder_img[1].bias is not None and net.encoder_seg[4].bias is not None
    assert 'encoder_img.1.bias' in net.state_dict()
    assert set_group_norm(net, False) > 0
    assert not any(m.use_group_norm for m in net.modules() if isinstance(m, InstanceNorm2d))


def test_official_structure_turns_the_path_off_and_the_instance_norm_sweep_toggles_it():
    args = parse_args(['--sweep', 'instance_norm', '--crop_size', '32'])
    (_, on), (_, off) = sweep_configs(args)
    assert '--no_group_norm' not in to_argv(args, **on) and '--no_group_norm' in to_argv(args, **off)
    G = networks.define_G(3, 3, 4, 'set', norm='instance', n_blocks=1)
    D = networks.define_D(3, 4, 'set', 3, 'instance')
    norms = lambda net: [m.use_group_norm for m in net.modules() if isinstance(m, InstanceNorm2d)]
    assert norms(G) and all(norms(G)) and norms(D) and all(norms(D))
    PerSlotSetGenerator(G), PerSlotSetDiscriminator(D)
    assert not any(norms(G)) and not any(norms(D))
