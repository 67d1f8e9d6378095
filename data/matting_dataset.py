"""``--dataset_mode matting``: Deep Image Matting data, composited on the fly (train) or read as is (test).

Folder rule. ``base`` is ``<dataroot>/<phase>`` when that folder exists (it wins), else ``<dataroot>``.

- ``--phase train``: always the *training layout* (Adobe DIM)::

      base/fg/<name>.<ext>      foreground colours F (RGB, any size)
      base/alpha/<name>.<ext>   alpha matte of the same name stem (8/16-bit gray), same size as fg
      base/bg/<any>.<ext>       backgrounds B (any size; upscaled to cover when too small)

- any other phase: the *test layout* (Composition-1k) when ``base/merged`` exists::

      base/merged/<name>.<ext>  composited images I (RGB)
      base/trimaps/<name>.<ext> trimaps (0 / 128 / 255; stray values, e.g. JPEG, are quantised)
      base/alpha/<name>.<ext>   ground-truth alpha (optional: without it there is no 'alpha' key)

  otherwise the training layout, composited on the fly as in training (e.g. a validation split).

Training sample, in this order (resizing never happens after compositing; resizing a composite
mixes F and B differently from the ground truth alpha*F + (1-alpha)*B of the resized parts):

1. crop side ``c`` drawn from ``--crop_sizes`` (default 320, 480, 640);
2. a window of ``c x c`` centred on a random pixel of the unknown band (``0 < alpha < 1``; for a
   hard matte, the pixels next to its edge), shifted back inside the image, or covering the whole
   side with a random zero padding where the image is smaller than ``c``;
3. fg and alpha cropped; bg first upscaled to cover the (padded) fg canvas, as DIM does, placed at
   a random offset, then cropped with the same window;
4. fg, alpha, bg resized to ``opt.crop_size`` (bilinear; area averaging when shrinking by more
   than 2x, where bilinear would skip pixels);
5. one random horizontal flip for all (unless ``--no_flip``);
6. the trimap made from the resized alpha by random dilation (``--trimap_mode``), at final size;
7. ``image = alpha * fg + (1 - alpha) * bg`` in float32.

Randomness: one draw per sample. Each ``__getitem__`` draws every parameter above from the sample's
``numpy.random.Generator`` (:meth:`BaseDataset.sample_rng`: one number from torch's generator, the
index and ``opt.seed``); no global generator is reseeded. :meth:`MattingDataset.sample` takes an
explicit generator instead.

Files are found and read by :mod:`data.image_folder`, as for the translation modes (flat folders,
images paired by file stem across folders, errors naming the folder or file).
"""
import math
import os
import warnings

import cv2
import numpy as np

from data.base_dataset import BaseDataset, chw_tensor
from data.image_folder import (as_unit, check_same_size, file_stem, make_dataset, match_by_stem, read_gray,
                               read_rgb)
from data.trimap import (DEFAULT_TRIMAP_RANGES, TRIMAP_MODES, check_ranges, make_trimap,
                         quantize_trimap, trimap_to_unit)
from util.errors import UserInputError

TRAIN_LAYOUT = ('  <dataroot>[/<phase>]/fg/<name>.png     foreground colours\n'
                '  <dataroot>[/<phase>]/alpha/<name>.png  alpha mattes, same names as fg\n'
                '  <dataroot>[/<phase>]/bg/<any>.png      backgrounds')
TEST_LAYOUT = ('  <dataroot>[/<phase>]/merged/<name>.png   composited images\n'
               '  <dataroot>[/<phase>]/trimaps/<name>.png  trimaps (0/128/255)\n'
               '  <dataroot>[/<phase>]/alpha/<name>.png    ground truth (optional)')

ALPHA_SNAP = 1e-5  # resized alpha within this of 0 or 1 is set to 0 or 1 (float rounding)


# ----------------------------------------------------------------------------- file helpers
def read_color(path, role='image'):
    """``(H, W, 3) float32`` RGB in [0, 1] (gray is replicated, a 4th channel dropped; 16-bit kept)."""
    return as_unit(read_rgb(path, role))


def read_alpha(path, role='alpha matte'):
    """``(H, W) float32`` alpha in [0, 1] (8- or 16-bit; colour files are reduced to gray)."""
    return as_unit(read_gray(path, role))


def read_trimap_raw(path):
    """``(H, W)`` trimap on the 0..255 scale, not yet quantised."""
    img = read_gray(path, 'trimap')
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 257.0
    if img.dtype != np.uint8:
        return np.clip(img, 0.0, 1.0) * 255.0
    return img


