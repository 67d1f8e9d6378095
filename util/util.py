"""Small conversions between tensors, arrays and files, plus atomic writes."""
import os
import tempfile

import numpy as np
import torch
from PIL import Image


def tensor2im(t, value_range=(-1.0, 1.0)):
    """Convert an image tensor to a uint8 array for saving.

    t: (C, H, W) or (B, C, H, W) (the first sample is taken), values in ``value_range``
    (default [-1, 1]; matting tensors use (0, 1)). C = 1 is repeated to RGB; C > 3 keeps the
    first 3 channels. Returns (H, W, 3) uint8. A numpy array is returned unchanged.
    """
    if isinstance(t, np.ndarray):
        return t
    t = t.detach()
    if t.dim() == 4:
        t = t[0]
    t = t.float().cpu()
    if t.shape[0] == 1:
        t = t.repeat(3, 1, 1)
    t = t[:3]
    lo, hi = value_range
    t = (t - lo) / (hi - lo)
    arr = (t.clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
    return arr


def fsync_dir(folder):
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(path, write_fn, mode='wb'):
    """``write_fn(f)`` into a flushed and fsynced temporary file ``.<name>.<random>.tmp`` beside
    ``path``; returns the temporary file's name (removed again if writing fails)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def atomic_write(path, write_fn, mode='wb'):
    """Write ``path`` atomically: ``write_fn(f)`` writes into a temporary file in the same folder,
    which is flushed, fsynced and moved over ``path`` with ``os.replace`` (the folder fsynced). A
    crash leaves either the old file or the new one, never a partial file."""
    path = os.fspath(path)
    tmp = write_temp(path, write_fn, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def save_image(image_numpy, image_path, aspect_ratio=1.0):
    """Save an (H, W, 3) or (H, W) uint8 array as an image (PNG unless the name says otherwise),
    atomically. ``aspect_ratio`` > 1 stretches the width, < 1 the height (CycleGAN semantics)."""
    image_pil = Image.fromarray(image_numpy)
    h, w = image_numpy.shape[:2]
    if aspect_ratio > 1.0:
        image_pil = image_pil.resize((int(w * aspect_ratio), h), Image.BICUBIC)
    elif aspect_ratio < 1.0:
        image_pil = image_pil.resize((w, int(h / aspect_ratio)), Image.BICUBIC)
    fmt = os.path.splitext(image_path)[1].lstrip('.').upper() or 'PNG'
    fmt = {'JPG': 'JPEG', 'TIF': 'TIFF'}.get(fmt, fmt)
    atomic_write(image_path, lambda f: image_pil.save(f, format=fmt))


def mkdirs(paths):
    """Create one folder or a list of folders (no error if they exist)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for p in paths:
        os.makedirs(p, exist_ok=True)
