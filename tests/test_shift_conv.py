"""models/shift_conv.py: the CPU shift-sum path equals nn.Conv2d, forward and backward, and is taken
only where it applies."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import networks
from models.shift_conv import ShiftSum, ShiftSumConv2d, shift_sum_conv2d


def grads(fn, x, w, b, seed=0):
    """Output and gradients of x, w, b for a random linear functional of fn(x, w, b)."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = None if b is None else b.detach().requires_grad_()
    y = fn(x, w, b)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (y * g).sum().backward()
    return [y] + [t.grad for t in (x, w, b) if t is not None]


@pytest.mark.parametrize('kernel,padding,bias', [((7, 7), (0, 0), True), ((5, 5), (2, 2), False),
                                                 ((7, 5), (3, 1), True), ((4, 4), (1, 1), True)])
def test_shift_sum_conv2d_equals_conv2d_forward_and_backward(kernel, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 13, 10, dtype=torch.float64)
    w = torch.randn(1, 5, *kernel, dtype=torch.float64)
    b = torch.randn(1, dtype=torch.float64) if bias else None
    ours = grads(lambda x, w, b: shift_sum_conv2d(x, w, b, padding), x, w, b)
    ref = grads(lambda x, w, b: F.conv2d(x, w, b, padding=padding), x, w, b)
    assert ours[0].shape == ref[0].shape
    for a, e in zip(ours, ref):
        assert torch.allclose(a, e, rtol=0, atol=1e-10), (a - e).abs().max()


def test_shift_sum_backward_puts_each_tap_where_its_slice_came_from():
    z = torch.zeros(1, 4, 3, 3, requires_grad=True)        # 2x2 kernel -> (1, 1, 2, 2) output
    y = ShiftSum.apply(z, 2, 2)
    g = torch.arange(1., 5.).view(1, 1, 2, 2)
    y.backward(g)
    for tap, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        expect = torch.zeros(3, 3)
        expect[a:a + 2, b:b + 2] = g[0, 0]
        assert torch.equal(z.grad[0, tap], expect)


def count_shift_sums(monkeypatch):
    calls = []
    original = ShiftSum.apply
    monkeypatch.setattr(ShiftSum, 'apply', lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.parametrize('kwargs,layout,on,taken', [
    (dict(out_channels=1, kernel_size=7), 'contiguous', True, True),
    (dict(out_channels=1, kernel_size=7, padding=3), 'contiguous', True, True),
    (dict(out_channels=1, kernel_size=7), 'channels_last', True, False),
    (dict(out_channels=1, kernel_size=7), 'contiguous', False, False),
    (dict(out_channels=3, kernel_size=7), 'contiguous', True, False),
    (dict(out_channels=1, kernel_size=3, padding=1), 'contiguous', True, False),
    (dict(out_channels=1, kernel_size=7, stride=2), 'contiguous', True, False),
    (dict(out_channels=1, kernel_size=7, padding=3, padding_mode='reflect'), 'contiguous', True, False),
])
def test_layer_takes_the_path_only_where_it_applies_and_matches_nn_conv2d(monkeypatch, kwargs, layout, on, taken):
    torch.manual_seed(0)
    layer = ShiftSumConv2d(6, **kwargs)
    layer.use_shift_sum = on
    plain = nn.Conv2d(6, **kwargs)
    plain.load_state_dict(layer.state_dict())               # same parameters, same keys
    x = torch.randn(2, 6, 16, 16)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    calls = count_shift_sums(monkeypatch)
    y = layer(x)
    assert bool(calls) == taken
    assert torch.allclose(y, plain(x), atol=1e-5)


def test_layer_falls_back_under_autocast(monkeypatch):
    layer = ShiftSumConv2d(4, 1, kernel_size=7)
    calls = count_shift_sums(monkeypatch)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = layer(torch.randn(1, 4, 12, 12))
    assert not calls and y.dtype == torch.bfloat16


def test_instagan_mask_decoder_ends_in_it_and_the_generator_output_is_unchanged(monkeypatch):
    torch.manual_seed(0)
    net = networks.define_G(3, 3, 4, 'set', norm='instance', n_blocks=1)
    last = net.decoder_seg[-2]
    assert isinstance(last, ShiftSumConv2d) and last.out_channels == 1
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    masks = -torch.ones(2, 2, 32, 32)
    masks[:, 0, 4:20, 6:18] = 1
    masks[0, 1, 20:30, 2:12] = 1
    inp = torch.cat([image, masks], 1)
    calls = count_shift_sums(monkeypatch)
    fast = net(inp)
    assert len(calls) == 1                                   # the mask decoder's one call
    last.use_shift_sum = False
    assert torch.allclose(fast, net(inp), atol=1e-5)
    assert len(calls) == 1
