"""Finding and reading images, indexing per-instance mask folders, and writing PNG datasets.

Both worlds (translation: PIL geometry, tensors in [-1, 1]; matting: OpenCV geometry, float arrays
in [0, 1]) find and read their files here, so a folder or file problem reads the same everywhere:
a :class:`UserInputError` naming the folder or file and saying what to do.

Finding: :func:`make_dataset` lists the images of a folder (sorted, recursive or not);
:func:`index_by_id` keys them by name; :func:`match_by_stem` pairs the images of sibling folders
by file stem (``fg/a.png`` with ``alpha/a.png``); :func:`index_masks` indexes an InstaGAN ``_seg``
folder once (``<id>_<k>.<ext>`` -> masks of image ``<id>``).

Reading: one decoder, OpenCV on the file's bytes as stored (full bit depth, alpha channel kept,
EXIF orientation not applied, as PIL's ``Image.open``), with PIL as the fallback for files OpenCV
cannot decode. :func:`read_rgb` / :func:`read_gray` return numpy arrays at the file's depth,
:func:`as_unit` / :func:`as_uint8` convert them, :func:`open_image` gives the 8-bit PIL image the
translation geometry works on, and :func:`check_same_size` compares a file with its partner.
Colour is reduced to gray with PIL's ITU-R 601-2 luma (bit-identical to ``Image.convert('L')``).

Writing (used by the ``datasets/`` generators): :func:`save_png`, :func:`write_instances`, and
:func:`output_folders`, which builds a dataset in a temporary folder and moves it into place only
when it is complete, so an interrupted run leaves no half dataset.
"""
import contextlib
import os
import shutil
import tempfile

import cv2
import numpy as np
from PIL import Image

from util.errors import UserInputError

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


