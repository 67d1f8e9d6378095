"""Make a small synthetic matting set, deterministic by ``--seed``, in both layouts of ``--dataset_mode matting``::

    <out>/train/fg/fg_XXXX.png      textured foreground colours (RGB)
    <out>/train/alpha/fg_XXXX.png   their alpha mattes (8-bit gray)
    <out>/train/bg/bg_XXXX.png      textured backgrounds (other sizes than the fgs)
    <out>/test/merged/test_XXXX.png alpha * fg + (1 - alpha) * bg, rounded to 8 bits
    <out>/test/trimaps/test_XXXX.png trimaps (0 / 128 / 255) by random dilation of the alpha
    <out>/test/alpha/test_XXXX.png  ground truth
    <out>/test/fg, <out>/test/bg    the parts of each test composite
    <out>/test/bgr/test_XXXX.png    a background plate of each (bg as a second photo would show it: shifted
                                    by up to 1/4 px, exposure +-2 %, sensor noise), for --dataset_mode
                                    background_matting (BackgroundMattingV2)

Each matte has an opaque body with a soft edge, thin hair-like strands (drawn antialiased at 4x
and area-averaged: sub-pixel width, fractional alpha), and semi-transparent areas (a veil of
constant partial opacity and a smoke-like gradient). Same seed -> identical PNG bytes.

Usage: ``python datasets/make_matting_dataset.py --out datasets/matting_synth [--n_train 24]
[--n_test 8] [--n_bg 24] [--size 160] [--seed 0] [--overwrite]``. The set is built in a temporary
folder and moved in when complete; existing ``<out>/train`` / ``<out>/test`` are replaced only with
``--overwrite`` (nothing else in ``<out>`` is touched).
"""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.image_folder import output_folders  # noqa: E402
from data.trimap import make_trimap  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402

SUPERSAMPLE = 4
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3]


def _rng(seed, kind, i):
    return np.random.default_rng(np.random.SeedSequence([int(seed), kind, int(i)]))


def _smooth_noise(rng, h, w, cells, channels):
    """``(h, w, channels)`` float32 in [0, 1]: random values on a coarse grid, bicubic upsampled."""
    grid = rng.random((cells + 1, cells + 1, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), 0.0, 1.0)


def texture(rng, h, w):
    """``(h, w, 3) float32`` in [0, 1]: two colours mixed by sinusoidal stripes, blotches and grain."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    waves = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        fy, fx = rng.uniform(-14, 14, size=2)
        waves += np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    mix = 0.5 + 0.5 * np.tanh(waves * rng.uniform(0.5, 3.0))
    mix = 0.6 * mix + 0.4 * _smooth_noise(rng, h, w, int(rng.integers(3, 9)), 1)[..., 0]
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    img = c1 * (1 - mix[..., None]) + c2 * mix[..., None]
    img += 0.25 * (_smooth_noise(rng, h, w, int(rng.integers(2, 6)), 3) - 0.5)
    img += rng.normal(0, 0.03, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def background(rng, h, w):
    """``(h, w, 3) float32`` in [0, 1]: a texture with a gradient and a few antialiased shapes."""
    img = texture(rng, h, w)
    g = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] * (rng.random(3) - 0.5).astype(np.float32)
    img = np.clip(img + 0.5 * g, 0.0, 1.0)
    canvas = (img * 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        r = int(rng.integers(max(2, min(h, w) // 20), max(3, min(h, w) // 4)))
        if rng.random() < 0.5:
            cv2.circle(canvas, (cx, cy), r, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _soft_blob(rng, h, w, cy, cx, radius, edge):
    """``(h, w)`` in [0, 1]: a wobbly star-shaped region, 1 inside, linear ramp of ``edge`` px."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    rho = np.hypot(yy - cy, xx - cx)
    r = np.full_like(theta, radius)
    for k in range(2, 6):
        r += radius * rng.uniform(0, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    return np.clip(0.5 + (r - rho) / edge, 0.0, 1.0)


def _strands(rng, h, w, cy, cx, radius, n):
    """``(h, w)`` in [0, 1]: ``n`` thin curly strands growing outward from the body edge."""
    s = SUPERSAMPLE
    canvas = np.zeros((h * s, w * s), np.uint8)
    for _ in range(n):
        theta = rng.uniform(0, 2 * np.pi)
        y, x = cy + 0.9 * radius * np.sin(theta), cx + 0.9 * radius * np.cos(theta)
        heading, curl = theta, rng.normal(0, 0.08)
        pts = [(x, y)]
        for _ in range(int(rng.integers(12, 40))):
            heading += curl + rng.normal(0, 0.12)
            x, y = x + np.cos(heading), y + np.sin(heading)
            pts.append((x, y))
        pts = np.round(np.array(pts) * s * 16).astype(np.int32)  # 4 fractional bits (shift=4)
        value = int(rng.integers(128, 256))
        cv2.polylines(canvas, [pts], False, value, thickness=int(rng.integers(1, 3)),
                      lineType=cv2.LINE_AA, shift=4)
    small = cv2.resize(canvas.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(small, 0.0, 1.0)


def alpha_matte(rng, h, w):
    """``(h, w) uint8`` matte: opaque soft-edged body, hair strands, a veil and a smoky gradient."""
    radius = min(h, w) * rng.uniform(0.2, 0.3)
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
    layers = [_soft_blob(rng, h, w, cy, cx, radius, rng.uniform(1.5, 4.0)),
              _strands(rng, h, w, cy, cx, radius, int(rng.integers(15, 40)))]
    # Veil: a constant partial opacity over an area, partly outside the body.
    vy, vx = cy + rng.uniform(-1, 1) * radius, cx + rng.uniform(-1, 1) * radius
    veil = _soft_blob(rng, h, w, vy, vx, radius * rng.uniform(0.5, 0.9), rng.uniform(2, 6))
    layers.append(veil * rng.uniform(0.25, 0.7))
    # Smoke: opacity fading with distance from a point near the body.
    sy, sx = cy + rng.uniform(-1.2, 1.2) * radius, cx + rng.uniform(-1.2, 1.2) * radius
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smoke = np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * (radius * rng.uniform(0.3, 0.6)) ** 2))
    smoke *= 0.6 * _smooth_noise(rng, h, w, 6, 1)[..., 0]
    layers.append(np.clip(smoke - 0.02, 0.0, 1.0))  # exactly 0 far away, continuous
    transparency = np.ones((h, w), np.float32)
    for layer in layers:  # "over" of independent layers: 1 - prod(1 - a_i)
        transparency *= 1.0 - layer.astype(np.float32)
    return np.round((1.0 - transparency) * 255).astype(np.uint8)


