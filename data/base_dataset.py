"""Base class of every dataset mode (``--dataset_mode NAME`` -> ``data/NAME_dataset.py``), and
the augmentation shared by all of them.

Augmentation draws ONE set of random parameters per sample (:func:`get_params`) and applies it to
every array of that sample (:func:`apply_transform` for images, :func:`transform_masks` for
stacks of masks), so an image and its masks / alpha / trimap stay pixel-aligned.

Why not the official InstaGAN way: it reseeds Python's ``random`` before transforming the image
and again before each mask, hoping ``transforms.RandomCrop`` / ``RandomHorizontalFlip`` draw the
same numbers each time. Since torchvision 0.8 those transforms draw from *torch's* generator, which
the reseed does not touch, so the image and each mask get different crops and flips (checked
with torchvision 0.29: 200 of 200 samples misaligned). Here nothing relies on reseeding: the
parameters are drawn once, from torch's generator (so DataLoader workers, which torch seeds
differently, draw differently, and ``torch.manual_seed`` makes runs repeatable), and the geometry
is a pure function of them.

Geometry (``opt.preprocess``, sizes from ``opt.load_size_h/w`` and ``opt.crop_size_h/w``):

- ``resize_and_crop``: resize to (load_size_h, load_size_w), then crop (crop_size_h, crop_size_w);
- ``crop``: crop only (the image must be at least the crop size);
- ``scale_width``: width to load_size_w, height kept in proportion (at least crop_size_h);
- ``scale_width_and_crop``: as scale_width, then crop;
- ``none``: resize to the nearest multiple of 4 on each side (networks need it), nothing else.

Crops are random when ``opt.isTrain`` and centred otherwise (test outputs are then repeatable);
the horizontal flip happens with probability 1/2 when ``opt.isTrain and not opt.no_flip``.
Images are resized bicubic (antialiased); masks by nearest neighbour, with the same pixel-centre
convention as PIL, so a mask and its image agree pixel for pixel.
"""
import argparse
import os
from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.utils.data as data
from PIL import Image

from data.image_folder import open_image  # noqa: F401  (the translation reader; datasets/ imports it here)
from util.errors import UserInputError

PREPROCESS_MODES = ('resize_and_crop', 'crop', 'scale_width', 'scale_width_and_crop', 'none')


