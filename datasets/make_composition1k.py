"""Make the Composition-1k test set (Xu et al., Deep Image Matting, CVPR 2017) from the Adobe data you have.

Usage::

    python datasets/make_composition1k.py --fg Test_set/fg --alpha Test_set/alpha --bg VOC2012/JPEGImages \\
        --fg_names Test_set/test_fg_names.txt --bg_names Test_set/test_bg_names.txt \\
        --trimaps Test_set/trimaps --out datasets/composition1k
    python test.py --model dim --dataroot datasets/composition1k ...

Each of the 50 test foregrounds is composited over ``--num_bgs`` (20) backgrounds, as the dataset's
composition script (``Composition_code.py``) does:

* order: foreground i takes backgrounds ``i * num_bgs ... (i + 1) * num_bgs - 1`` of the background
  list (the script walks one iterator over the list). The lists are the ``--fg_names`` /
  ``--bg_names`` files (one name per line; the Adobe test set ships ``test_fg_names.txt`` and
  ``test_bg_names.txt``, which give the published order); without them, the folders' files in
  sorted order (deterministic, but not the published pairs: the script used ``os.listdir``);
* resize rule: with the foreground ``w x h`` and the background ``bw x bh``, ``ratio = max(w / bw,
  h / bh)`` (true division, as the script runs under Python 3); if ``ratio > 1`` the background is
  resized to ``(ceil(bw * ratio), ceil(bh * ratio))`` with PIL's bicubic filter; then its top-left
  ``w x h`` is cropped (no random placement, no downscaling of large backgrounds);
* composite: ``floor(a * F + (1 - a) * B)`` per channel with ``a = alpha / 255`` in double
  precision (the script's ``int(alpha * f + (1 - alpha) * b)``; ``a = 0`` keeps B, ``a = 1`` F).

Output (the test layout of ``--dataset_mode matting``): ``<out>/merged/<fg stem>_<j>.png``,
``<out>/alpha/<fg stem>_<j>.png`` (the foreground's alpha), ``<out>/trimaps/<fg stem>_<j>.png``
(from ``--trimaps``: ``<fg stem>_<j>.png`` or ``<fg stem>.png``; without it, made from the alpha
by ``data.trimap.make_trimap`` (``dilate``, seeded per foreground): *not* the official trimaps, so
numbers are then not comparable with papers), and ``<out>/pairs.txt`` (merged, foreground,
background). The same inputs give the same bytes.
"""
import argparse
import math
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.image_folder import as_uint8, file_stem, make_dataset, output_folders, read_gray, read_rgb, save_png  # noqa: E402
from data.trimap import make_trimap, quantize_trimap  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402

NUM_BGS = 20


def read_names(list_file, folder, role):
    """File names: the lines of ``list_file``, or the sorted image files of ``folder``."""
    if list_file:
        try:
            with open(list_file) as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UserInputError(f'cannot read the {role} list {list_file}: {e.strerror}') from None
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise UserInputError(f'{len(missing)} {role}s of {list_file} are not in {folder}, e.g. {missing[0]}')
        return names
    return sorted(os.path.relpath(p, folder) for p in make_dataset(folder, recursive=False, role=role))


def fit_background(bg, w, h):
    """The script's rule: upscale ``bg`` (PIL RGB) bicubically by ``max(w / bw, h / bh)`` when that
    exceeds 1 (sizes rounded up), then crop its top-left ``w x h``. Returns (h, w, 3) uint8."""
    bw, bh = bg.size
    ratio = max(w / bw, h / bh)
    if ratio > 1:
        bg = bg.resize((math.ceil(bw * ratio), math.ceil(bh * ratio)), Image.BICUBIC)
    return np.asarray(bg.convert('RGB'))[:h, :w]


