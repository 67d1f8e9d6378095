"""Inference on images of any size in bounded memory: overlapping tiles blended with a cosine ramp
(:func:`tiled`), and the longest side scaled down before the network and its output scaled back
(:func:`scaled`). Both wrap a network call ``fn``: (B, C, h, w) -> (B, K, h, w) (or a tuple of
such tensors / None, e.g. Deep Image Matting's raw and refined mattes), output at the input's size.

The matting models take them as test options (``--tile``, ``--tile_overlap``, ``--max_side``;
:meth:`models.matting_base.MattingModel.run_network`).
"""
import math

import torch
import torch.nn.functional as F

# Tile offsets are multiples of this: a tile then sees the stride-2 / stride-8 / pad-to-32 grids of
# the networks (AlphaGAN, DIM: output stride 8, padding to a multiple of 32) at the same phase as
# the whole image does.
TILE_ALIGN = 32


def tile_starts(size, tile, overlap, align=TILE_ALIGN):
    """Offsets of the windows that cover ``[0, size)``: ``[0]`` when ``size <= tile``; otherwise
    multiples of ``align``, ``tile - overlap`` (rounded down to ``align``) apart, the last one at
    ``size - tile`` rounded down to ``align`` (its window then reaches the end: up to ``align - 1``
    pixels longer than ``tile``). Neighbouring windows overlap by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    last = (size - tile) // align * align
    starts = list(range(0, last, stride))
    return starts + [last]


def ramp(length, lead, trail, overlap, device=None):
    """1-D blending weight of a window of ``length`` pixels: a raised-cosine ramp from near 0 to 1
    over the first ``overlap`` pixels when ``lead`` (a window before it overlaps it) and down over
    the last ``overlap`` pixels when ``trail``; 1 elsewhere. Values in (0, 1], shape (length,)."""
    w = torch.ones(length, device=device)
    n = min(overlap, length)
    if n > 0:
        up = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, device=device) + 0.5) / n)
        if lead:
            w[:n] = torch.minimum(w[:n], up)
        if trail:
            w[length - n:] = torch.minimum(w[length - n:], up.flip(0))
    return w


def _as_tuple(out):
    return (out, False) if isinstance(out, tuple) else ((out,), True)


def tiled(fn, x, tile, overlap):
    """``fn(x)`` computed tile by tile: (B, C, H, W) -> what ``fn`` returns, at (H, W).

    Windows of ``tile`` x ``tile`` pixels (:func:`tile_starts` per axis; an image no larger than
    ``tile`` is one window, i.e. ``fn(x)``), each output weighted by the outer product of the
    windows' :func:`ramp` s and normalised by the sum of the weights: a convex combination of the
    tiles' outputs at every pixel (a pointwise ``fn`` gives back ``fn(x)``; outputs in [0, 1] stay in
    [0, 1]). Memory: one window's activations plus the (B, K, H, W) sums and one (H, W) weight map.
    """
    h, w = x.shape[-2:]
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x)
    sums, weight, single = None, x.new_zeros(h, w, dtype=torch.float32), True
    for i, y0 in enumerate(ys):
        y1 = h if i == len(ys) - 1 else y0 + tile
        wy = ramp(y1 - y0, i > 0, i < len(ys) - 1, overlap, x.device)
        for j, x0 in enumerate(xs):
            x1 = w if j == len(xs) - 1 else x0 + tile
            wx = ramp(x1 - x0, j > 0, j < len(xs) - 1, overlap, x.device)
            outs, single = _as_tuple(fn(x[..., y0:y1, x0:x1]))
            wt = wy[:, None] * wx[None, :]
            if sums is None:
                sums = [None if o is None else x.new_zeros(*o.shape[:-2], h, w, dtype=torch.float32) for o in outs]
            for s, o in zip(sums, outs):
                if o is not None:
                    s[..., y0:y1, x0:x1] += o.float() * wt
            weight[y0:y1, x0:x1] += wt
    outs = tuple(None if s is None else s / weight for s in sums)
    return outs[0] if single else outs


def scaled(fn, x, max_side, nearest_channels=()):
    """``fn`` on ``x`` scaled down so that its longer side is ``max_side``, its output scaled back.

    x: (B, C, H, W); when ``max(H, W) <= max_side`` (or ``max_side`` is None) this is ``fn(x)``.
    Otherwise the channels are resized with ``area`` averaging, those in ``nearest_channels`` (a
    trimap: it stays in {0, 0.5, 1}) with ``nearest-exact``, to ``round(H s) x round(W s)``,
    ``s = max_side / max(H, W)``; each output is upsampled (bilinear, ``align_corners=False``: a
    convex combination, so [0, 1] stays [0, 1]) to (H, W), float32.
    """
    h, w = x.shape[-2:]
    if max_side is None or max(h, w) <= max_side:
        return fn(x)
    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    small = F.interpolate(x, size=size, mode='area')
    for c in nearest_channels:
        small[:, c:c + 1] = F.interpolate(x[:, c:c + 1], size=size, mode='nearest-exact')
    outs, single = _as_tuple(fn(small))
    back = tuple(None if o is None else F.interpolate(o.float(), size=(h, w), mode='bilinear', align_corners=False)
                 for o in outs)
    return back[0] if single else back
