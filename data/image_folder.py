"""Finding images on disk, indexing per-instance mask folders, and writing PNG datasets.

Reading: :func:`make_dataset` lists the images of a folder (sorted, recursive);
:func:`index_masks` indexes an InstaGAN ``_seg`` folder once (``<id>_<k>.<ext>`` -> masks of image
``<id>``). Writing (used by the ``datasets/`` generators): :func:`save_png`,
:func:`write_instances`, and :func:`output_folders`, which builds a dataset in a temporary folder
and moves it into place only when it is complete, so an interrupted run leaves no half dataset.
"""
import contextlib
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from util.errors import UserInputError

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def is_image_file(filename):
    """True when ``filename`` ends with one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return filename.lower().endswith(IMG_EXTENSIONS)


def _walk_images(dir):
    for root, _, fnames in os.walk(dir, followlinks=True):
        for fname in fnames:
            if is_image_file(fname):
                yield os.path.join(root, fname)


def make_dataset(dir, max_size=float('inf'), layout=None):
    """Sorted paths of the images under ``dir`` (recursive), at most ``max_size`` of them.

    Raises :class:`UserInputError` naming ``dir`` when it does not exist or holds no image;
    ``layout`` (e.g. ``'<dataroot>/trainA/<id>.png'``) is shown in that message.
    """
    hint = f' Expected layout: {layout}.' if layout else ''
    if not os.path.isdir(dir):
        raise UserInputError(f"Image folder '{dir}' does not exist.{hint} "
                             f"Check --dataroot and --phase.")
    images = sorted(_walk_images(dir))
    if not images:
        raise UserInputError(f"Image folder '{dir}' holds no image (extensions: "
                             f"{' '.join(IMG_EXTENSIONS)}).{hint}")
    if max_size < len(images):
        images = images[:int(max_size)]
    return images


def image_id(path, root):
    """Identifier of an image: its path relative to ``root`` without extension, '/'-separated."""
    rel = os.path.relpath(path, root)
    return os.path.splitext(rel)[0].replace(os.sep, '/')


def index_masks(seg_dir):
    """Index an instance-mask folder once: ``{image_id: [mask paths ordered by k]}``.

    Masks are named ``<id>_<k>.<ext>`` (k = 0, 1, ...; any image extension), in the same
    sub-folder structure as the images. Files whose name has no ``_<integer>`` suffix are
    ignored. A missing folder gives an empty index (every image then has no mask).
    """
    index = {}
    if not os.path.isdir(seg_dir):
        return index
    for path in _walk_images(seg_dir):
        stem = image_id(path, seg_dir)
        base, sep, k = stem.rpartition('_')
        if not sep or not k.isdigit():
            continue
        index.setdefault(base, []).append((int(k), path))
    return {key: [p for _, p in sorted(v)] for key, v in index.items()}


def save_png(path, array):
    """Write a uint8 array (H, W) or (H, W, 3) as a PNG (deterministic bytes for equal input)."""
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format='PNG')


def min_area_pixels(min_area, hw):
    """``--min_area`` as pixels: a value below 1 is a fraction of the H*W image area."""
    return min_area * hw[0] * hw[1] if min_area < 1 else min_area


def write_instances(img_dir, seg_dir, stem, image, masks, min_area=0):
    """Write one sample in InstaGAN's layout: ``img_dir/<stem>.png`` and ``seg_dir/<stem>_<k>.png``.

    ``image``: PIL image or uint8 array (H, W, 3); ``masks``: bool array (K, H, W). Masks with
    fewer than ``max(1, min_area)`` pixels are dropped (see :func:`min_area_pixels` for fractions);
    the rest are written as binary 0/255 gray PNGs in order of decreasing area (k = 0 the largest).
    Nothing is written when no mask is left. Returns the number of masks written.
    """
    masks = np.asarray(masks, dtype=bool).reshape(-1, *np.asarray(masks).shape[-2:])
    areas = masks.reshape(len(masks), -1).sum(1) if len(masks) else np.zeros(0, dtype=np.int64)
    order = [i for i in np.argsort(-areas, kind='stable')
             if areas[i] >= max(1, min_area_pixels(min_area, masks.shape[-2:]))]
    if not order:
        return 0
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(seg_dir, exist_ok=True)
    if isinstance(image, Image.Image):
        image.save(os.path.join(img_dir, stem + '.png'), format='PNG')
    else:
        save_png(os.path.join(img_dir, stem + '.png'), image)
    for k, i in enumerate(order):
        save_png(os.path.join(seg_dir, f'{stem}_{k}.png'), masks[i].astype(np.uint8) * 255)
    return len(order)


@contextlib.contextmanager
def output_folders(out, names, overwrite=False):
    """Build the folders ``names`` of ``out`` in a temporary folder; move them in when complete.

    Yields the temporary folder; write ``<tmp>/<name>/...`` there. On success each ``<name>``
    replaces ``out/<name>`` (created empty if nothing was written); on an exception nothing in
    ``out`` changes. Raises :class:`UserInputError` when one of them exists, unless ``overwrite``.
    """
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not overwrite:
        raise UserInputError(f"'{out}' already holds {', '.join(existing)}; choose another --out "
                             f"or pass --overwrite to replace them.")
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tmp-', dir=out)
    try:
        yield tmp
        for name in names:
            src, dst = os.path.join(tmp, name), os.path.join(out, name)
            os.makedirs(src, exist_ok=True)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            os.rename(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