class BaseDataset(data.Dataset, ABC):
    """A dataset mode. Subclasses are named ``<Name>Dataset`` in ``data/<name>_dataset.py``.

    Contract, the same for the translation and the matting modes:

    - ``modify_commandline_options(parser, is_train)`` (static): add this mode's options, with
      their defaults, or change other defaults; return the parser.
    - ``__init__(opt)``: find the files (:mod:`data.image_folder`: :func:`make_dataset`,
      :func:`match_by_stem`, errors naming the folder) under the folder rule of the mode, below.
      Options of this mode's own hook that ``opt`` lacks (a hand-built Namespace, e.g. in a
      script or a test) are filled in with the hook's defaults, so the code reads ``opt.name``
      and every default is written once, in the hook.
    - ``__len__()``; ``__getitem__(index) -> dict`` of tensors and paths. The random parameters
      of a sample are drawn once and applied to every array of it (image, masks, alpha, trimap):
      :func:`get_params` for the PIL geometry of the translation modes, :meth:`sample_rng` for
      modes that draw with numpy.
    - ``value_range`` (class attribute, ``(low, high)``): the range of the sample's image tensors.
      Translation modes: ``(-1.0, 1.0)`` (CycleGAN's convention: 0..255 -> [-1, 1]; their masks
      are in {-1, 1}); matting modes: ``(0.0, 1.0)`` (image, fg, bg and alpha on a 0..1 scale,
      trimap in {0, 0.5, 1}). Every float tensor of a sample lies in it. Models and visualisers
      read it (``dataset.value_range``) instead of assuming a range. Every mode declares it.

    Folder rules: the translation modes read ``<dataroot>/<phase><D>`` (:meth:`domain_dir`,
    CycleGAN's ``trainA`` / ``testB``); the modes with one sub-folder per role (matting: ``fg/``,
    ``alpha/``, ``bg/``...) read them under :meth:`phase_root`: ``<dataroot>/<phase>`` when that
    folder exists, else ``<dataroot>``.
    """

    value_range = None  # each mode sets (low, high); see the class docstring
    #: The built-in set (datasets/builtin.py) in this mode's layout, read when ``--dataroot`` is not
    #: given: 'shapes', 'matting', or None (the mode then needs ``--dataroot``).
    builtin_data = None

    @classmethod
    def builtin_dataroot(cls, path, opt):
        """The ``--dataroot`` to read in the built-in set made at ``path``: the set's folder itself."""
        return path

    def __init__(self, opt):
        if self.value_range is None:
            raise TypeError(f'{type(self).__name__} must declare value_range (see BaseDataset)')
        for name, value in self.option_defaults(opt.isTrain).items():
            if not hasattr(opt, name):
                setattr(opt, name, value)
        self.opt = opt
        self.root = opt.dataroot

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add dataset-specific options or change defaults; return the parser."""
        return parser

    @classmethod
    def option_defaults(cls, is_train):
        """``{name: default}`` of the options this mode's hook adds or changes."""
        parser = cls.modify_commandline_options(argparse.ArgumentParser(add_help=False), is_train)
        return vars(parser.parse_args([]))

    def domain_dir(self, domain):
        """``<dataroot>/<phase><domain>``, e.g. ``<dataroot>/trainA`` (the translation modes' rule)."""
        return os.path.join(self.opt.dataroot, self.opt.phase + domain)

    def phase_root(self, layout):
        """``<dataroot>/<phase>`` when that folder exists (it wins), else ``<dataroot>`` (the rule
        of the modes with one sub-folder per role). UserInputError showing ``layout`` when
        ``--dataroot`` is not a folder."""
        root = self.opt.dataroot
        if root is None or not os.path.isdir(root):
            raise UserInputError(f'--dataroot {root} is not a folder. Expected layout:\n{layout}')
        phase_dir = os.path.join(root, self.opt.phase)
        return phase_dir if os.path.isdir(phase_dir) else root

    def sample_rng(self, index):
        """The ``numpy.random.Generator`` of one sample, for modes that draw with numpy.

        Seeded with one number drawn from torch's generator (so DataLoader workers, which torch
        seeds differently, and epochs differ, and ``torch.manual_seed`` makes runs repeatable),
        the index, and ``opt.seed`` when set. No global generator is reseeded.
        """
        draw = int(torch.randint(0, 2 ** 62, (1,)).item())
        seed = self.opt.seed
        return np.random.default_rng([draw, int(index)] + ([int(seed)] if seed is not None else []))

    @abstractmethod
    def __len__(self):
        """Number of samples."""

    @abstractmethod
    def __getitem__(self, index):
        """Return one sample as a dict of tensors and paths."""


# ---------------------------------------------------------------------------- random parameters
def _randint(low, high, rng):
    """Uniform integer in [low, high] (inclusive) from torch's generator ``rng`` (None: global)."""
    return int(torch.randint(low, high + 1, (1,), generator=rng).item())