def composite(fg, bg, alpha):
    """``floor(a F + (1 - a) B)``, a = alpha / 255 (float64): (h, w, 3) uint8 x 2, (h, w) uint8 -> uint8."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.floor(a * fg + (1.0 - a) * bg).astype(np.uint8)


def find_image(folder, stems, role):
    """The first ``<folder>/<stem>.<png|jpg>`` for ``stems`` in order; UserInputError if none."""
    for stem in stems:
        for ext in ('.png', '.jpg', '.jpeg'):
            path = os.path.join(folder, stem + ext)
            if os.path.isfile(path):
                return path
    raise UserInputError(f'no {role} {" or ".join(s + ".png" for s in stems)} in {folder}')


def make_composition1k(fg_dir, alpha_dir, bg_dir, out, trimap_dir=None, fg_names=None, bg_names=None,
                       num_bgs=NUM_BGS, seed=0, overwrite=False):
    """Write the composited test set under ``out`` (module docstring); returns the number of images."""
    if num_bgs < 1:
        raise UserInputError(f'--num_bgs must be >= 1, got {num_bgs}')
    fgs = read_names(fg_names, fg_dir, 'foreground')
    bgs = read_names(bg_names, bg_dir, 'background')
    if len(bgs) < len(fgs) * num_bgs:
        raise UserInputError(f'{len(fgs)} foregrounds x {num_bgs} backgrounds need {len(fgs) * num_bgs} '
                             f'backgrounds; {bg_names or bg_dir} has {len(bgs)}')
    lines = []
    with output_folders(out, ('merged', 'alpha', 'trimaps'), overwrite) as tmp:
        for sub in ('merged', 'alpha', 'trimaps'):
            os.makedirs(os.path.join(tmp, sub))
        for i, name in enumerate(fgs):
            stem = file_stem(name)
            fg = as_uint8(read_rgb(os.path.join(fg_dir, name), 'foreground'))
            alpha_path = find_image(alpha_dir, (file_stem(name),), 'alpha matte')
            alpha = as_uint8(read_gray(alpha_path, 'alpha matte'))
            h, w = alpha.shape
            if fg.shape[:2] != (h, w):
                raise UserInputError(f'{alpha_path} is {w}x{h}, its foreground {fg.shape[1]}x{fg.shape[0]}')
            own_trimap = None
            if trimap_dir is None:
                rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
                own_trimap = make_trimap(alpha, rng, 'dilate')
            for j in range(num_bgs):
                bg_name = bgs[i * num_bgs + j]
                with Image.open(os.path.join(bg_dir, bg_name)) as bg:
                    back = fit_background(bg.convert('RGB'), w, h)
                out_name = f'{stem}_{j}.png'
                save_png(os.path.join(tmp, 'merged', out_name), composite(fg, back, alpha))
                save_png(os.path.join(tmp, 'alpha', out_name), alpha)
                if own_trimap is None:
                    path = find_image(trimap_dir, (f'{stem}_{j}', stem), 'trimap')
                    trimap, _ = quantize_trimap(as_uint8(read_gray(path, 'trimap')))
                else:
                    trimap = own_trimap
                save_png(os.path.join(tmp, 'trimaps', out_name), trimap)
                lines.append(f'{out_name} {name} {bg_name}')
    with open(os.path.join(out, 'pairs.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return len(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--fg', required=True, help='test foregrounds (Adobe Test_set fg/)')
    p.add_argument('--alpha', required=True, help='their alpha mattes (same names)')
    p.add_argument('--bg', required=True, help='background folder (PASCAL VOC 2012 JPEGImages for Composition-1k)')
    p.add_argument('--out', required=True, help='output folder (merged/, alpha/, trimaps/, pairs.txt)')
    p.add_argument('--trimaps', default=None, help="the test set's trimaps (<stem>_<j>.png or <stem>.png)")
    p.add_argument('--fg_names', default=None, help='foreground order (test_fg_names.txt); default: sorted')
    p.add_argument('--bg_names', default=None, help='background order (test_bg_names.txt); default: sorted')
    p.add_argument('--num_bgs', type=int, default=NUM_BGS, help='backgrounds per foreground')
    p.add_argument('--seed', type=int, default=0, help='trimaps made without --trimaps')
    p.add_argument('--overwrite', action='store_true', help='replace merged/, alpha/, trimaps/ in --out')
    a = p.parse_args(argv)
    n = make_composition1k(a.fg, a.alpha, a.bg, a.out, a.trimaps, a.fg_names, a.bg_names, a.num_bgs, a.seed,
                           a.overwrite)
    print(f'wrote {n} composites to {a.out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
