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

Every load of the project goes through :func:`load`, ``torch.load(..., weights_only=True)``: a file
whose unpickling would run code is refused with a clear message, and that code never runs.
"""
import contextlib
import hashlib
import io
import os
import pickle
import re
import warnings
from collections.abc import Mapping

import numpy as np
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


def _numpy_scalar_globals():
    """numpy's scalar constructor under both names files use, numpy.dtype, and the dtype classes
    (e.g. numpy.dtypes.Float64DType) whose state a pickled dtype sets, for the numeric types."""
    try:
        from numpy._core.multiarray import scalar      # numpy >= 2
    except ImportError:                                 # numpy 1.x
        from numpy.core.multiarray import scalar
    dtype_classes = dict.fromkeys(type(np.dtype(c)) for c in '?bBhHiIlLqQefdgFDG')
    return ((scalar, 'numpy.core.multiarray.scalar'),   # the name in files pickled under numpy 1.x / Python 2
            (scalar, 'numpy._core.multiarray.scalar'),  # and under numpy 2
            np.dtype, *dtype_classes)


#: ``safe_globals`` that let :func:`load` read numpy scalars of numeric types (e.g. the
#: ``numpy.float64`` metric a training script stored next to its state dict). They build a number
#: from a dtype and raw bytes; arrays and object dtypes stay refused.
NUMPY_SCALARS = _numpy_scalar_globals()

_DEFAULT_HINT = 'Check --checkpoints_dir, --name and --epoch, or use another epoch.'


def load(path, map_location='cpu', *, safe_globals=(), encoding=None, what='checkpoint', hint=_DEFAULT_HINT):
    """``torch.load(path, weights_only=True)`` with errors (UserInputError) that name the file.

    Args:
        safe_globals: more globals the weights-only unpickler may build, as
            ``torch.serialization.safe_globals`` takes them (e.g. :data:`NUMPY_SCALARS`); only for
            this call.
        encoding: how the unpickler decodes Python 2 ``str`` objects: ``'latin1'`` for legacy
            Python 2 pickles (numpy scalars in them hold their bytes as such strings); None:
            torch's default (utf-8).
        what: what the file is, in messages ('checkpoint', 'pretrained weights file', ...).
        hint: the sentence that ends the message of a missing or unreadable file (what to do).
    Raises:
        UserInputError: the file does not exist, is corrupt or truncated or not a torch.save file,
            or holds an object outside the allow-list (``refusing to load``: unpickling it could run
            code, and it never runs).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f'{what} not found: {path}. {hint}')
    allowed = torch.serialization.safe_globals(list(safe_globals)) if safe_globals else contextlib.nullcontext()
    kwargs = {} if encoding is None else {'encoding': encoding}
    try:
        with allowed, warnings.catch_warnings():
            # torch warns that pickle arguments need weights_only=False, yet passes `encoding` on
            warnings.filterwarnings('ignore', message='pickle_load_args only works')
            return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        refusal = _refusal(reason)
        if refusal is None:    # no pickle it can parse: garbage bytes, a file of another program
            raise UserInputError(_unreadable(what, path, _first_sentence(reason), hint)) from None
        raise UserInputError(
            f'refusing to load {what} {path}: {refusal} (unpickling it could run code). Load it only if you '
            'trust its source, by converting it to a plain state dict in a separate trusted script.') from None
    except Exception as e:  # zip, pickle, decoding and I/O errors all mean: not a readable torch.save file
        detail = _first_sentence(str(e))
        reason = f'{type(e).__name__}: {detail}' if detail else type(e).__name__
        raise UserInputError(_unreadable(what, path, reason, hint)) from None


def _unreadable(what, path, reason, hint):
    return (f'cannot read {what} {path}: the file is corrupt or truncated, or not saved with torch.save '
            f'({reason}). {hint}')


def _first_sentence(text):
    line = (text.strip().splitlines() or [''])[0]
    return re.split(r'(?<=[.!?])\s', line, maxsplit=1)[0]


def _unpickler_reason(message):
    """The reason in an UnpicklingError of torch's weights-only loader (the text after
    'WeightsUnpickler error:', without torch's advice around it); the whole message otherwise."""
    message = re.sub(r'\x1b\[[0-9;]*m', '', message)
    reason = message.partition('WeightsUnpickler error:')[2]
    return reason.strip() or message.strip()


def _refusal(reason):
    """Why the weights-only unpickler refused a file ('it holds numpy._core.multiarray.scalar,
    which ...'); None when the file is merely malformed (e.g. 'Unsupported operand 110')."""
    glob = re.search(r'GLOBAL (\S+)', reason)
    if glob:
        return f'it holds {glob.group(1)}, which the weights-only loader does not build'
    if re.search(r'allowlisted|unrecognized function|must be imported', reason):
        return f'the weights-only loader does not build what it holds ({_first_sentence(reason)})'
    return None


def is_state_dict(obj):
    """True for a mapping of names (str) to tensors, as ``net.state_dict()`` gives."""
    return isinstance(obj, Mapping) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def load_weights_file(path, map_location='cpu'):
    """The state dict in ``path`` (name -> tensor, no ``_metadata``), whichever way it was saved:

    * a plain state dict, as :meth:`models.base_model.BaseModel.save_networks` writes ``<epoch>_net_<name>.pth``;
    * a training script's checkpoint that wraps one, ``{'state_dict': ..., 'epoch': ..., ...}`` (e.g.
      the Deep Image Matting port's, whose ``best_sad`` is a ``numpy.float64``), keys with the
      ``module.`` prefix of ``nn.DataParallel`` unprefixed;
    * either in torch's legacy (pre-1.6) format written by Python 2 (its strings decoded as latin1).

    Loaded weights-only (:func:`load`) with numpy's numeric scalars allowed; anything
    else that only unrestricted pickle builds is refused with a message, never run."""
    obj = load(path, map_location=map_location, safe_globals=NUMPY_SCALARS,
                          encoding='latin1', what='weights file')
    if isinstance(obj, dict) and 'state_dict' in obj and is_state_dict(obj['state_dict']):
        obj = obj['state_dict']
    if not is_state_dict(obj):
        keys = ', '.join(map(repr, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise UserInputError(f'{path} holds no state dict (a dict of tensors, or one under "state_dict"); '
                             f'found {keys}')
    state = dict(obj)
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def load_into(net, state, path, label):
    """``net.load_state_dict(state)`` (strict) with a UserInputError naming ``path`` and ``label``
    (e.g. ``netG_A``) and the options to check when the keys or shapes do not fit. Running
    statistics that ``net`` has no place for are dropped (old InstanceNorm checkpoints, pytorch
    < 0.4, stored them)."""
    own = net.state_dict()
    state = {k: v for k, v in state.items()
             if k in own or not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserInputError(
            f'{path} does not fit {label} ({type(net).__name__}): missing keys {missing[:5]}'
            f'{"..." if len(missing) > 5 else ""}, unexpected keys {unexpected[:5]}'
            f'{"..." if len(unexpected) > 5 else ""}. Check --model, --netG/--netD, --ngf/--ndf, '
            '--norm, --n_layers_D and --upsample against the run that wrote it.')
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserInputError(f'{path} does not fit {label}: {str(e).splitlines()[-1].strip()}. '
                             'Check --ngf/--ndf, --input_nc/--output_nc, --norm and the model\'s own architecture '
                             'options (e.g. alphagan --guidance) against the run that wrote it.') from None