def get_params(opt, size, rng=None, name='the image'):
    """Draw the random augmentation parameters of one sample.

    ``size`` is the input's (width, height) (PIL's ``img.size``); ``rng`` a ``torch.Generator``
    or None for torch's global one; ``name`` appears in error messages.
    Returns ``{'size': (w, h), 'resize': (rw, rh), 'crop': (x, y, cw, ch), 'flip': bool}``: resize
    the input to (rw, rh), keep columns x..x+cw-1 and rows y..y+ch-1, then mirror if ``flip``.
    """
    w, h = (int(s) for s in size)
    mode = opt.preprocess
    if mode not in PREPROCESS_MODES:
        raise UserInputError(f"--preprocess {mode!r} is unknown; use one of {', '.join(PREPROCESS_MODES)}.")
    if mode == 'resize_and_crop':
        rw, rh = opt.load_size_w, opt.load_size_h
    elif mode.startswith('scale_width'):
        rw = opt.load_size_w
        rh = max(int(opt.load_size_w * h / w), opt.crop_size_h)
    elif mode == 'none':
        rw, rh = max(4, int(round(w / 4)) * 4), max(4, int(round(h / 4)) * 4)
    else:  # crop
        rw, rh = w, h
    if mode.endswith('crop'):
        cw, ch = opt.crop_size_w, opt.crop_size_h
        if rw < cw or rh < ch:
            raise UserInputError(
                f"{name}: size {rw}x{rh} (width x height, after --preprocess {mode}) is smaller than "
                f"the crop {cw}x{ch}; lower --crop_size, raise --load_size, or use --preprocess resize_and_crop.")
        if opt.isTrain:
            x, y = _randint(0, rw - cw, rng), _randint(0, rh - ch, rng)
        else:
            x, y = (rw - cw) // 2, (rh - ch) // 2
    else:
        x, y, cw, ch = 0, 0, rw, rh
    flip = bool(opt.isTrain and not opt.no_flip and torch.rand(1, generator=rng).item() < 0.5)
    return {'size': (w, h), 'resize': (rw, rh), 'crop': (x, y, cw, ch), 'flip': flip}


# ---------------------------------------------------------------------------- applying them
def _as_pil(img):
    if isinstance(img, Image.Image):
        return img
    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise TypeError(f'expected a PIL image or a uint8/bool array, got {arr.dtype}')
    return Image.fromarray(arr)


def nearest_indices(params):
    """Source row and column indices of the output pixels, for nearest-neighbour geometry.

    Returns ``(rows (ch,), cols (cw,))`` int64 arrays: output pixel (i, j) is input pixel
    (rows[i], cols[j]). Pixel-centre convention of PIL's NEAREST: src = floor((dst + 0.5) * in / out).
    """
    (w, h), (rw, rh), (x, y, cw, ch) = params['size'], params['resize'], params['crop']
    rows = np.minimum(((np.arange(y, y + ch) + 0.5) * h / rh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(x, x + cw) + 0.5) * w / rw).astype(np.int64), w - 1)
    if params['flip']:
        cols = cols[::-1].copy()
    return rows, cols


def transform_masks(masks, params):
    """Apply the geometry of ``params`` to a stack of masks by nearest neighbour, in one gather.

    ``masks``: array or tensor (K, H, W) of any dtype (bool, uint8, float...), H, W = the
    sample's input size. Returns a tensor (K, ch, cw) of the same dtype; values are only moved,
    never mixed, so binary masks stay binary.
    """
    w, h = params['size']
    if tuple(masks.shape[-2:]) != (h, w):
        raise ValueError(f'masks of size {tuple(masks.shape[-2:])} do not match the sample size {(h, w)}')
    rows, cols = nearest_indices(params)
    if torch.is_tensor(masks):
        return masks[:, torch.from_numpy(rows)][:, :, torch.from_numpy(cols)]
    return torch.from_numpy(np.asarray(masks)[:, rows[:, None], cols[None, :]])


def apply_transform(img, opt, params, kind='image'):
    """Apply the sample's parameters to one image or mask; return a tensor in [-1, 1].

    ``img``: PIL image, or uint8/bool array (H, W) or (H, W, C), of the sample's input size.
    ``kind='image'``: bicubic (antialiased) resize -> (C, ch, cw) float in [-1, 1] (also right for
    a soft alpha matte given as an 'L' image).
    ``kind='mask'``: nearest neighbour -> (C, ch, cw) float, 0..255 mapped linearly to [-1, 1]
    (a 0/255 mask gives {-1, 1}, a 0/128/255 trimap gives {-1, ~0, 1}).
    ``opt`` is accepted for the CycleGAN-style signature; the geometry is all in ``params``.
    """
    pil = _as_pil(img)
    if pil.size != tuple(params['size']):
        raise ValueError(f'input of size {pil.size} does not match the parameters drawn for {params["size"]}')
    if kind == 'image':
        arr = np.asarray(transform_pil(pil, params, Image.BICUBIC))
    elif kind == 'mask':
        arr = np.asarray(pil)[np.ix_(*nearest_indices(params))]
    else:
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    # numpy does the arithmetic: torch's thread pool costs more than these small arrays
    return chw_tensor(arr.astype(np.float32) / 127.5 - 1.0)


