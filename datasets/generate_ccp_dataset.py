"""Make an InstaGAN dataset from Clothing Co-Parsing (CCP), e.g. jeans <-> skirt.

Input layout (CCP)::

    <data_root>/photos/<id>.jpg
    <data_root>/annotations/pixel-level/<id>.mat   'groundtruth': (H, W) label map (1004 images)
    <data_root>/annotations/image-level/<id>.mat   'tags': labels present in the image (no masks)
    <data_root>/label_list.mat                     'label_list': label names; index = label id

As in the official script (sangwoomo/instagan, datasets/generate_ccp_dataset.py):

- ``train``: images with a pixel-level annotation showing the category; ONE mask per image (the
  category's whole region, CCP photos show one person): ``trainA_seg/<id>_0.png``;
- ``val``: images whose image-level tags name the category; CCP has no masks for them, so
  ``valA_seg`` / ``valB_seg`` stay empty (the instance datasets keep such images with all mask
  slots empty at test time).

Differences: images showing both categories are left out unless ``--keep_both``; ``--min_area``
drops small regions; ``--size H W`` optionally resizes (cover, then centre-crop; bilinear images,
nearest masks; default: the original size, as the official script); images are written as PNG
(the official script did too); output folders appear only when complete.
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


def _loadmat(path, key):
    import scipy.io as sio
    try:
        return sio.loadmat(path)[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"Cannot read '{key}' from '{path}' ({e!r}); is --data_root a CCP folder?") from None


def _name(entry):
    """A label name from loadmat's nested object arrays (array(['jeans']) -> 'jeans')."""
    while isinstance(entry, np.ndarray):
        entry = entry.flat[0] if entry.size else ''
    return str(entry)


def load_labels(data_root):
    """``{name: id}`` from ``label_list.mat`` (id = position in the list, 0 = 'null')."""
    names = _loadmat(os.path.join(data_root, 'label_list.mat'), 'label_list')
    return {_name(n): i for i, n in enumerate(np.asarray(names, dtype=object).ravel())}


def _ids(folder):
    if not os.path.isdir(folder):
        raise UserInputError(f"'{folder}' does not exist; --data_root must be a Clothing Co-Parsing folder "
                             f"(photos/, annotations/pixel-level/, annotations/image-level/, label_list.mat).")
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith('.mat'))


def generate_ccp_dataset(data_root, out, cat_A='jeans', cat_B='skirt', phases=('train', 'val'), size=None,
                         min_area=0, keep_both=False, overwrite=False):
    """Write ``<out>/<phase>{A,B}`` (+ ``_seg``); returns ``{'<phase>A': n images, ...}``.

    ``size``: output (H, W), or None to keep each photo's size.
    """
    labels = load_labels(data_root)
    for name in (cat_A, cat_B):
        if name not in labels:
            raise UserInputError(f"Category '{name}' is not in '{os.path.join(data_root, 'label_list.mat')}'; "
                                 f"known: {', '.join(labels)}.")
    cats = {'A': labels[cat_A], 'B': labels[cat_B]}
    names = [f'{p}{d}{s}' for p in phases for d in 'AB' for s in ('', '_seg')]
    counts = {f'{p}{d}': 0 for p in phases for d in 'AB'}
    with output_folders(out, names, overwrite) as tmp:
        for phase in phases:
            level = 'pixel-level' if phase == 'train' else 'image-level'
            folder = os.path.join(data_root, 'annotations', level)
            for id_ in tqdm(_ids(folder), desc=phase, disable=None):
                ann = np.asarray(_loadmat(os.path.join(folder, id_ + '.mat'),
                                          'groundtruth' if level == 'pixel-level' else 'tags'))
                present = [d for d in 'AB' if np.isin(ann, cats[d]).any()]
                if not present or (not keep_both and len(present) == 2):
                    continue
                path = os.path.join(data_root, 'photos', id_ + '.jpg')
                image = open_image(path)
                for d in present:
                    img_dir, seg_dir = os.path.join(tmp, f'{phase}{d}'), os.path.join(tmp, f'{phase}{d}_seg')
                    if level == 'image-level':  # no masks exist for these images
                        no_masks = np.zeros((0, image.size[1], image.size[0]), dtype=bool)
                        img = image if size is None else resize_cover(image, no_masks, size)[0]
                        os.makedirs(img_dir, exist_ok=True)
                        img.save(os.path.join(img_dir, id_ + '.png'), format='PNG')
                        counts[f'{phase}{d}'] += 1
                        continue
                    if ann.shape != (image.size[1], image.size[0]):
                        raise UserInputError(f"'{path}' is {image.size[0]}x{image.size[1]} but its annotation is "
                                             f"{ann.shape[1]}x{ann.shape[0]}; they must match.")
                    img, masks = image, (ann == cats[d])[None]
                    if size is not None:
                        img, masks = resize_cover(image, masks, size)
                    counts[f'{phase}{d}'] += write_instances(img_dir, seg_dir, id_, img, masks, min_area) > 0
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data_root', default='datasets/clothing-co-parsing', help='CCP folder')
    parser.add_argument('--out', default='datasets/jeans2skirt_ccp', help='output dataset folder')
    parser.add_argument('--cat_A', default='jeans', help='label name of domain A (see label_list.mat)')
    parser.add_argument('--cat_B', default='skirt', help='label name of domain B')
    parser.add_argument('--phases', nargs='+', default=['train', 'val'], choices=['train', 'val'],
                        help='train: pixel-level annotations (with masks); val: image-level tags (no masks)')
    parser.add_argument('--size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='output size (default: keep the photo size)')
    parser.add_argument('--min_area', type=float, default=0,
                        help='drop regions smaller than this: a fraction of the image (< 1) or pixels (>= 1)')
    parser.add_argument('--keep_both', action='store_true', help='keep images showing both categories')
    parser.add_argument('--overwrite', action='store_true', help='replace existing output folders')
    args = parser.parse_args(argv)
    counts = generate_ccp_dataset(args.data_root, args.out, args.cat_A, args.cat_B, args.phases,
                                  tuple(args.size) if args.size else None, args.min_area, args.keep_both,
                                  args.overwrite)
    print(f"wrote {', '.join(f'{k}: {v} images' for k, v in counts.items())} to {args.out}")


if __name__ == '__main__':
    sys.exit(run_cli(main))