def background_plate(rng, bg_u8):
    """A uint8 photo of the background ``bg_u8`` without the subject, as a second shot would give it:
    shifted by up to 1/4 px (bilinear, edges replicated), exposure scaled by 0.98-1.02, Gaussian
    noise of sigma 1/255. Its own generator, so the other files keep their bytes."""
    dy, dx = rng.uniform(-0.25, 0.25, 2)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = bg_u8.shape[:2]
    plate = cv2.warpAffine(bg_u8.astype(np.float32), shift, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    plate = plate * rng.uniform(0.98, 1.02) + rng.normal(0, 1.0, plate.shape)
    return np.round(np.clip(plate, 0, 255)).astype(np.uint8)


def _u8_rgb_to_bgr(img):
    return cv2.cvtColor(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img, _PNG):
        raise UserInputError(f'cannot write {path}; check that the folder is writable.')


def _size(rng, size, lo, hi):
    return int(size), int(round(size * rng.uniform(lo, hi)))


def _build(root, n_train, n_test, n_bg, size, seed):
    for i in range(n_bg):
        rng = _rng(seed, 0, i)
        h, w = _size(rng, size, 0.7, 1.4)
        h = int(round(h * rng.uniform(0.6, 1.1)))
        _write(os.path.join(root, 'train', 'bg', f'bg_{i:04d}.png'), _u8_rgb_to_bgr(background(rng, h, w)))
    for i in range(n_train):
        rng = _rng(seed, 1, i)
        h, w = _size(rng, size, 0.75, 1.3)
        name = f'fg_{i:04d}.png'
        _write(os.path.join(root, 'train', 'fg', name), _u8_rgb_to_bgr(texture(rng, h, w)))
        _write(os.path.join(root, 'train', 'alpha', name), alpha_matte(rng, h, w))
    for i in range(n_test):
        rng = _rng(seed, 2, i)
        h, w = _size(rng, size, 0.75, 1.3)
        fg_u8 = _u8_rgb_to_bgr(texture(rng, h, w))
        bg_u8 = _u8_rgb_to_bgr(background(rng, h, w))
        alpha = alpha_matte(rng, h, w)
        a = alpha.astype(np.float32)[..., None] / 255.0
        merged = np.round(a * fg_u8 + (1.0 - a) * bg_u8).astype(np.uint8)
        trimap = make_trimap(alpha, rng, 'dilate', (3, 3), (2, 6))
        name = f'test_{i:04d}.png'
        for sub, img in (('merged', merged), ('trimaps', trimap), ('alpha', alpha),
                         ('fg', fg_u8), ('bg', bg_u8), ('bgr', background_plate(_rng(seed, 3, i), bg_u8))):
            _write(os.path.join(root, 'test', sub, name), img)


def make_matting_dataset(out='datasets/matting_synth', n_train=24, n_test=8, n_bg=24, size=160, seed=0,
                         overwrite=False):
    """Write the synthetic set under ``out`` (see module docstring); return ``out``.

    ``size``: image height in pixels (widths vary around it). Deterministic in ``seed``.
    Raises UserInputError when ``out/train`` or ``out/test`` exists, unless ``overwrite``.
    """
    if min(n_train, n_test, n_bg) < 1 or size < 16:
        raise UserInputError(f'make_matting_dataset: need n_train, n_test, n_bg >= 1 and size >= 16 '
                             f'(got {n_train}, {n_test}, {n_bg}, {size}).')
    out = os.path.abspath(out)
    with output_folders(out, ('train', 'test'), overwrite) as tmp:
        _build(tmp, n_train, n_test, n_bg, size, seed)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='datasets/matting_synth', help='output folder')
    p.add_argument('--n_train', type=int, default=24, help='training foregrounds (with alpha)')
    p.add_argument('--n_test', type=int, default=8, help='test composites (with trimap and alpha)')
    p.add_argument('--n_bg', type=int, default=24, help='training backgrounds')
    p.add_argument('--size', type=int, default=160, help='image height in pixels (widths vary)')
    p.add_argument('--seed', type=int, default=0, help='same seed -> identical files')
    p.add_argument('--overwrite', action='store_true', help='replace existing train/ and test/ in --out')
    a = p.parse_args(argv)
    try:
        out = make_matting_dataset(a.out, a.n_train, a.n_test, a.n_bg, a.size, a.seed, a.overwrite)
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {out}/train (fg, alpha, bg) and {out}/test (merged, trimaps, alpha, fg, bg, bgr)')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
