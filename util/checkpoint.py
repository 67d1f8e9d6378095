"""Checkpoint files: atomic writes and safe loads.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then moved over
the target with ``os.replace``, so a crash never leaves a truncated checkpoint. Every load uses
``torch.load(..., weights_only=True)``: a file whose unpickling would run code is refused with a
clear message, and that code never runs.
"""
import os
import pickle
import zipfile

import torch

from util.errors import UserInputError
from util.util import atomic_write


def save(obj, path):
    """``torch.save(obj, path)`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


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
