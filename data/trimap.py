"""Trimaps from alpha mattes, as in Deep Image Matting (Xu et al., 2017) and AlphaGAN's public seeds.

A trimap is an ``(H, W) uint8`` array with values exactly ``{0, 128, 255}``: 0 = known background,
255 = known foreground, 128 = unknown. Alpha is an ``(H, W)`` (or ``(H, W, 1)``) array, either an
integer type on the 0..255 scale (e.g. an 8-bit PNG) or a float type on the 0..1 scale.

Two generation modes, both with random structuring element size and iteration count:

- ``dilate`` (DIM reimplementation used by one AlphaGAN seed): ``fg = alpha == 1``,
  ``unknown = dilate(alpha > 0) - fg``; default 3x3 ellipse, 1..19 iterations.
- ``dilate_erode`` (the other AlphaGAN seed): ``fg = erode(alpha == 1)``,
  ``unknown = dilate(alpha > 0) - fg``; default ellipse of size 2..4, 5..14 iterations.

In both modes every pixel with ``0 < alpha < 1`` is unknown (128): such a pixel is in
``alpha > 0`` (so in its dilation) and never in ``alpha == 1`` (so never in ``fg``).
Randomness comes only from the ``numpy.random.Generator`` passed in.
"""
import cv2
import numpy as np

TRIMAP_MODES = ('dilate', 'dilate_erode')
TRIMAP_VALUES = (0, 128, 255)

# Default (kernel_min, kernel_max, iter_min, iter_max), inclusive, per mode.
DEFAULT_TRIMAP_RANGES = {
    'dilate': (3, 3, 1, 19),
    'dilate_erode': (2, 4, 5, 14),
}


def alpha_masks(alpha):
    """Return ``(nonzero, opaque)`` boolean ``(H, W)`` masks of ``alpha > 0`` and ``alpha == 1``.

    ``alpha``: ``(H, W)`` or ``(H, W, 1)``; integer dtypes are read on the 0..255 scale, float dtypes
    on the 0..1 scale (values >= 1 count as opaque).
    """
    a = np.asarray(alpha)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f'alpha must be (H, W) or (H, W, 1), got shape {a.shape}')
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        full = 1 if a.dtype == bool else 255
        return a > 0, a >= full
    return a > 0, a >= 1.0


def _ellipse(k):
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(k), int(k)))


def trimap_from_masks(nonzero, opaque, kernel_size, iterations, mode='dilate'):
    """Deterministic trimap from the masks of :func:`alpha_masks`.

    ``kernel_size``: side of the elliptic structuring element (>= 1); ``iterations`` (>= 0).
    Returns ``(H, W) uint8`` in {0, 128, 255}.
    """
    if mode not in TRIMAP_MODES:
        raise ValueError(f'unknown trimap mode {mode!r}; choose one of {TRIMAP_MODES}')
    kernel = _ellipse(kernel_size)
    unknown = cv2.dilate(nonzero.astype(np.uint8), kernel, iterations=int(iterations)) > 0
    fg = opaque.astype(np.uint8)
    if mode == 'dilate_erode':
        fg = cv2.erode(fg, kernel, iterations=int(iterations))
    fg = fg > 0
    trimap = np.zeros(nonzero.shape, np.uint8)
    trimap[unknown] = 128
    trimap[fg] = 255
    return trimap


def check_ranges(kernel_range, iter_range):
    """Validate inclusive ``(min, max)`` ranges; raise ValueError with the offending values."""
    kmin, kmax = (int(v) for v in kernel_range)
    imin, imax = (int(v) for v in iter_range)
    if not 1 <= kmin <= kmax:
        raise ValueError(f'trimap kernel range must satisfy 1 <= min <= max, got ({kmin}, {kmax})')
    if not 0 <= imin <= imax:
        raise ValueError(f'trimap iteration range must satisfy 0 <= min <= max, got ({imin}, {imax})')
    return (kmin, kmax), (imin, imax)


def make_trimap(alpha, rng, mode='dilate', kernel_range=None, iter_range=None):
    """Random trimap of ``alpha`` (see module docstring).

    ``alpha``: ``(H, W)`` uint8 in [0, 255] or float in [0, 1]. ``rng``: numpy Generator.
    ``kernel_range`` / ``iter_range``: inclusive ``(min, max)``; ``None`` takes the mode's default
    from :data:`DEFAULT_TRIMAP_RANGES`. Returns ``(H, W) uint8`` with values in {0, 128, 255}.
    """
    if mode not in TRIMAP_MODES:
        raise ValueError(f'unknown trimap mode {mode!r}; choose one of {TRIMAP_MODES}')
    d = DEFAULT_TRIMAP_RANGES[mode]
    (kmin, kmax), (imin, imax) = check_ranges(kernel_range or d[:2], iter_range or d[2:])
    k = int(rng.integers(kmin, kmax + 1))
    it = int(rng.integers(imin, imax + 1))
    nonzero, opaque = alpha_masks(alpha)
    return trimap_from_masks(nonzero, opaque, k, it, mode)


def quantize_trimap(trimap):
    """Snap every value to the nearest of {0, 128, 255} (ties at 64 go to 128, unknown).

    ``trimap``: ``(H, W)`` array on the 0..255 scale (e.g. a JPEG-decoded trimap).
    Returns ``(trimap_uint8, n_changed)`` where ``n_changed`` is the number of pixels whose value
    was not already one of {0, 128, 255}.
    """
    t = np.asarray(trimap)
    out = np.full(t.shape, 128, np.uint8)
    out[t < 64] = 0
    out[t >= 191.5] = 255
    n_changed = int(np.count_nonzero(out != t))
    return out, n_changed


def trimap_to_unit(trimap):
    """``(H, W) uint8`` {0, 128, 255} -> ``(H, W) float32`` {0, 0.5, 1} (exact, not x/255)."""
    out = np.zeros(trimap.shape, np.float32)
    out[trimap == 128] = 0.5
    out[trimap == 255] = 1.0
    return out
