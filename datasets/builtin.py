"""The built-in data sets, made on first use: what train.py / test.py read without ``--dataroot``.

- ``'shapes'``: ``datasets/make_shapes_dataset.py`` with ``make demo``'s settings (200 training and
  20 test images per domain, 64 px, seed 0) in ``<root>/shapes``, InstaGAN's layout
  (``{train,test}{A,B}`` and their ``_seg`` mask folders): for the translation dataset modes.
- ``'matting'``: ``datasets/make_matting_dataset.py`` with its defaults, as ``make demo-matting``
  makes it, in ``<root>/matting_synth``: ``train/{fg,alpha,bg}`` and ``test/{merged,trimaps,alpha,bgr}``
  (``bgr``: background plates, for ``--dataset_mode background_matting``).

``<root>`` is the repository's ``datasets/`` folder (both sets are in .gitignore), or the folder
named by the environment variable ``INSTAGAN_BUILTIN_DIR`` (the tests point it at a temporary one).
Which set a dataset mode reads is declared by the mode (``BaseDataset.builtin_data``).
"""
import os
import sys
import time

DATASETS = os.path.dirname(os.path.abspath(__file__))
ENV = 'INSTAGAN_BUILTIN_DIR'


def _make_shapes(out):
    from datasets.make_shapes_dataset import make_shapes_dataset
    make_shapes_dataset(out, n_train=200, n_test=20, size=64, seed=0, overwrite=True)


def _make_matting(out):
    from datasets.make_matting_dataset import make_matting_dataset
    make_matting_dataset(out, overwrite=True)


# kind -> (folder under the root, the sub-folders a complete set has, maker)
SETS = {
    'shapes': ('shapes', [f'{s}{d}{seg}' for s in ('train', 'test') for d in 'AB' for seg in ('', '_seg')],
               _make_shapes),
    'matting': ('matting_synth', ['train/fg', 'train/alpha', 'train/bg', 'test/merged', 'test/trimaps',
                                  'test/alpha', 'test/bgr'], _make_matting),
}


# the image size a set is made at: without size options, train.py / test.py load it at that size
# (the parser's 286 / 256 px would upscale 64 px shapes about 4x and train ~20x slower)
NATIVE_SIZE = {'shapes': 64}


def builtin_root(root=None):
    """The folder that holds the built-in sets: ``root``, else $INSTAGAN_BUILTIN_DIR, else datasets/."""
    return os.path.abspath(root or os.environ.get(ENV) or DATASETS)


def builtin_path(kind, root=None):
    """Where the built-in set ``kind`` ('shapes' or 'matting') is, or will be, made."""
    if kind not in SETS:
        raise ValueError(f'unknown built-in set {kind!r}; choose one of: {", ".join(SETS)}')
    return os.path.join(builtin_root(root), SETS[kind][0])


def is_complete(kind, root=None):
    path = builtin_path(kind, root)
    return all(os.path.isdir(os.path.join(path, sub)) for sub in SETS[kind][1])


def _shown(path):
    """``path`` relative to the working directory when it lies below it, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def ensure_builtin(kind, root=None, reason=None, echo=True, note=''):
    """The path of the built-in set ``kind``, made first when it is missing or incomplete.

    With ``echo``, prints one line: ``<reason>: using the built-in <kind> set at <path> (made now,
    2.3 s)`` and ``note``. Processes started together (torchrun ranks) make it once: the others wait on a lock
    file in its folder. A set found incomplete (an interrupted make) is made again in full.
    """
    path = builtin_path(kind, root)
    t0, made = time.time(), False
    if not is_complete(kind, root):
        os.makedirs(path, exist_ok=True)
        with _lock(os.path.join(path, '.making.lock')):
            if not is_complete(kind, root):   # another process may have made it meanwhile
                SETS[kind][2](path)
                made = True
    if echo:
        how = f' (made now, {time.time() - t0:.1f} s)' if made else ''
        print(f'{reason + ": " if reason else ""}using the built-in {kind} set at {_shown(path)}{how}{note}', flush=True)
    return path


class _lock:
    """An exclusive advisory lock on ``path`` (fcntl; none where fcntl does not exist)."""

    def __init__(self, path):
        self.path, self.f = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.f = open(self.path, 'w')
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()   # releases the lock; the empty file stays (removing it would race)


if __name__ == '__main__':   # python datasets/builtin.py [shapes|matting ...]: make them now
    sys.path.insert(0, os.path.dirname(DATASETS))
    for k in sys.argv[1:] or list(SETS):
        ensure_builtin(k, reason='requested')