# ---------------------------------------------------------------------------- finding
def is_image_file(filename):
    """True when ``filename`` ends with one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return filename.lower().endswith(IMG_EXTENSIONS)


def _walk_images(dir, recursive=True):
    if not recursive:
        for entry in os.scandir(dir):
            if is_image_file(entry.name) and entry.is_file():
                yield entry.path
        return
    for root, _, fnames in os.walk(dir, followlinks=True):
        for fname in fnames:
            if is_image_file(fname):
                yield os.path.join(root, fname)


def _layout_hint(layout):
    if not layout:
        return ''
    return f' Expected layout:\n{layout}' if '\n' in layout else f' Expected layout: {layout}.'


def make_dataset(dir, max_size=float('inf'), layout=None, recursive=True, role=None):
    """Sorted paths of the images under ``dir``, at most ``max_size`` of them.

    ``recursive``: also the images of its sub-folders (CycleGAN's rule; the matting folders are
    flat). Raises :class:`UserInputError` naming ``dir`` (and ``role``, e.g. ``'alpha matte'``)
    when it does not exist or holds no image; ``layout`` (e.g. ``'<dataroot>/trainA/<id>.png'``,
    one line or several) is shown in that message.
    """
    what = f"Image folder '{dir}'" + (f' ({role} images)' if role else '')
    hint = _layout_hint(layout)
    if not os.path.isdir(dir):
        raise UserInputError(f'{what} does not exist.{hint}')
    images = sorted(_walk_images(dir, recursive))
    if not images:
        raise UserInputError(f"{what} holds no image (extensions: {' '.join(IMG_EXTENSIONS)}).{hint}")
    if max_size < len(images):
        images = images[:int(max_size)]
    return images


def image_id(path, root):
    """Identifier of an image: its path relative to ``root`` without extension, '/'-separated
    (in a flat folder: the file stem)."""
    rel = os.path.relpath(path, root)
    return os.path.splitext(rel)[0].replace(os.sep, '/')


def file_stem(path):
    """The file name without folder and extension: ``'a/b/c.png'`` -> ``'c'``."""
    return os.path.splitext(os.path.basename(path))[0]


def index_by_id(paths, root):
    """``{image_id: path}`` of images under ``root``; UserInputError naming both files when two
    differ only in their extension (``a.png``, ``a.jpg``): what goes with them would be ambiguous."""
    table = {}
    for path in paths:
        key = image_id(path, root)
        if key in table:
            raise UserInputError(f"'{table[key]}' and '{path}' in '{root}' have the same name '{key}' apart from "
                                 f"the extension, so the files that go with them would be ambiguous; rename or "
                                 f"remove one.")
        table[key] = path
    return table


def match_by_stem(folders, layout=None, max_size=float('inf'), hints=None):
    """Images of sibling folders paired by file stem: a folder of images, each with its partners.

    ``folders``: ``{role: folder}``, in order, e.g. ``{'foreground': '<base>/fg', 'alpha matte':
    '<base>/alpha'}``. The first folder's images (sorted, flat, at most ``max_size``) are the
    samples; every other folder must hold, for each of them, one image of the same stem (any
    extension). Returns ``{role: [paths]}``, every list aligned with the first.

    Raises :class:`UserInputError` naming the folder when one is missing or empty (with
    ``layout``), both files when two of one folder share a stem, and the image and the file
    expected when a partner is missing, followed by ``hints[role]`` (what to do), if given.
    """
    (role0, dir0), *partners = folders.items()
    paths = make_dataset(dir0, max_size, layout, recursive=False, role=role0)
    found = {role0: paths}
    for role, folder in partners:
        table = index_by_id(make_dataset(folder, layout=layout, recursive=False, role=role), folder)
        found[role] = []
        for path in paths:
            stem = file_stem(path)
            if stem not in table:
                hint = f'; {hints[role]}' if hints and role in hints else ''
                raise UserInputError(f"{role0} '{path}' has no {role}: no file "
                                     f"'{os.path.join(folder, stem)}.<ext>'{hint}.{_layout_hint(layout)}")
            found[role].append(table[stem])
    return found


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


# ---------------------------------------------------------------------------- reading
LUMA = (19595, 38470, 7471)  # PIL's ITU-R 601-2 weights (0.299, 0.587, 0.114) in 1/65536


def _unreadable(path, role, reason):
    return UserInputError(f"Cannot read {role} '{path}' ({reason}); replace the file or remove it (and the "
                          f"files that go with it) from the dataset.")


def _decode(path, role):
    """``(H, W)`` or ``(H, W, C)`` array as stored, channels in RGB(A) order; uint8, uint16 or float32."""
    try:
        buf = np.fromfile(path, np.uint8)
    except OSError as e:
        raise _unreadable(path, role, e.strerror or e) from None
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if arr is None:  # a format or variant this OpenCV lacks; PIL also says why a file is broken
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert('RGB'))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise _unreadable(path, role, e) from None
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise UserInputError(f"{role} '{path}' has pixels of type {arr.dtype}; save it as an 8- or 16-bit PNG.")
    return arr


def read_rgb(path, role='image'):
    """``(H, W, 3)`` RGB array at the file's depth (uint8, uint16 or float32): gray is replicated,
    an alpha channel dropped. UserInputError naming the file (``role`` says what it is) if unreadable."""
    arr = _decode(path, role)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] < 3:  # gray or gray + alpha
        return np.ascontiguousarray(np.repeat(arr[..., :1], 3, axis=2))
    return np.ascontiguousarray(arr[..., :3])


def read_gray(path, role='image'):
    """``(H, W)`` gray array at the file's depth (uint8, uint16 or float32): colour is reduced with
    PIL's luma (``Image.convert('L')``, bit for bit on 8 bits), an alpha channel dropped."""
    arr = _decode(path, role)
    if arr.ndim == 2:
        return arr
    if arr.shape[2] < 3:
        return np.ascontiguousarray(arr[..., 0])
    rgb = np.ascontiguousarray(arr[..., :3])
    if arr.dtype == np.uint8:  # PIL itself (C, 4x faster than numpy here)
        return np.asarray(Image.fromarray(rgb).convert('L'))
    if arr.dtype == np.float32:
        return (rgb @ (np.array(LUMA, np.float32) / 65536)).astype(np.float32)
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))  # PIL's formula on 16 bits
    return ((r * LUMA[0] + g * LUMA[1] + b * LUMA[2] + 0x8000) >> 16).astype(np.uint16)


def as_unit(arr):
    """An array of :func:`read_rgb` / :func:`read_gray` as float32 in [0, 1] (x / 255, x / 65535)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def as_uint8(arr):
    """An array of :func:`read_rgb` / :func:`read_gray` on 8 bits (16-bit and float rounded)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def open_image(path, mode='RGB', role='image'):
    """The 8-bit PIL image of ``path`` in ``mode`` (the translation datasets' reader, and the
    ``datasets/`` generators'); UserInputError naming the file if unreadable."""
    img = Image.fromarray(as_uint8(read_rgb(path, role)))
    return img if mode == 'RGB' else img.convert(mode)


def check_same_size(shape, other_shape, path, other_path):
    """UserInputError naming both files unless the ``(H, W, ...)`` shapes agree in H and W
    (``other_path`` is the file to fix: a mask, a trimap, an alpha matte)."""
    (h, w), (oh, ow) = shape[:2], other_shape[:2]
    if (h, w) != (oh, ow):
        raise UserInputError(f"'{other_path}' is {ow}x{oh} but '{path}' is {w}x{h} (width x height); they must "
                             f"be the same size: resize or regenerate '{other_path}'.")


# ---------------------------------------------------------------------------- writing
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