def require_images(folder, role, layout):
    """Sorted images of the flat ``folder`` (:func:`data.image_folder.make_dataset`; for
    ``datasets/generate_trimaps.py``, which imports it from here)."""
    return make_dataset(folder, layout=layout, recursive=False, role=role)


# ----------------------------------------------------------------------------- geometry helpers
def unknown_band(alpha):
    """``(H, W) bool``: pixels with ``0 < alpha < 1``; for a hard matte, the pixels at its edge."""
    band = (alpha > 0) & (alpha < 1)
    if not band.any():
        kernel = np.ones((3, 3), np.uint8)
        near_fg = cv2.dilate((alpha > 0).astype(np.uint8), kernel) > 0
        inner_fg = cv2.erode((alpha >= 1).astype(np.uint8), kernel) > 0
        band = near_fg & ~inner_fg
    return band


def window_start(centre, crop, size, rng):
    """First row (or column) of a ``crop``-long window on an axis of ``size`` pixels.

    ``size >= crop``: centred on ``centre``, shifted back inside ``[0, size)``.
    ``size < crop``: ``-pad`` with ``pad`` random in ``[0, crop - size]`` (the image lies inside).
    """
    if size >= crop:
        return int(np.clip(centre - crop // 2, 0, size - crop))
    return -int(rng.integers(0, crop - size + 1))


def crop_pad(arr, y0, x0, crop):
    """``crop x crop`` window of ``arr`` (``(H, W)`` or ``(H, W, C)``) at ``(y0, x0)``, zeros outside."""
    h, w = arr.shape[:2]
    out = np.zeros((crop, crop) + arr.shape[2:], arr.dtype)
    ys, ye, xs, xe = max(y0, 0), min(y0 + crop, h), max(x0, 0), min(x0 + crop, w)
    out[ys - y0:ye - y0, xs - x0:xe - x0] = arr[ys:ye, xs:xe]
    return out


def bg_window(bg, h, w, y0, x0, crop, rng):
    """The background under the fg window: ``bg`` upscaled to cover the fg canvas
    ``(max(h, crop), max(w, crop))`` when smaller (DIM), placed at a random offset, then cropped."""
    ch, cw = max(h, crop), max(w, crop)
    bh, bw = bg.shape[:2]
    scale = max(ch / bh, cw / bw)
    if scale > 1:
        size = (max(cw, math.ceil(bw * scale)), max(ch, math.ceil(bh * scale)))
        bg = cv2.resize(bg, size, interpolation=cv2.INTER_LINEAR)
    oy = int(rng.integers(0, bg.shape[0] - ch + 1))
    ox = int(rng.integers(0, bg.shape[1] - cw + 1))
    yc, xc = oy + max(y0, 0), ox + max(x0, 0)
    return bg[yc:yc + crop, xc:xc + crop]


def resize_square(arr, size):
    """Resize a square ``(c, c[, C])`` float array to ``(size, size[, C])``: bilinear, or area
    averaging when shrinking by more than 2x (bilinear would then skip source pixels)."""
    c = arr.shape[0]
    if c == size:
        return arr
    interp = cv2.INTER_AREA if c > 2 * size else cv2.INTER_LINEAR
    return cv2.resize(arr, (size, size), interpolation=interp)


# ----------------------------------------------------------------------------- dataset
class MattingDataset(BaseDataset):
    """Matting samples; see the module docstring for layouts and the on-the-fly protocol.

    Training sample (float32 tensors, ``S = opt.crop_size``): ``'image'`` ``(3, S, S)`` composite
    in [0, 1], ``'fg'`` / ``'bg'`` ``(3, S, S)`` in [0, 1], ``'alpha'`` ``(1, S, S)`` in [0, 1],
    ``'trimap'`` ``(1, S, S)`` in {0, 0.5, 1}, ``'path'`` (fg file), ``'bg_path'``.

    Test sample (full resolution ``H x W``): ``'image'`` ``(3, H, W)`` in [0, 1], ``'trimap'``
    ``(1, H, W)`` in {0, 0.5, 1}, ``'alpha'`` ``(1, H, W)`` only when the alpha folder exists,
    ``'has_alpha'`` (bool), ``'path'`` (merged file), ``'name'`` (its stem).
    """

    builtin_data = 'matting'
    value_range = (0.0, 1.0)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add the matting options (``--crop_size``, ``--no_flip``, ``--phase`` come from elsewhere)."""
        parser.add_argument('--bg_per_fg', type=int, default=1,
                            help='backgrounds per foreground in one epoch (len = n_fg * bg_per_fg). Default 1: '
                                 'an epoch is one pass over the foregrounds; DIM uses 100')
        parser.add_argument('--bg_choice', type=str, default='random', choices=('random', 'index'),
                            help='background of sample i: random each time, or bg[i %% n_bg] (DIM pairing)')
        parser.add_argument('--trimap_mode', type=str, default='dilate', choices=TRIMAP_MODES,
                            help='dilate: unknown = dilate(alpha>0) - (alpha==1); dilate_erode: fg = '
                                 'erode(alpha==1), unknown = dilate(alpha>0) - fg')
        for name, what in (('kernel', 'ellipse side'), ('iter', 'iterations')):
            for end in ('min', 'max'):
                parser.add_argument(f'--trimap_{name}_{end}', type=int, default=None,
                                    help=f'{end} trimap {what} (inclusive); default per mode: '
                                         f'{DEFAULT_TRIMAP_RANGES}')
        parser.add_argument('--crop_sizes', type=str, default='320,480,640',
                            help='comma-separated crop sides drawn at random, each resized to --crop_size')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.base = self.phase_root(f'for training\n{TRAIN_LAYOUT}\nor for testing\n{TEST_LAYOUT}')
        self._quantized = {}  # index -> number of pixels snapped to {0, 128, 255} (test layout)
        self._warned = False
        if opt.phase != 'train' and os.path.isdir(os.path.join(self.base, 'merged')):
            self.layout = 'test'
            self._init_test()
        else:
            self.layout = 'train'
            self._init_train()

    # ------------------------------------------------------------------ training layout
    def _init_train(self):
        opt = self.opt
        fg_dir, alpha_dir, bg_dir = (os.path.join(self.base, d) for d in ('fg', 'alpha', 'bg'))
        found = match_by_stem({'foreground': fg_dir, 'alpha matte': alpha_dir}, TRAIN_LAYOUT,
                              opt.max_dataset_size, hints={'alpha matte': 'add it or remove the foreground'})
        self.fg_paths, self.alpha_paths = found['foreground'], found['alpha matte']
        self.bg_paths = make_dataset(bg_dir, layout=TRAIN_LAYOUT, recursive=False, role='background')
        self.bg_per_fg = opt.bg_per_fg
        if self.bg_per_fg < 1:
            raise UserInputError(f'--bg_per_fg must be >= 1, got {self.bg_per_fg}')
        self.bg_choice = opt.bg_choice
        self.crop_size = opt.crop_size
        raw = opt.crop_sizes
        try:
            self.crop_sizes = [int(v) for v in raw.split(',') if v.strip()]
        except ValueError:
            self.crop_sizes = []
        if not self.crop_sizes or min(self.crop_sizes) < 1 or self.crop_size < 1:
            raise UserInputError(f'--crop_sizes must be positive integers separated by commas, e.g. '
                                 f'"320,480,640" (got {raw!r}), and --crop_size positive '
                                 f'(got {self.crop_size})')
        self.no_flip = opt.no_flip
        self.trimap_mode = opt.trimap_mode
        if self.trimap_mode not in TRIMAP_MODES:  # argparse checks the command line; this, other callers
            raise UserInputError(f'--trimap_mode must be one of {TRIMAP_MODES}, got {self.trimap_mode!r}')
        d = DEFAULT_TRIMAP_RANGES[self.trimap_mode]
        vals = [opt.trimap_kernel_min, opt.trimap_kernel_max, opt.trimap_iter_min, opt.trimap_iter_max]
        vals = [d[i] if v is None else v for i, v in enumerate(vals)]
        try:
            self.kernel_range, self.iter_range = check_ranges(vals[:2], vals[2:])
        except ValueError as e:
            raise UserInputError(f'--trimap_kernel_min/max, --trimap_iter_min/max: {e}') from None

    def sample(self, index, rng):
        """Training-layout sample ``index`` drawn with the numpy Generator ``rng`` (see class doc)."""
        fg_path = self.fg_paths[index // self.bg_per_fg]
        alpha_path = self.alpha_paths[index // self.bg_per_fg]
        fg, alpha = read_color(fg_path, 'foreground'), read_alpha(alpha_path)
        check_same_size(fg.shape, alpha.shape, fg_path, alpha_path)
        if self.bg_choice == 'index':
            bg_path = self.bg_paths[index % len(self.bg_paths)]
        else:
            bg_path = self.bg_paths[int(rng.integers(len(self.bg_paths)))]
        bg = read_color(bg_path, 'background')
        h, w = alpha.shape

        crop = int(rng.choice(self.crop_sizes))
        ys, xs = np.nonzero(unknown_band(alpha))
        if len(ys):
            k = int(rng.integers(len(ys)))
            cy, cx = int(ys[k]), int(xs[k])
        else:  # all background or all foreground: no unknown pixel anywhere
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, x0 = window_start(cy, crop, h, rng), window_start(cx, crop, w, rng)
        fg_c, alpha_c = crop_pad(fg, y0, x0, crop), crop_pad(alpha, y0, x0, crop)
        bg_c = bg_window(bg, h, w, y0, x0, crop, rng)

        fg_c = np.clip(resize_square(fg_c, self.crop_size), 0.0, 1.0)
        bg_c = np.clip(resize_square(bg_c, self.crop_size), 0.0, 1.0)
        alpha_c = np.clip(resize_square(alpha_c, self.crop_size), 0.0, 1.0)
        alpha_c[alpha_c < ALPHA_SNAP] = 0.0
        alpha_c[alpha_c > 1.0 - ALPHA_SNAP] = 1.0

        if not self.no_flip and rng.random() < 0.5:
            fg_c, bg_c, alpha_c = fg_c[:, ::-1], bg_c[:, ::-1], alpha_c[:, ::-1]
        fg_c, bg_c, alpha_c = (np.ascontiguousarray(a, dtype=np.float32) for a in (fg_c, bg_c, alpha_c))

        trimap = make_trimap(alpha_c, rng, self.trimap_mode, self.kernel_range, self.iter_range)
        a3 = alpha_c[..., None]
        image = a3 * fg_c + (1.0 - a3) * bg_c
        return {'image': chw_tensor(image), 'fg': chw_tensor(fg_c), 'bg': chw_tensor(bg_c),
                'alpha': chw_tensor(alpha_c), 'trimap': chw_tensor(trimap_to_unit(trimap)), 'path': fg_path,
                'bg_path': bg_path}

    # ------------------------------------------------------------------ test layout
    def _init_test(self):
        merged_dir, tri_dir, alpha_dir = (os.path.join(self.base, d) for d in ('merged', 'trimaps', 'alpha'))
        folders = {'image': merged_dir, 'trimap': tri_dir}
        hints = {'trimap': 'make one (datasets/generate_trimaps.py) or remove the image'}
        self.has_alpha = os.path.isdir(alpha_dir)
        if self.has_alpha:
            folders['alpha matte'] = alpha_dir
            hints['alpha matte'] = f'add it, or remove the folder {alpha_dir} to run without ground truth'
        found = match_by_stem(folders, TEST_LAYOUT, self.opt.max_dataset_size, hints)
        self.merged_paths, self.trimap_paths = found['image'], found['trimap']
        self.alpha_paths = found.get('alpha matte')

    @property
    def n_trimaps_quantized(self):
        """Trimaps seen so far (in this process) whose values were not all in {0, 128, 255}."""
        return len(self._quantized)

    @property
    def n_trimap_pixels_quantized(self):
        """Pixels snapped to {0, 128, 255} over the trimaps counted by ``n_trimaps_quantized``."""
        return sum(self._quantized.values())

    def _load_trimap(self, index):
        path = self.trimap_paths[index]
        trimap, n = quantize_trimap(read_trimap_raw(path))
        if n:
            self._quantized[index] = n
            if not self._warned:
                self._warned = True
                warnings.warn(f'matting dataset: trimap {path} has {n} pixels outside {{0, 128, 255}} '
                              f'(a JPEG?); they and those of any other such trimap are snapped to the '
                              f'nearest value without further warnings (count: n_trimaps_quantized). '
                              f'Save trimaps as PNG to avoid this.', UserWarning, stacklevel=3)
        return trimap

    def scan_trimaps(self):
        """Read every trimap once (one warning in all); return ``n_trimaps_quantized``."""
        for i in range(len(self.trimap_paths)):
            self._load_trimap(i)
        return self.n_trimaps_quantized

    def _test_item(self, index):
        path = self.merged_paths[index]
        image = read_color(path)
        trimap = self._load_trimap(index)
        check_same_size(image.shape, trimap.shape, path, self.trimap_paths[index])
        out = {'image': chw_tensor(image), 'trimap': chw_tensor(trimap_to_unit(trimap)), 'path': path,
               'name': file_stem(path), 'has_alpha': self.has_alpha}
        if self.has_alpha:
            alpha = read_alpha(self.alpha_paths[index])
            check_same_size(image.shape, alpha.shape, path, self.alpha_paths[index])
            out['alpha'] = chw_tensor(alpha)
        return out

    # ------------------------------------------------------------------ Dataset API
    def __len__(self):
        if self.layout == 'test':
            return len(self.merged_paths)
        return len(self.fg_paths) * self.bg_per_fg

    def __getitem__(self, index):
        if self.layout == 'test':
            return self._test_item(index)
        return self.sample(index, self.sample_rng(index))