def transform_pil(img, params, resample=Image.BICUBIC):
    """Apply the geometry of ``params`` to a PIL image with ``resample``; returns a PIL image."""
    if img.size != tuple(params['resize']):
        img = img.resize(tuple(params['resize']), resample)
    x, y, cw, ch = params['crop']
    if (x, y, cw, ch) != (0, 0) + img.size:
        img = img.crop((x, y, x + cw, y + ch))
    if params['flip']:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def cover_params(size, out_hw):
    """Deterministic parameters that resize ``size`` (w, h) to cover ``out_hw`` (H, W) keeping the
    aspect ratio, then crop the centre (the official InstaGAN generators' resize + CenterCrop)."""
    (w, h), (H, W) = size, out_hw
    scale = max(W / w, H / h)
    rw, rh = max(W, int(np.ceil(w * scale - 1e-6))), max(H, int(np.ceil(h * scale - 1e-6)))
    return {'size': (w, h), 'resize': (rw, rh), 'crop': ((rw - W) // 2, (rh - H) // 2, W, H), 'flip': False}


def resize_cover(image, masks, out_hw, resample=Image.BILINEAR):
    """Resize a PIL image and its masks (K, H, W) to cover ``out_hw`` (H, W), then centre-crop.

    The image is resampled with ``resample`` (antialiased), the masks by nearest neighbour, with
    the same geometry (:func:`cover_params`). Returns ``(PIL image, bool array (K, H, W))``.
    """
    params = cover_params(image.size, out_hw)
    return transform_pil(image, params, resample), transform_masks(np.asarray(masks, dtype=bool), params).numpy()


def get_transform(opt, params=None, kind='image', grayscale=False, rng=None):
    """A callable ``img -> tensor`` (see :func:`apply_transform`); ``grayscale`` gives 1 channel.

    With ``params=None`` each call draws its own parameters (for inputs that share nothing, like
    the two unpaired images of CycleGAN); pass the sample's ``params`` to keep arrays in step.
    """
    def transform(img):
        p = params if params is not None else get_params(opt, _as_pil(img).size, rng)
        t = apply_transform(img, opt, p, kind)
        return to_grayscale(t) if grayscale else t
    return transform


# ---------------------------------------------------------------------------- tensors, channels
def chw_tensor(arr):
    """``(H, W)`` or ``(H, W, C)`` array -> ``(C, H, W)`` float32 tensor (values unchanged)."""
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))


def to_grayscale(t):
    """RGB (..., 3, H, W) in [-1, 1] -> gray (..., 1, H, W) in [-1, 1] (ITU-R 601 luma).

    One-channel inputs are returned unchanged.
    """
    if t.shape[-3] == 1:
        return t
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=t.dtype, device=t.device).view(3, 1, 1)
    return (t * weights).sum(dim=-3, keepdim=True)


def match_channels(t, nc):
    """Make a (..., C, H, W) image tensor have ``nc`` channels (RGB->gray or gray->RGB)."""
    if t.shape[-3] == nc:
        return t
    if nc == 1:
        return to_grayscale(t)
    if nc == 3 and t.shape[-3] == 1:
        return t.expand(*t.shape[:-3], 3, *t.shape[-2:]).clone()
    raise UserInputError(f'cannot convert {t.shape[-3]}-channel images to {nc} channels; '
                         f'use --input_nc/--output_nc 1 or 3.')


def domain_channels(opt):
    """Channels of domain A and B images: (input_nc, output_nc), swapped when direction is BtoA."""
    if opt.direction == 'BtoA':
        return opt.output_nc, opt.input_nc
    return opt.input_nc, opt.output_nc
