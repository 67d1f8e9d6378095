"""AlphaGAN's fast inference path (batch norms folded into the convolutions, eval mode without
gradients) gives the reference output within 1e-5, follows weight changes, and stays out of
training and of gradient computation."""

import copy

import pytest
import torch
import torch.nn as nn

from models.matting_networks import AlphaGANGenerator, fold_batch_norms

TOLERANCE = 1e-5      # max |fast - reference| on alpha in [0, 1]


def _input(batch, height, width, channels=4, seed=0):
    """(B, C, H, W): normalised-RGB-like noise, a trimap in {0, 0.5, 1}, then uniform guidance."""
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, 3, height, width, generator=gen)
    trimap = torch.randint(0, 3, (batch, 1, height, width), generator=gen).float() / 2
    rest = torch.rand(batch, channels - 4, height, width, generator=gen)
    return torch.cat([rgb, trimap, rest], dim=1)


def _randomise_norms(net, seed=0):
    """Running statistics and affine parameters away from 0 / 1, so that folding has work to do."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    return net


def _fast_and_reference(net, x):
    with torch.no_grad():
        return net(x), net.reference_forward(x)


@pytest.mark.parametrize("width,size,channels_last", [(64, (64, 48), False), (8, (77, 130), False),
                                                      (64, (64, 48), True)])
def test_fast_inference_matches_the_reference_within_1e_5(width, size, channels_last):
    torch.manual_seed(0)
    net = _randomise_norms(AlphaGANGenerator(width=width, channels_last=channels_last)).eval()
    x = _input(2, *size)
    fast, ref = _fast_and_reference(net, x)
    assert fast.shape == ref.shape == (2, 1, *size)
    assert (fast - ref).abs().max().item() <= TOLERANCE
    assert net.inference_network() is not None
    # Folded: no batch norm is left outside the encoder's conv1 / bn1.
    folded = net.inference_network()
    bns = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns == ["encoder.bn1"]
    assert folded.encoder.conv1.weight.is_contiguous()             # conv1 as the reference
    assert folded.encoder.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fast_inference_with_guidance_channels_and_instance_norm_matches_the_reference():
    torch.manual_seed(0)
    net = _randomise_norms(AlphaGANGenerator(width=8, guidance_nc=7, norm="instance")).eval()
    fast, ref = _fast_and_reference(net, _input(1, 40, 56, channels=11))
    assert (fast - ref).abs().max().item() <= TOLERANCE
    assert fold_batch_norms(net.inference_network()) == 0       # instance norm: nothing to fold


def test_fast_inference_follows_weight_changes():
    torch.manual_seed(0)
    net = _randomise_norms(AlphaGANGenerator(width=8)).eval()
    x = _input(1, 32, 32)
    before, _ = _fast_and_reference(net, x)
    state = {k: v + 0.05 if k.endswith("running_mean") else v for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    after, ref = _fast_and_reference(net, x)
    assert (after - before).abs().max() > 1e-3                    # the old copy is not reused
    assert (after - ref).abs().max().item() <= TOLERANCE


def test_fast_path_is_not_taken_in_training_or_with_gradients():
    torch.manual_seed(0)
    net = AlphaGANGenerator(width=8)
    x = _input(2, 32, 32)
    net(x).mean().backward()                                       # training mode: batch statistics
    assert net._inference_copy is None
    net.eval()
    net.zero_grad()
    net(x).mean().backward()                                       # eval with gradients: the layers
    assert net._inference_copy is None
    assert net.alpha_conv.weight.grad is not None
    with torch.no_grad():
        net(x)
    assert net._inference_copy is not None
    assert not any(p.requires_grad for p in net.inference_network().parameters())
    assert not any(k.startswith("_inference") for k in net.state_dict())   # checkpoints unchanged


def test_the_default_inference_copy_is_folded_and_channels_last():
    net = AlphaGANGenerator(width=8).eval()
    with torch.no_grad():
        net(_input(1, 32, 32))
    folded = net.inference_network()
    assert folded.encoder.features_memory_format == torch.channels_last
    assert folded.encoder.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)


def test_reference_path_when_fast_inference_is_off():
    torch.manual_seed(0)
    net = AlphaGANGenerator(width=8, fast_inference=False).eval()
    with torch.no_grad():
        net(_input(1, 32, 32))
    assert net._inference_copy is None


def _calibrated(net, seed=0):
    """Batch-norm running statistics from training-mode passes (a cumulative average), so that the
    activations have the scale a trained network's have. With random weights and the default
    statistics (0, 1) they grow through the residual blocks and the sigmoid saturates at 0 or 1,
    where any summation order agrees: such a network cannot tell an exact path from a wrong one."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        for s in range(2):
            net.reference_forward(_input(2, 64, 64, seed=seed + 1 + s))
    return net.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_inference_is_as_exact_as_the_reference_on_a_calibrated_network(channels_last):
    """Against float64: the fast path's error is of the size of the float32 reference's own. On such
    a network 1e-5 from the reference is below float32's precision (the reference itself is 6.6e-5
    from float64 at 256 px, ngf 64), so the bound is relative. It catches what changes the matte:
    channels-last max-unpooling wrote repeated indices (the 3x3/2 max-pool's overlapping windows) in
    another order, 0.13 from the reference at 256 px (with 2 threads: its parallel chunks race)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_against_float64(channels_last)
    finally:
        torch.set_num_threads(threads)


def _check_against_float64(channels_last):
    torch.manual_seed(0)
    net = _calibrated(AlphaGANGenerator(width=16, channels_last=channels_last))
    x = _input(1, 96, 96)
    fast, ref = _fast_and_reference(net, x)
    with torch.no_grad():
        exact = copy.deepcopy(net).double().reference_forward(x.double())
    assert ref.std() > 0.01 and 0.02 < ref.mean() < 0.98                  # not saturated
    err_ref = (ref.double() - exact).abs().max().item()
    err_fast = (fast.double() - exact).abs().max().item()
    assert err_fast <= 2 * err_ref + 1e-6, (err_fast, err_ref)
