"""Make an InstaGAN dataset from COCO: images of two categories, one binary mask per instance.

Usage (one split per run; run again with ``--phase val`` for the val split)::

    python datasets/generate_coco_dataset.py --coco_root COCO/train2017 \\
        --ann_file COCO/annotations/instances_train2017.json --cat_A sheep --cat_B giraffe \\
        --out datasets/shp2gir_coco --phase train --size 256 256

Writes ``<out>/<phase>A/<stem>.png`` and ``<out>/<phase>A_seg/<stem>_<k>.png`` (k = 0 the largest
instance; 0/255 gray PNGs), the same for B; ``<stem>`` is the COCO file name without extension.

Differences from the official script (sangwoomo/instagan, datasets/generate_coco_dataset.py):

- crowd annotations (``iscrowd=1``) are not instances and are left out;
- images showing both categories are left out by default (the official script put them in both
  domains, where the other category's animals are unmasked); ``--keep_both`` keeps them;
- ``--min_area`` drops instances smaller than a fraction (< 1) of the output image or a number
  of pixels (>= 1), measured on the output mask; empty masks are always dropped;
- images are resized (bilinear, antialiased) to cover ``--size H W`` keeping their aspect ratio
  and centre-cropped, as the official ``Resize`` + ``CenterCrop``; masks use the same geometry
  with nearest neighbour, so they stay binary;
- an image without any mask left is not written; output folders appear only when complete.
"""
import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.base_dataset import open_image, resize_cover  # noqa: E402
from data.image_folder import output_folders, write_instances  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402


def load_coco(ann_file):
    """pycocotools' COCO index of ``ann_file``; UserInputError naming it if missing or invalid."""
    from pycocotools.coco import COCO
    if not os.path.isfile(ann_file):
        raise UserInputError(f"Annotation file '{ann_file}' does not exist; pass the instances_<split>.json "
                             f"of COCO with --ann_file.")
    try:
        return COCO(ann_file)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise UserInputError(f"'{ann_file}' is not a COCO instances annotation file ({e!r}).") from None


def category_id(coco, name, ann_file):
    """The id of category ``name``; UserInputError listing the known names otherwise."""
    ids = [c['id'] for c in coco.loadCats(coco.getCatIds()) if c['name'] == name]
    if not ids:
        names = ', '.join(sorted(c['name'] for c in coco.loadCats(coco.getCatIds())))
        raise UserInputError(f"Category '{name}' is not in '{ann_file}'; known categories: {names}.")
    return ids[0]


def instance_masks(coco, img_info, cat_id):
    """Bool masks (K, H, W) of the non-crowd annotations of ``cat_id`` in one image (polygon or RLE)."""
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_info['id'], catIds=[cat_id]))
            if not a.get('iscrowd', 0)]
    h, w = img_info['height'], img_info['width']
    if not anns:
        return np.zeros((0, h, w), dtype=bool)
    return np.stack([coco.annToMask(a).astype(bool) for a in anns])


def generate_coco_dataset(coco_root, ann_file, cat_A, cat_B, out, phase='train', size=(256, 256), min_area=0,
                          max_images=None, keep_both=False, overwrite=False):
    """Write ``<out>/<phase>{A,B}`` and their ``_seg`` folders; returns ``{'<phase>A': n, '<phase>B': n}``.

    ``size``: output (H, W); ``max_images``: at most this many images per domain (None: all).
    """
    coco = load_coco(ann_file)
    cats = {'A': category_id(coco, cat_A, ann_file), 'B': category_id(coco, cat_B, ann_file)}
    names = [f'{phase}{d}{s}' for d in 'AB' for s in ('', '_seg')]
    counts = {}
    with output_folders(out, names, overwrite) as tmp:
        for d, other in (('A', 'B'), ('B', 'A')):
            img_ids = sorted(coco.getImgIds(catIds=[cats[d]]))
            if not keep_both:
                both = set(coco.getImgIds(catIds=[cats[other]]))
                img_ids = [i for i in img_ids if i not in both]
            n = 0
            for img_id in tqdm(img_ids, desc=f'{phase}{d}', disable=None):
                if max_images is not None and n >= max_images:
                    break
                info = coco.loadImgs(img_id)[0]
                masks = instance_masks(coco, info, cats[d])
                if len(masks) == 0:
                    continue
                path = os.path.join(coco_root, info['file_name'])
                image = open_image(path)
                if image.size != (info['width'], info['height']):
                    raise UserInputError(f"'{path}' is {image.size[0]}x{image.size[1]} but '{ann_file}' says "
                                         f"{info['width']}x{info['height']}; is --coco_root the right split?")
                image, masks = resize_cover(image, masks, size)
                stem = os.path.splitext(os.path.basename(info['file_name']))[0]
                n += write_instances(os.path.join(tmp, f'{phase}{d}'), os.path.join(tmp, f'{phase}{d}_seg'),
                                     stem, image, masks, min_area) > 0
            counts[f'{phase}{d}'] = n
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--coco_root', required=True, help='folder of the split\'s images, e.g. COCO/train2017')
    parser.add_argument('--ann_file', required=True, help='instances json, e.g. annotations/instances_train2017.json')
    parser.add_argument('--cat_A', default='sheep', help='COCO category name of domain A')
    parser.add_argument('--cat_B', default='giraffe', help='COCO category name of domain B')
    parser.add_argument('--out', default='datasets/shp2gir_coco', help='output dataset folder')
    parser.add_argument('--phase', default='train', help='output folder prefix: <phase>A, <phase>B (train, val)')
    parser.add_argument('--size', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'), help='output size')
    parser.add_argument('--min_area', type=float, default=0,
                        help='drop instances smaller than this: a fraction of the image (< 1) or pixels (>= 1)')
    parser.add_argument('--max_images', type=int, default=None, help='at most this many images per domain')
    parser.add_argument('--keep_both', action='store_true', help='keep images showing both categories')
    parser.add_argument('--overwrite', action='store_true', help='replace existing <phase>A/B folders')
    args = parser.parse_args(argv)
    counts = generate_coco_dataset(args.coco_root, args.ann_file, args.cat_A, args.cat_B, args.out, args.phase,
                                   tuple(args.size), args.min_area, args.max_images, args.keep_both, args.overwrite)
    print(f"wrote {', '.join(f'{k}: {v} images' for k, v in counts.items())} to {args.out}")


if __name__ == '__main__':
    sys.exit(run_cli(main))
