"""Make an InstaGAN dataset from the Multi-Human Parsing set (LV-MHP v1), e.g. pants <-> skirt.

Input layout (LV-MHP v1)::

    <data_root>/images/<id>.jpg
    <data_root>/annotations/<id>_<n persons>_<person k>.png   one parsing map per person
    <data_root>/train_list.txt, test_list.txt                  image names, one a line

A parsing map holds one label per pixel (:data:`MHP_LABELS`; 3-channel maps use channel 0).
An instance is one person's region of the category, so an image gets one mask per person
wearing it. Output: ``<out>/<phase>A/<id>.png``, ``<out>/<phase>A_seg/<id>_<k>.png`` (0/255, k = 0
the largest), the same for B, for each phase (default: train and test).

Follows the official script (sangwoomo/instagan, datasets/generate_mhp_dataset.py): same label
ids, same default size (450x300, height x width), images wider than tall are skipped unless
``--no_skip_horizontal``, resize to cover then centre-crop. Differences: masks are resized by
nearest neighbour, so they are binary (the official ones are antialiased RGB); images with both
categories are left out unless ``--keep_both`` (the official script put them in both domains);
``--min_area`` drops small instances; annotations are indexed once (the official script listed
the whole folder for every image); output folders appear only when complete.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.base_dataset import open_image, resize_cover  # noqa: E402
from data.image_folder import IMG_EXTENSIONS, output_folders, write_instances  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402

MHP_LABELS = {
    'background': 0, 'hat': 1, 'hair': 2, 'sunglass': 3, 'upper-clothes': 4, 'skirt': 5, 'pants': 6,
    'dress': 7, 'belt': 8, 'left-shoe': 9, 'right-shoe': 10, 'face': 11, 'left-leg': 12, 'right-leg': 13,
    'left-arm': 14, 'right-arm': 15, 'bag': 16, 'scarf': 17, 'torso-skin': 18,
}


def label_id(name):
    if name not in MHP_LABELS:
        raise UserInputError(f"Category '{name}' is not an MHP label; use one of {', '.join(MHP_LABELS)}.")
    return MHP_LABELS[name]


def read_label_map(path):
    """Parsing map (H, W) of integer labels; 3-channel maps use channel 0."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserInputError(f"Cannot read annotation '{path}' ({e}); replace or remove it.") from None
    return arr[..., 0] if arr.ndim == 3 else arr


def index_folder(folder, what):
    """``{stem: path}`` of the image files in ``folder`` (not recursive)."""
    if not os.path.isdir(folder):
        raise UserInputError(f"'{folder}' does not exist; --data_root must hold LV-MHP v1's {what}/ folder.")
    return {os.path.splitext(f)[0]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.lower().endswith(IMG_EXTENSIONS)}


def generate_mhp_dataset(data_root, out, cat_A='pants', cat_B='skirt', size=(450, 300), phases=('train', 'test'),
                         min_area=0, max_images=None, keep_both=False, skip_horizontal=True, overwrite=False):
    """Write ``<out>/<phase>{A,B}`` (+ ``_seg``) for each phase; returns ``{'<phase>A': n images, ...}``."""
    cats = {'A': label_id(cat_A), 'B': label_id(cat_B)}
    images = index_folder(os.path.join(data_root, 'images'), 'images')
    anns = {}
    for stem, path in index_folder(os.path.join(data_root, 'annotations'), 'annotations').items():
        anns.setdefault(stem.split('_')[0], []).append(path)
    names = [f'{p}{d}{s}' for p in phases for d in 'AB' for s in ('', '_seg')]
    counts = {f'{p}{d}': 0 for p in phases for d in 'AB'}
    with output_folders(out, names, overwrite) as tmp:
        for phase in phases:
            list_file = os.path.join(data_root, f'{phase}_list.txt')
            if not os.path.isfile(list_file):
                raise UserInputError(f"'{list_file}' does not exist; LV-MHP v1 lists each split's images in "
                                     f"<data_root>/<phase>_list.txt (phases: train, test).")
            with open(list_file) as f:
                ids = [os.path.splitext(line.strip())[0] for line in f if line.strip()]
            for id_ in tqdm(ids, desc=phase, disable=None):
                if id_ not in anns:
                    continue
                maps = [read_label_map(p) for p in sorted(anns[id_])]
                h, w = maps[0].shape
                if any(m.shape != (h, w) for m in maps):
                    raise UserInputError(f"The annotations of image '{id_}' differ in size: {sorted(anns[id_])}.")
                if skip_horizontal and w > h:
                    continue
                masks = {d: np.stack([m == c for m in maps]) for d, c in cats.items()}
                present = [d for d in 'AB' if masks[d].any()]
                if not keep_both and len(present) == 2:
                    continue
                domains = [d for d in present if max_images is None or counts[f'{phase}{d}'] < max_images]
                if not domains:
                    continue
                if id_ not in images:
                    raise UserInputError(f"Annotations of image '{id_}' found but no image '{id_}.jpg' in "
                                         f"'{os.path.join(data_root, 'images')}'.")
                image = open_image(images[id_])
                if image.size != (w, h):
                    raise UserInputError(f"Image '{images[id_]}' is {image.size[0]}x{image.size[1]} but its "
                                         f"annotation '{sorted(anns[id_])[0]}' is {w}x{h}; they must match.")
                for d in domains:
                    img_out, masks_out = resize_cover(image, masks[d], size)
                    counts[f'{phase}{d}'] += write_instances(
                        os.path.join(tmp, f'{phase}{d}'), os.path.join(tmp, f'{phase}{d}_seg'), id_, img_out,
                        masks_out, min_area) > 0
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data_root', default='datasets/LV-MHP-v1', help='LV-MHP v1 folder')
    parser.add_argument('--out', default='datasets/pants2skirt_mhp', help='output dataset folder')
    parser.add_argument('--cat_A', default='pants', help=f"label of domain A ({', '.join(MHP_LABELS)})")
    parser.add_argument('--cat_B', default='skirt', help='label of domain B')
    parser.add_argument('--size', type=int, nargs=2, default=[450, 300], metavar=('H', 'W'), help='output size')
    parser.add_argument('--phases', nargs='+', default=['train', 'test'], help='splits (<phase>_list.txt)')
    parser.add_argument('--min_area', type=float, default=0,
                        help='drop instances smaller than this: a fraction of the image (< 1) or pixels (>= 1)')
    parser.add_argument('--max_images', type=int, default=None, help='at most this many images per domain and phase')
    parser.add_argument('--keep_both', action='store_true', help='keep images showing both categories')
    parser.add_argument('--no_skip_horizontal', action='store_true', help='do not skip images wider than tall')
    parser.add_argument('--overwrite', action='store_true', help='replace existing output folders')
    args = parser.parse_args(argv)
    counts = generate_mhp_dataset(args.data_root, args.out, args.cat_A, args.cat_B, tuple(args.size), args.phases,
                                  args.min_area, args.max_images, args.keep_both, not args.no_skip_horizontal,
                                  args.overwrite)
    print(f"wrote {', '.join(f'{k}: {v} images' for k, v in counts.items())} to {args.out}")


if __name__ == '__main__':
    sys.exit(run_cli(main))
