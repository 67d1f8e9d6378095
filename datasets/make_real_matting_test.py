"""Turn real photographs with ground-truth alpha into the test layout of ``--dataset_mode matting``.

Input (e.g. ``../shared/samples/matting_real``)::

    <src>/RGB/<n>.png     the photographs
    <src>/alpha/<n>.png   their ground-truth mattes (8-bit gray)

Output::

    <out>/merged/<n>.png   the photograph (copied byte for byte)
    <out>/alpha/<n>.png    the ground truth (copied)
    <out>/trimaps/<n>.png  a trimap made from the alpha by ``datasets/generate_trimaps.py``:
                           ``--mode dilate_erode`` (fg = erode(alpha == 255), unknown = dilate(alpha > 0)
                           - fg, both sides of the edge unknown as in hand-drawn trimaps), ellipse side
                           2-4, 5-14 iterations drawn per image from ``--seed`` (default 0)

test.py and ``scripts/eval_matting.py`` read the result as any matting test set
(``--dataroot <out> --phase ''`` is not needed: the layout is looked for at ``<out>`` itself).

Usage: ``python datasets/make_real_matting_test.py --src ../shared/samples/matting_real
--out datasets/matting_real_test [--seed 0] [--overwrite]``.
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.image_folder import file_stem, match_by_stem, output_folders  # noqa: E402
from datasets.generate_trimaps import generate_trimaps  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402

SRC_LAYOUT = ('  <src>/RGB/<name>.png    photographs\n'
              '  <src>/alpha/<name>.png  ground-truth alpha mattes, same names')
TRIMAP_MODE = 'dilate_erode'


def make_real_matting_test(src, out, seed=0, overwrite=False):
    """Write ``out/{merged,alpha,trimaps}`` from ``src/{RGB,alpha}`` (see the module docstring); return ``out``."""
    found = match_by_stem({'photograph': os.path.join(src, 'RGB'), 'alpha matte': os.path.join(src, 'alpha')},
                          SRC_LAYOUT, float('inf'), hints={'alpha matte': 'add it or remove the photograph'})
    out = os.path.abspath(out)
    with output_folders(out, ('merged', 'alpha', 'trimaps'), overwrite) as tmp:
        for sub, key in (('merged', 'photograph'), ('alpha', 'alpha matte')):
            os.makedirs(os.path.join(tmp, sub))
            for path in found[key]:
                shutil.copyfile(path, os.path.join(tmp, sub, file_stem(path) + os.path.splitext(path)[1]))
        generate_trimaps(os.path.join(tmp, 'alpha'), os.path.join(tmp, 'trimaps'), TRIMAP_MODE, seed=seed)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--src', required=True, help='folder with RGB/ and alpha/')
    p.add_argument('--out', required=True, help='output folder (merged/, alpha/, trimaps/)')
    p.add_argument('--seed', type=int, default=0, help='seed of the trimaps\' kernel / iteration draws')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    a = p.parse_args(argv)
    try:
        out = make_real_matting_test(a.src, a.out, a.seed, a.overwrite)
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {out}/merged, alpha, trimaps ({TRIMAP_MODE} trimaps, seed {a.seed})')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
