"""Make a small two-domain instance dataset: warm discs (A) <-> cool squares (B).

Each image has 1-4 instances on a textured, nearly gray background drawn from the SAME
distribution in both domains (a translation must keep the background and change only the
instances). Instances never overlap, but some touch each other and some are cut by the image
border. Domains differ in shape AND colour:

- A: discs (:data:`SHAPES`), in warm colours (:data:`A_COLOURS`, hues around red-yellow);
- B: axis-aligned squares, in cool colours (:data:`B_COLOURS`, hues around cyan-blue).

Layout (InstaGAN's): ``<out>/{train,test}{A,B}/<id>.png`` (RGB) and
``<out>/{train,test}{A,B}_seg/<id>_<k>.png``, one binary (0/255) mask per instance, k = 0 the
largest. Deterministic: the same ``--seed`` writes byte-identical files.

For evaluation, :func:`shape_score`, :func:`colour_score` and :func:`classify_instance` judge an
instance (an RGB image and a boolean mask, e.g. a translated image and its translated mask) as
domain A-like or B-like from the documented constants below.

Usage: ``python datasets/make_shapes_dataset.py --out datasets/shapes [--n_train 200 --n_test 20
--size 64 --seed 0]``.
"""
import argparse
import colorsys
import os
import sys
import time

import numpy as np
from PIL import Image

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.image_folder import output_folders, write_instances  # noqa: E402
from util.errors import run_cli  # noqa: E402

SHAPES = {'A': 'disc', 'B': 'square'}
A_COLOURS = {'red': (215, 45, 35), 'orange': (235, 125, 25), 'yellow': (230, 195, 40), 'crimson': (190, 30, 70)}
B_COLOURS = {'blue': (40, 90, 220), 'cyan': (30, 175, 210), 'teal': (30, 160, 130), 'violet': (105, 70, 215)}
WARM_HUE = 30.0            # degrees; the warm family's centre (the cool family's is WARM_HUE + 180)
MIN_SATURATION = 0.2       # below this an instance's colour says nothing (colour_score 0.5)
DISC_RADIUS = (0.08, 0.19)  # of the image side
SQUARE_HALF_SIDE = (0.08, 0.18)  # of the image side
MAX_INSTANCES = 4
MIN_VISIBLE = 0.5          # an instance cut by the border keeps at least this fraction of its area
TOUCH_PROB = 0.35          # chance that a new instance is placed touching an existing one
CORNER_PATCH = 0.15        # shape_score looks at corner patches of this fraction of the box side
FILL_DISC, FILL_SQUARE = np.pi / 4, 1.0  # instance area / bounding-box area of each shape
BACKGROUND_LEVEL = (70, 190)  # gray level of backgrounds; textures add +-AMPLITUDE
BACKGROUND_AMPLITUDE = (10, 30)
BACKGROUND_TINT = 8        # at most this much colour (per channel) in a background
BACKGROUNDS = ('stripes', 'checker', 'noise', 'blobs')  # texture kinds, drawn uniformly unless one is asked for
SPLITS = ('train', 'test')
DOMAINS = ('A', 'B')


