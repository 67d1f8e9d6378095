"""A faster CPU path for a wide-kernel convolution to ONE output channel (InstaGAN's mask output).

oneDNN, PyTorch's CPU convolution backend, handles a 7x7 convolution to a single output channel
poorly: it has no output channels to vectorise over. The last layer of InstaGAN's mask decoder
((M, 3 * ngf, H + 6, W + 6) -> (M, 1, H, W)) then runs at about 4 GMAC/s on this project's 2-core
CPU while the generator's 3x3 convolutions run at about 75, and it takes about 15% of a training
step at 64 px.

The same convolution, for a kernel of k x k taps, is a 1x1 convolution to k*k channels (one call
shaped like a matrix product, which oneDNN runs at full speed) followed by a sum of the k*k
channels, each shifted by its tap's offset:

    y[n, 0, i, j] = sum_{a, b} z[n, a * k + b, i + a, j + b],   z = conv1x1(x, w reshaped)

Forward plus backward of that layer take 44 ms instead of 104 (64 px, ngf 16, 24 masks) and
102 instead of 248 (128 px, ngf 32, 6 masks): medians of interleaved runs, 2 threads; the
training-step gain is in the README (``scripts/benchmark.py --sweep shift_sum``). The result
equals ``F.conv2d`` up to float rounding (the sum runs in another order;
``tests/test_shift_conv.py``). A 3x3 kernel (AlphaGAN's alpha output) or three output channels
(the image output) gain nothing or lose, so they keep oneDNN's kernel. :class:`ShiftSumConv2d` is an ``nn.Conv2d`` with the same
parameters and state-dict keys (checkpoints, official ones included, load unchanged); it takes
this path only where it was measured to pay: on CPU, one output channel, a kernel wider than 3x3,
stride 1, no dilation or groups, zero padding, a contiguous (NCHW) float input and no autocast.
Everywhere else, GPUs included, it is ``nn.Conv2d``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ShiftSum(torch.autograd.Function):
    """z (N, kh * kw, H, W) -> y (N, 1, H - kh + 1, W - kw + 1), y[n, 0, i, j] = sum over taps
    (a, b) of z[n, a * kw + b, i + a, j + b]. Its backward writes the incoming gradient into one
    zero tensor, tap by tap (autograd's own slicing would allocate a full-size tensor per tap)."""

    @staticmethod
    def forward(ctx, z, kh, kw):
        n, _, h, w = z.shape
        ho, wo = h - kh + 1, w - kw + 1
        y = z[:, 0:1, :ho, :wo].clone()
        for tap in range(1, kh * kw):
            a, b = divmod(tap, kw)
            y += z[:, tap:tap + 1, a:a + ho, b:b + wo]
        ctx.meta = (z.shape, kh, kw)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        shape, kh, kw = ctx.meta
        ho, wo = shape[2] - kh + 1, shape[3] - kw + 1
        grad_z = grad_y.new_zeros(shape)
        for tap in range(kh * kw):
            a, b = divmod(tap, kw)
            grad_z[:, tap:tap + 1, a:a + ho, b:b + wo] = grad_y
        return grad_z, None, None


def shift_sum_conv2d(x, weight, bias=None, padding=(0, 0)):
    """``F.conv2d(x, weight, bias, padding=padding)`` for ONE output channel, as a 1x1 convolution
    to kh * kw channels and a :class:`ShiftSum`.

    Args:
        x: (N, C, H, W) float.
        weight: (1, C, kh, kw); bias: (1,) or None; padding: (ph, pw) zero padding.
    Returns:
        (N, 1, H + 2 ph - kh + 1, W + 2 pw - kw + 1).
    """
    _, c, kh, kw = weight.shape
    taps = weight.reshape(c, kh * kw).t().reshape(kh * kw, c, 1, 1)
    z = F.conv2d(x, taps)                          # (N, kh * kw, H, W)
    if any(padding):                               # a 1x1 convolution commutes with zero padding
        z = F.pad(z, (padding[1], padding[1], padding[0], padding[0]))
    y = ShiftSum.apply(z, kh, kw)
    return y if bias is None else y + bias.view(1, 1, 1, 1)


class ShiftSumConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose CPU forward uses :func:`shift_sum_conv2d` where that is faster (see the
    module docstring). ``use_shift_sum = False`` turns the path off (``scripts/official_reference.py``
    does, to time the official code's kernel)."""

    use_shift_sum = True

    def _shift_sum_applies(self, x):
        return (self.use_shift_sum and x.device.type == 'cpu' and x.dtype in (torch.float32, torch.float64)
                and x.dim() == 4 and x.is_contiguous() and not torch.is_autocast_enabled('cpu')
                and self.out_channels == 1 and self.groups == 1 and self.kernel_size[0] * self.kernel_size[1] > 9
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.padding_mode == 'zeros'
                and not isinstance(self.padding, str))

    def forward(self, x):
        if self._shift_sum_applies(x):
            return shift_sum_conv2d(x, self.weight, self.bias, self.padding)
        return super().forward(x)


def set_shift_sum(module, enabled):
    """Turn the shift-sum path of every :class:`ShiftSumConv2d` inside ``module`` on or off; returns
    how many layers were set."""
    layers = [m for m in module.modules() if isinstance(m, ShiftSumConv2d)]
    for m in layers:
        m.use_shift_sum = enabled
    return len(layers)
