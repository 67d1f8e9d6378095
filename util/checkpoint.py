"""Checkpoint files: atomic writes and safe loads.

Every write goes to a temporary file in the same folder (``.<name>.<random>.tmp``), is flushed and
fsynced, then moved over the target with ``os.replace`` (and the folder fsynced), so a crash or a
``kill -9`` never leaves a truncated checkpoint: the target is the old file or the new one. A
temporary file left by a killed writer is ignored by every load and removed by
:func:`remove_stray_temps` when training starts again.

:func:`save_group` writes several files as one checkpoint (e.g. ``latest_net_G_A.pth`` ...
``latest_train_state.pth``): all temporary files are written and synced first, then renamed in
quick succession, and it returns each file's SHA-256 so that the training state can record the
network files it belongs with (a set mixed by a crash between two renames is then detected).

Every load uses ``torch.load(..., weights_only=True)``: a file whose unpickling would run code is
refused with a clear message, and that code never runs.
"""
import hashlib
import io
import os
import pickle
import re
import zipfile

import torch

from util.errors import UserInputError
from util.util import fsync_dir, write_temp

_TEMP = re.compile(r'^\..+\.tmp$')


def serialize(obj):
    """``torch.save`` into bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(obj, path):
    """``torch.save(obj, path)`` atomically; returns the file's SHA-256 (hex)."""
    return save_group([(obj, path)])[os.fspath(path)]


def save_group(items):
    """Write ``[(obj, path), ...]`` atomically as one checkpoint; returns ``{path: sha256 hex}``.

    ``obj``: anything ``torch.save`` takes, or bytes already serialised (:func:`serialize`).
    Each object is serialised and written to its own synced temporary file before any target is
    replaced; then the targets are replaced in the given order (put the file that records the
    others last) and their folders fsynced."""
    staged, digests = [], {}
    try:
        for obj, path in items:
            path = os.fspath(path)
            data = bytes(obj) if isinstance(obj, (bytes, bytearray)) else serialize(obj)
            digests[path] = hashlib.sha256(data).hexdigest()
            staged.append((write_temp(path, lambda f, data=data: f.write(data)), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    for folder in {os.path.dirname(os.path.abspath(p)) for _, p in staged}:
        fsync_dir(folder)
    return digests


def file_digest(path):
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def remove_stray_temps(folder):
    """Delete temporary files (``.<name>.<random>.tmp``) that a killed writer left in ``folder``;
    returns their names. Call it only when no other process writes to ``folder``."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        if _TEMP.match(name) and os.path.isfile(os.path.join(folder, name)):
            try:
                os.remove(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def load(path, map_location='cpu'):
    """``torch.load(path, weights_only=True)`` with errors that name the file and the fix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserInputError(
            f'refusing to load {path}: it holds objects that only unrestricted pickle can build, and '
            f'unpickling them could run code ({str(e).splitlines()[0]}). Load it only if you trust its '
            'source, by converting it to a plain state dict in a separate trusted script.') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserInputError(f'cannot read checkpoint {path}: the file is corrupt or truncated ({e}). '
                             'Use another epoch (--epoch) or re-save it.') from None