# ---------------------------------------------------------------------------- drawing
def _background(rng, size, kind=None):
    """Textured, nearly gray background (size, size, 3) float; same law for both domains. ``kind``:
    one of :data:`BACKGROUNDS` (None: drawn uniformly; the draw is taken either way, so the
    default's files are those of earlier versions)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    drawn = rng.integers(len(BACKGROUNDS))
    kind = drawn if kind is None else BACKGROUNDS.index(kind)
    if kind == 0:  # stripes
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
        tex = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    elif kind == 1:  # checker
        cell = rng.integers(4, 17)
        tex = ((np.arange(size)[:, None] // cell + np.arange(size)[None] // cell) % 2) * 2.0 - 1.0
    elif kind == 2:  # smooth noise
        coarse = rng.normal(size=(max(2, size // 8),) * 2).astype(np.float32)
        tex = np.asarray(Image.fromarray(coarse, mode='F').resize((size, size), Image.BICUBIC))
        tex = tex / (np.abs(tex).max() + 1e-6)
    else:  # soft blobs
        tex = np.zeros((size, size))
        for _ in range(rng.integers(2, 6)):
            cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            tex += rng.choice([-1, 1]) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        tex = np.clip(tex, -1, 1)
    gray = rng.uniform(*BACKGROUND_LEVEL) + rng.uniform(*BACKGROUND_AMPLITUDE) * tex
    gray = gray + rng.normal(0, 3, (size, size))
    tint = rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, 3)
    return gray[..., None] + tint


def _shape_mask(shape, cx, cy, s, size):
    """Pixels (size, size) bool whose centre lies in the shape (disc radius s / square half side s)."""
    c = np.arange(size) + 0.5
    dx, dy = c[None, :] - cx, c[:, None] - cy
    if shape == 'disc':
        return dx * dx + dy * dy <= s * s
    return (np.abs(dx) <= s) & (np.abs(dy) <= s)


def make_sample(domain, rng, size=64, background=None):
    """One image of ``domain`` ('A' or 'B'): ``(image (size, size, 3) uint8, masks (K, size, size) bool)``.

    1 <= K <= MAX_INSTANCES; masks are disjoint and non-empty. ``background``: one of
    :data:`BACKGROUNDS`, or None for any.
    """
    shape = SHAPES[domain]
    colours = list((A_COLOURS if domain == 'A' else B_COLOURS).values())
    s_range = DISC_RADIUS if shape == 'disc' else SQUARE_HALF_SIDE
    full_area = (lambda s: np.pi * s * s) if shape == 'disc' else (lambda s: 4 * s * s)
    image = _background(rng, size, background)
    occupied = np.zeros((size, size), dtype=bool)
    masks, centres = [], []
    n = rng.integers(1, MAX_INSTANCES + 1)
    for _ in range(200):
        if len(masks) == n:
            break
        s = rng.uniform(*s_range) * size
        if masks and rng.random() < TOUCH_PROB:  # walk away from an instance until free: touching
            cx0, cy0 = centres[rng.integers(len(centres))]
            theta = rng.uniform(0, 2 * np.pi)
            for d in np.arange(0.0, 2.0 * size, 0.5):
                cx, cy = cx0 + d * np.cos(theta), cy0 + d * np.sin(theta)
                mask = _shape_mask(shape, cx, cy, s, size)
                if not (mask & occupied).any():
                    break
        else:
            cx, cy = rng.uniform(0, size, 2)
            mask = _shape_mask(shape, cx, cy, s, size)
        if (mask & occupied).any() or mask.sum() < max(4, MIN_VISIBLE * full_area(s)):
            continue
        colour = np.clip(np.array(colours[rng.integers(len(colours))]) + rng.normal(0, 10, 3), 0, 255)
        theta = rng.uniform(0, 2 * np.pi)  # shading: a linear light gradient across the instance
        c = np.arange(size) + 0.5
        grad = ((c[None, :] - cx) * np.cos(theta) + (c[:, None] - cy) * np.sin(theta)) / max(s, 1.0)
        shade = 1.0 + 0.12 * np.clip(grad, -1, 1)
        pixels = colour * shade[..., None] + rng.normal(0, 4, (size, size, 3))
        image[mask] = pixels[mask]
        occupied |= mask
        masks.append(mask)
        centres.append((cx, cy))
    if not masks:
        raise RuntimeError(f'could not place an instance in a {size}px image')
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), np.stack(masks)


def make_shapes_dataset(out='datasets/shapes', n_train=200, n_test=20, size=64, seed=0, overwrite=False,
                        background=None):
    """Write the dataset (layout in the module docstring); returns ``{'trainA': n images, ...}``.

    Each image has its own generator seeded by (seed, split, domain, index), so the files depend
    only on these arguments. The folders appear only when complete. ``background``: one texture
    kind of :data:`BACKGROUNDS` for every image (None: each image draws one).
    """
    counts = {'train': n_train, 'test': n_test}
    names = [f'{split}{d}{suffix}' for split in SPLITS for d in DOMAINS for suffix in ('', '_seg')]
    with output_folders(out, names, overwrite) as tmp:
        for si, split in enumerate(SPLITS):
            for di, d in enumerate(DOMAINS):
                for i in range(counts[split]):
                    rng = np.random.default_rng([seed, si, di, i])
                    image, masks = make_sample(d, rng, size, background)
                    write_instances(os.path.join(tmp, split + d), os.path.join(tmp, split + d + '_seg'),
                                    f'{i:04d}', image, masks)
    return {split + d: counts[split] for split in SPLITS for d in DOMAINS}


# ---------------------------------------------------------------------------- judging instances
def shape_score(mask):
    """How square (domain B) rather than disc-like (domain A) an instance mask (H, W) bool is, in [0, 1].

    Mean fill of the corner patches (CORNER_PATCH of the side) of the mask's bounding box, over the
    corners that do not lie on the image border (cutting by the border makes corners there): a
    square fills its corners (1), a disc leaves them empty (0). The box is trimmed of the outermost
    1% of pixels on each side, so a few stray pixels do not count. When every corner lies on the
    border, the box's fill ratio is used instead (pi/4 -> 0, 1 -> 1).
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError('empty instance mask')
    H, W = mask.shape
    y0, y1 = int(np.floor(np.quantile(ys, 0.01))), int(np.ceil(np.quantile(ys, 0.99)))
    x0, x1 = int(np.floor(np.quantile(xs, 0.01))), int(np.ceil(np.quantile(xs, 0.99)))
    p = max(1, int(round(CORNER_PATCH * min(y1 - y0 + 1, x1 - x0 + 1))))
    fills = []
    for top in (True, False):
        for left in (True, False):
            if (y0 == 0 if top else y1 == H - 1) or (x0 == 0 if left else x1 == W - 1):
                continue
            rows = slice(y0, y0 + p) if top else slice(y1 - p + 1, y1 + 1)
            cols = slice(x0, x0 + p) if left else slice(x1 - p + 1, x1 + 1)
            fills.append(mask[rows, cols].mean())
    if fills:
        return float(np.mean(fills))
    fill = mask[y0:y1 + 1, x0:x1 + 1].mean()
    return float(np.clip((fill - FILL_DISC) / (FILL_SQUARE - FILL_DISC), 0.0, 1.0))


