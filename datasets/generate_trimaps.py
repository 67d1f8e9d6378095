"""Make trimaps (PNG, 0 / 128 / 255) from alpha mattes, for real matting sets that come without them.

Usage::

    python datasets/generate_trimaps.py --alpha DIR --out DIR [--mode dilate|dilate_erode]
        [--kernel K | --kernel KMIN,KMAX] [--iterations N | --iterations NMIN,NMAX] [--seed 0]

``dilate``: unknown = dilate(alpha > 0) - (alpha == 255); ``dilate_erode``: fg = erode(alpha == 255),
unknown = dilate(alpha > 0) - fg. Every pixel with 0 < alpha < 255 is unknown in both modes.
Kernel side and iteration count are drawn per image from the inclusive ranges (defaults per mode,
see ``data.trimap.DEFAULT_TRIMAP_RANGES``); the draw for image i depends only on ``--seed`` and i
in sorted name order. Output: ``<out>/<alpha stem>.png``, each written atomically.
"""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.matting_dataset import file_stem, read_alpha, require_images  # noqa: E402
from data.trimap import DEFAULT_TRIMAP_RANGES, TRIMAP_MODES, check_ranges, make_trimap  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402

LAYOUT = '  --alpha DIR holding <name>.png alpha mattes (8- or 16-bit gray)'


def _range(text, flag):
    if text is None:
        return None
    try:
        vals = [int(v) for v in str(text).split(',')]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise UserInputError(f'{flag} takes N or MIN,MAX (integers), got {text!r}')
    return (vals[0], vals[-1])


def _write_png_atomic(path, img):
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise UserInputError(f'cannot encode a trimap for {path}')
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'wb') as f:
        f.write(buf.tobytes())
    os.replace(tmp, path)


def generate_trimaps(alpha_dir, out_dir, mode='dilate', kernel=None, iterations=None, seed=0):
    """Write one trimap per alpha matte of ``alpha_dir`` into ``out_dir``; return the written paths.

    ``kernel`` / ``iterations``: inclusive ``(min, max)`` or ``None`` for the mode's default.
    Each trimap: ``(H, W) uint8`` in {0, 128, 255}, same size as its alpha.
    """
    if mode not in TRIMAP_MODES:
        raise UserInputError(f'--mode must be one of {TRIMAP_MODES}, got {mode!r}')
    d = DEFAULT_TRIMAP_RANGES[mode]
    try:
        kr, ir = check_ranges(kernel or d[:2], iterations or d[2:])
    except ValueError as e:
        raise UserInputError(f'--kernel / --iterations: {e}') from None
    paths = require_images(alpha_dir, 'alpha mattes', LAYOUT)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for i, path in enumerate(paths):
        alpha = read_alpha(path)  # float in [0, 1]: 8- and 16-bit mattes alike
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        trimap = make_trimap(alpha, rng, mode, kr, ir)
        dst = os.path.join(out_dir, file_stem(path) + '.png')
        _write_png_atomic(dst, trimap)
        written.append(dst)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--alpha', required=True, help='folder of alpha mattes')
    p.add_argument('--out', required=True, help='folder for the trimaps (created)')
    p.add_argument('--mode', default='dilate', choices=TRIMAP_MODES)
    p.add_argument('--kernel', default=None, help='ellipse side: N or MIN,MAX (default per mode)')
    p.add_argument('--iterations', default=None, help='N or MIN,MAX (default per mode)')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    try:
        written = generate_trimaps(a.alpha, a.out, a.mode, _range(a.kernel, '--kernel'),
                                   _range(a.iterations, '--iterations'), a.seed)
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {len(written)} trimaps to {a.out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
