"""Write instance masks made by a COCO Mask R-CNN, in InstaGAN's layout, to inspect, fix and train on.

Usage::

    python datasets/make_auto_masks.py --images datasets/mydata/trainA --categories person
    python datasets/make_auto_masks.py --images photos/ --out photos_seg --categories sheep,cow \\
        --model_path maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --score_thresh 0.7

For each image ``<images>/<id>.<ext>`` (sub-folders kept) writes ``<out>/<id>_<k>.png``: one
binary gray mask (0/255) per detected instance of the categories, k = 0 the largest, at the
image's size: the ``<phase>A_seg`` layout the instance datasets read. Images without any
detection get no file and are listed at the end. ``--out`` defaults to ``<images>_seg``; it
appears only when complete (an interrupted run leaves nothing), and an existing one is replaced
only with ``--overwrite``. The detector is :class:`util.auto_masks.MaskDetector`; the dataset
option ``--auto_masks`` runs the same detector at load time instead.
"""
import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.base_dataset import open_image  # noqa: E402
from data.image_folder import image_id, make_dataset, output_folders, save_png  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402


def make_auto_masks(images, categories, out=None, detector=None, batch_size=1, overwrite=False, **detector_kwargs):
    """Detect and write the masks of every image under ``images``; returns ``{id: number of masks}``.

    ``categories``: list of COCO names; ``detector``: a ready :class:`util.auto_masks.MaskDetector`
    (else one is built from ``detector_kwargs``); ``batch_size``: images per forward pass.
    """
    images = os.path.normpath(images)
    out = os.path.normpath(out or images + '_seg')
    paths = make_dataset(images, layout='<images>/<id>.<ext>')
    parent, name = os.path.split(os.path.abspath(out))
    counts = {}
    with output_folders(parent, [name], overwrite) as tmp:  # an existing --out fails before the model loads
        if detector is None:
            from util.auto_masks import MaskDetector
            detector = MaskDetector(categories, **detector_kwargs)
        for start in tqdm(range(0, len(paths), batch_size), desc='masks', unit='batch', disable=None):
            batch = paths[start:start + batch_size]
            arrays = [np.asarray(open_image(p)) for p in batch]
            for path, masks in zip(batch, detector.detect_batch(arrays, categories)):
                key = image_id(path, images)
                counts[key] = len(masks)
                if len(masks):
                    os.makedirs(os.path.dirname(os.path.join(tmp, name, key)), exist_ok=True)
                for k, mask in enumerate(masks):
                    save_png(os.path.join(tmp, name, f'{key}_{k}.png'), mask.astype(np.uint8) * 255)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', required=True, help='folder of images (sub-folders are read too)')
    parser.add_argument('--out', default=None, help='mask folder to write (default: <images>_seg)')
    parser.add_argument('--categories', required=True, help="COCO categories, comma-separated: 'person', 'sheep,cow'")
    parser.add_argument('--score_thresh', type=float, default=0.5, help='minimum detection score')
    parser.add_argument('--min_area', type=float, default=0.001,
                        help='drop masks smaller than this: a fraction of the image (< 1) or pixels (>= 1)')
    parser.add_argument('--mask_thresh', type=float, default=0.5, help='threshold of the soft masks, in (0, 1)')
    parser.add_argument('--max_instances', type=int, default=20, help='masks per image at most (the largest)')
    parser.add_argument('--model_path', default=None,
                        help="local Mask R-CNN state dict; default: download torchvision's COCO weights")
    parser.add_argument('--min_size', type=int, default=800, help="detector's shorter side (torchvision: 800)")
    parser.add_argument('--max_size', type=int, default=1333, help="detector's longer side at most (1333)")
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--batch_size', type=int, default=1, help='images per forward pass (more helps on a GPU)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    args = parser.parse_args(argv)
    categories = [c.strip() for c in args.categories.split(',') if c.strip()]
    if not categories:
        raise UserInputError("--categories is empty; give COCO category names, e.g. 'person' or 'sheep,cow'.")
    counts = make_auto_masks(args.images, categories, args.out, batch_size=max(1, args.batch_size),
                             overwrite=args.overwrite, score_thresh=args.score_thresh, min_area=args.min_area,
                             mask_thresh=args.mask_thresh, max_instances=args.max_instances,
                             model_path=args.model_path, device=args.device, min_size=args.min_size,
                             max_size=args.max_size)
    out = args.out or os.path.normpath(args.images) + '_seg'
    empty = sorted(k for k, n in counts.items() if n == 0)
    print(f"wrote {sum(counts.values())} masks of {len(counts) - len(empty)} of {len(counts)} images to {out}")
    if empty:
        shown = ', '.join(empty[:20]) + (f' (and {len(empty) - 20} more)' if len(empty) > 20 else '')
        print(f"no {'/'.join(categories)} detected in {len(empty)} images: {shown}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