def colour_score(image, mask):
    """How cool (domain B) rather than warm (domain A) an instance's mean colour is, in [0, 1].

    ``image`` (H, W, 3) uint8 RGB, ``mask`` (H, W) bool. (1 - cos(hue - WARM_HUE)) / 2 of the mean
    RGB over the mask: 0 at the warm centre (30 deg), 1 at the cool one (210 deg); 0.5 when the
    mean colour is nearly gray (saturation < MIN_SATURATION).
    """
    if not mask.any():
        raise ValueError('empty instance mask')
    r, g, b = image[mask].reshape(-1, 3).mean(0) / 255.0
    h, s, _ = colorsys.rgb_to_hsv(r, g, b)
    if s < MIN_SATURATION:
        return 0.5
    return float((1 - np.cos(np.deg2rad(h * 360 - WARM_HUE))) / 2)


def classify_instance(image, mask):
    """Domain of an instance from its shape and colour: ``('A' | 'B', confidence in [0.5, 1])``.

    p_B = mean of :func:`shape_score` and :func:`colour_score`; 'B' when p_B >= 0.5. For a
    partial translation (shape changed, colour not) look at the two scores separately.
    """
    p_b = (shape_score(mask) + colour_score(image, mask)) / 2
    return ('B', p_b) if p_b >= 0.5 else ('A', 1 - p_b)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='datasets/shapes', help='output folder')
    parser.add_argument('--n_train', type=int, default=200, help='training images per domain')
    parser.add_argument('--n_test', type=int, default=20, help='test images per domain')
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same files')
    parser.add_argument('--overwrite', action='store_true', help='replace existing folders in --out')
    parser.add_argument('--background', choices=BACKGROUNDS, default=None,
                        help='one texture for every background (default: each image draws one)')
    args = parser.parse_args(argv)
    if args.size < 16 or args.n_train < 0 or args.n_test < 0 or args.seed < 0:
        parser.error('--size must be >= 16; --n_train, --n_test and --seed must be >= 0')
    start = time.time()
    counts = make_shapes_dataset(args.out, args.n_train, args.n_test, args.size, args.seed, args.overwrite,
                                 args.background)
    print(f"wrote {sum(counts.values())} images ({', '.join(f'{k}: {v}' for k, v in counts.items())}) "
          f"to {args.out} in {time.time() - start:.1f} s")


if __name__ == '__main__':
    sys.exit(run_cli(main))
