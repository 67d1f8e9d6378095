"""``--dataset_mode background_matting``: image + background plate matting (BackgroundMattingV2).

Folder rule. ``base`` is ``<dataroot>/<phase>`` when that folder exists (it wins), else ``<dataroot>``.
Each role has its BackgroundMattingV2 name and, in brackets, the Deep Image Matting name that is
accepted instead (so the built-in synthetic set and Adobe-style folders read as they are).

- ``--phase train``: the *training layout* (the VideoMatte240K / PhotoMatte85 layout)::

      base/fgr/<name>          foreground colours (RGB)                      [fg/]
      base/pha/<name>          alpha mattes of the same name stem, same size [alpha/]
      base/backgrounds/<any>   background photos, any size                   [bg/]  (or --backgrounds DIR)

- any other phase: the *test layout* when ``base/src`` (or ``base/merged``) exists::

      base/src/<name>          images of a subject in front of a background  [merged/]
      base/bgr/<name>          the background plate of each: same scene, no subject, same size
      base/pha/<name>          ground-truth alpha (optional: metrics)        [alpha/]

  otherwise the training layout, composited on the fly as in training (e.g. a validation split).

Training sample (``S = --crop_size``), the official training scripts' augmentations, every random
parameter drawn once per sample (:meth:`BackgroundMattingDataset.draw_params`) and applied to every
array it concerns (:meth:`BackgroundMattingDataset.compose`):

1. fgr and pha: one affine warp to an S x S canvas (rotation +-5 deg, x-shear +-5 deg, translation
   +-10 % of S, scale 0.4-1 of the size that covers the canvas; bilinear, zeros outside), one
   horizontal flip (p 0.5, unless ``--no_flip``), one box blur (p 0.1, radius 0-5) and one sharpen
   (p 0.1); colour jitter on fgr only (brightness, contrast, saturation 0.15, hue 0.05);
2. the background: its own affine to S x S (scale 1-2 of the covering size), flip, blur, sharpen,
   colour jitter (edges reflected instead of the official zeros, so no black corners);
3. shadow (p 0.3): pha times 0.3 U(0, 1), warped (rotation +-5, translation +-20 %, scale 0.5-1.5,
   shear +-5), box-blurred (side 20-39), subtracted from the background;
4. ``src = pha fgr + (1 - pha) background``;
5. noise (p 0.4): Gaussian, sigma 0.03 U(0, 1), on src, and on the plate with its own sigma;
6. the plate given to the network (``bgr``) is the background of step 2 (without the shadow), colour
   jittered (p 0.8; 0.18, 0.18, 0.18, 0.1) and misaligned (p 0.3; rotation +-1 deg, translation
   +-1 %), as a handheld plate would be.

The model crops each batch to one random size (the official per-batch ``random_crop``).

Files are found and read by :mod:`data.image_folder` (flat folders, pairing by file stem, errors
naming the folder or both files).
"""
import math
import os

import cv2
import numpy as np

from data.base_dataset import BaseDataset, chw_tensor
from data.image_folder import as_unit, check_same_size, file_stem, make_dataset, match_by_stem, read_gray, read_rgb
from util.errors import UserInputError

TRAIN_LAYOUT = ('  <dataroot>[/<phase>]/fgr/<name>.png         foreground colours   (or fg/)\n'
                '  <dataroot>[/<phase>]/pha/<name>.png         alpha, same names    (or alpha/)\n'
                '  <dataroot>[/<phase>]/backgrounds/<any>.png  background photos    (or bg/, or --backgrounds)')
TEST_LAYOUT = ('  <dataroot>[/<phase>]/src/<name>.png  images                         (or merged/)\n'
               '  <dataroot>[/<phase>]/bgr/<name>.png  background plates, same names and sizes\n'
               '  <dataroot>[/<phase>]/pha/<name>.png  ground-truth alpha (optional)  (or alpha/)')
ROLE_FOLDERS = {'fgr': ('fgr', 'fg'), 'pha': ('pha', 'alpha'), 'backgrounds': ('backgrounds', 'bg'),
                'src': ('src', 'merged'), 'bgr': ('bgr',)}
SHARPEN = np.array([[-2, -2, -2], [-2, 32, -2], [-2, -2, -2]], np.float32) / 16.0   # PIL's SHARPEN


def role_dir(base, role):
    """The first existing folder of ``role`` under ``base`` (its names in ``ROLE_FOLDERS``), else the
    BackgroundMattingV2 name (so that errors name it)."""
    for name in ROLE_FOLDERS[role]:
        if os.path.isdir(os.path.join(base, name)):
            return os.path.join(base, name)
    return os.path.join(base, ROLE_FOLDERS[role][0])


# ----------------------------------------------------------------------------- random parameters
def draw_affine(rng, degrees, translate, scale, shear):
    """Affine parameters: angle and x-shear in degrees, translation (fractions of the canvas), scale."""
    return {'angle': float(rng.uniform(-degrees, degrees)), 'shear': float(rng.uniform(-shear, shear)),
            'translate': tuple(float(v) for v in rng.uniform(-translate, translate, 2)),
            'scale': float(rng.uniform(*scale))}


def draw_jitter(rng, brightness, contrast, saturation, hue):
    """Colour-jitter parameters (torchvision's ColorJitter ranges), with a random order of the four."""
    return {'factors': (float(rng.uniform(1 - brightness, 1 + brightness)),
                        float(rng.uniform(1 - contrast, 1 + contrast)),
                        float(rng.uniform(1 - saturation, 1 + saturation)), float(rng.uniform(-hue, hue))),
            'order': [int(v) for v in rng.permutation(4)]}


def draw_filters(rng):
    """One box blur (p 0.1, radius 0-5) and one sharpen (p 0.1): (radius or None, sharpen)."""
    radius = int(rng.integers(0, 6)) if rng.random() < 0.1 else None
    return radius, bool(rng.random() < 0.1)


# ----------------------------------------------------------------------------- applying them
def affine_matrix(params, src_hw, out_side, cover=True):
    """2x3 matrix mapping pixel coordinates of an (h, w) image onto the ``out_side`` canvas: scale
    (times the size that covers the canvas when ``cover``), x-shear, rotation about the centres,
    then the translation."""
    h, w = src_hw
    s = params['scale'] * (max(out_side / w, out_side / h) if cover else 1.0)
    a, sh = math.radians(params['angle']), math.radians(params['shear'])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    linear = rot @ np.array([[1.0, math.tan(sh)], [0.0, 1.0]]) * s
    centre_out = (out_side - 1) / 2.0 + np.array(params['translate']) * out_side
    offset = centre_out - linear @ np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    return np.hstack([linear, offset[:, None]]).astype(np.float64)


def warp(img, matrix, side, border=cv2.BORDER_CONSTANT):
    """``img`` (H, W[, C]) float32 warped by ``matrix`` onto a side x side canvas (bilinear)."""
    out = cv2.warpAffine(img, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    return out.reshape((side, side) + img.shape[2:])


def filters(img, radius, sharpen):
    """Box blur of ``radius`` (side 2 radius + 1; None: none), then PIL's sharpen if ``sharpen``."""
    if radius:
        img = cv2.blur(img, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REPLICATE)
    if sharpen:
        img = cv2.filter2D(img, -1, SHARPEN, borderType=cv2.BORDER_REPLICATE)
    return np.clip(img, 0.0, 1.0).reshape(img.shape)


def gray(img):
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def color_jitter(img, params):
    """(H, W, 3) RGB in [0, 1] with brightness, contrast, saturation and hue changed in ``params``' order."""
    b, c, s, hue = params['factors']
    for op in params['order']:
        if op == 0:
            img = img * b
        elif op == 1:
            m = float(gray(img).mean())
            img = (img - m) * c + m
        elif op == 2:
            g = gray(img)[..., None]
            img = (img - g) * s + g
        else:
            hsv = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + hue * 360.0) % 360.0
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return img


# ----------------------------------------------------------------------------- dataset
class BackgroundMattingDataset(BaseDataset):
    """Image + background-plate samples; see the module docstring for layouts and augmentations.

    Training sample (float32 tensors in [0, 1], ``S = opt.crop_size``): ``'src'`` (3, S, S) the
    composite, ``'bgr'`` (3, S, S) its (jittered, misaligned) background plate, ``'pha'`` (1, S, S),
    ``'fgr'`` (3, S, S) ground truth, ``'path'`` (fgr file), ``'bgr_path'``.

    Test sample (full resolution H x W, nothing resized): ``'src'``, ``'bgr'`` (3, H, W), ``'pha'``
    (1, H, W) only when the alpha folder exists, ``'path'`` (src file), ``'name'`` (its stem).
    """

    builtin_data = 'matting'   # the synthetic set: train/{fg,alpha,bg}, test/{merged,bgr,alpha}
    value_range = (0.0, 1.0)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        parser.add_argument('--backgrounds', default=None,
                            help='folder of training backgrounds (default <dataroot>[/<phase>]/backgrounds or bg)')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.base = self.phase_root(f'for training\n{TRAIN_LAYOUT}\nor for testing\n{TEST_LAYOUT}')
        self.side = opt.crop_size
        if opt.phase != 'train' and os.path.isdir(role_dir(self.base, 'src')):
            self.layout = 'test'
            folders = {'image': role_dir(self.base, 'src'), 'background plate': role_dir(self.base, 'bgr')}
            hints = {'background plate': 'photograph the scene without the subject, or remove the image'}
            pha_dir = role_dir(self.base, 'pha')
            self.has_pha = os.path.isdir(pha_dir)
            if self.has_pha:
                folders['alpha matte'] = pha_dir
                hints['alpha matte'] = f'add it, or remove the folder {pha_dir} to run without ground truth'
            found = match_by_stem(folders, TEST_LAYOUT, opt.max_dataset_size, hints)
            self.src_paths, self.bgr_paths = found['image'], found['background plate']
            self.pha_paths = found.get('alpha matte')
        else:
            self.layout = 'train'
            found = match_by_stem({'foreground': role_dir(self.base, 'fgr'), 'alpha matte': role_dir(self.base, 'pha')},
                                  TRAIN_LAYOUT, opt.max_dataset_size,
                                  hints={'alpha matte': 'add it or remove the foreground'})
            self.fgr_paths, self.pha_paths = found['foreground'], found['alpha matte']
            bg_dir = opt.backgrounds or role_dir(self.base, 'backgrounds')
            self.bg_paths = make_dataset(bg_dir, layout=TRAIN_LAYOUT, recursive=False, role='background')
            if self.side < 4:
                raise UserInputError(f'--crop_size must be >= 4 for --dataset_mode background_matting, got {self.side}')

    # ------------------------------------------------------------------ training
    def draw_params(self, rng, n_backgrounds=None):
        """Every random parameter of one training sample (a dict; None = that augmentation is off)."""
        p = {'background': int(rng.integers(n_backgrounds if n_backgrounds is not None else len(self.bg_paths)))}
        flip = not self.opt.no_flip
        p['fg_affine'] = draw_affine(rng, 5, 0.1, (0.4, 1.0), 5)
        p['fg_flip'] = flip and bool(rng.random() < 0.5)
        p['fg_filters'] = draw_filters(rng)
        p['fg_jitter'] = draw_jitter(rng, 0.15, 0.15, 0.15, 0.05)
        p['bg_affine'] = draw_affine(rng, 5, 0.1, (1.0, 2.0), 5)
        p['bg_flip'] = flip and bool(rng.random() < 0.5)
        p['bg_filters'] = draw_filters(rng)
        p['bg_jitter'] = draw_jitter(rng, 0.15, 0.15, 0.15, 0.05)
        p['shadow'] = None
        if rng.random() < 0.3:
            p['shadow'] = {'strength': 0.3 * float(rng.random()), 'affine': draw_affine(rng, 5, 0.2, (0.5, 1.5), 5),
                           'blur': int(rng.integers(20, 40))}
        p['noise'] = None
        if rng.random() < 0.4:
            p['noise'] = {'src': 0.03 * float(rng.random()), 'bgr': 0.03 * float(rng.random()),
                          'seed': int(rng.integers(2 ** 31))}
        p['plate_jitter'] = draw_jitter(rng, 0.18, 0.18, 0.18, 0.1) if rng.random() < 0.8 else None
        p['plate_affine'] = draw_affine(rng, 1, 0.01, (1.0, 1.0), 0) if rng.random() < 0.3 else None
        return p

    def compose(self, fgr, pha, bg, p):
        """Apply the parameters ``p`` (:meth:`draw_params`) to fgr (h, w, 3), pha (h, w) and a
        background (any size), all float32 in [0, 1]. Returns ``{'src', 'bgr', 'pha', 'fgr'}`` arrays
        (S, S[, 3]) in [0, 1] and ``'background'``: the background behind the subject (before the
        shadow)."""
        S = self.side
        m = affine_matrix(p['fg_affine'], pha.shape, S)
        fgr, pha = warp(fgr, m, S), warp(pha, m, S)
        if p['fg_flip']:
            fgr, pha = fgr[:, ::-1], pha[:, ::-1]
        fgr, pha = filters(np.ascontiguousarray(fgr), *p['fg_filters']), filters(np.ascontiguousarray(pha), *p['fg_filters'])
        if p['fg_jitter'] is not None:
            fgr = color_jitter(fgr, p['fg_jitter'])

        bg = warp(bg, affine_matrix(p['bg_affine'], bg.shape[:2], S), S, cv2.BORDER_REFLECT_101)
        if p['bg_flip']:
            bg = bg[:, ::-1]
        bg = filters(np.ascontiguousarray(bg), *p['bg_filters'])
        if p['bg_jitter'] is not None:
            bg = color_jitter(bg, p['bg_jitter'])

        behind = bg
        if p['shadow'] is not None:
            sh = p['shadow']
            shadow = warp(pha * sh['strength'], affine_matrix(sh['affine'], (S, S), S, cover=False), S)
            shadow = cv2.blur(shadow, (sh['blur'], sh['blur']), borderType=cv2.BORDER_REFLECT)
            behind = np.clip(bg - shadow[..., None], 0.0, 1.0)
        a = pha[..., None]
        src = a * fgr + (1.0 - a) * behind
        plate = bg
        if p['noise'] is not None:
            noise = np.random.default_rng(p['noise']['seed'])
            src = np.clip(src + noise.standard_normal(src.shape, np.float32) * p['noise']['src'], 0.0, 1.0)
            plate = np.clip(plate + noise.standard_normal(plate.shape, np.float32) * p['noise']['bgr'], 0.0, 1.0)
        if p['plate_jitter'] is not None:
            plate = color_jitter(plate, p['plate_jitter'])
        if p['plate_affine'] is not None:
            plate = warp(plate, affine_matrix(p['plate_affine'], (S, S), S, cover=False), S, cv2.BORDER_REFLECT_101)
        out = {'src': src, 'bgr': plate, 'pha': pha, 'fgr': fgr, 'background': bg}
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}

    def sample(self, index, rng):
        """Training-layout sample ``index`` drawn with the numpy Generator ``rng`` (class docstring)."""
        fgr_path, pha_path = self.fgr_paths[index], self.pha_paths[index]
        fgr, pha = as_unit(read_rgb(fgr_path, 'foreground')), as_unit(read_gray(pha_path, 'alpha matte'))
        check_same_size(fgr.shape, pha.shape, fgr_path, pha_path)
        p = self.draw_params(rng)
        bg_path = self.bg_paths[p['background']]
        arrays = self.compose(fgr, pha, as_unit(read_rgb(bg_path, 'background')), p)
        out = {k: chw_tensor(arrays[k]) for k in ('src', 'bgr', 'pha', 'fgr')}
        out.update(path=fgr_path, bgr_path=bg_path)
        return out

    # ------------------------------------------------------------------ test
    def test_item(self, index):
        src_path, bgr_path = self.src_paths[index], self.bgr_paths[index]
        src, bgr = as_unit(read_rgb(src_path)), as_unit(read_rgb(bgr_path, 'background plate'))
        check_same_size(src.shape, bgr.shape, src_path, bgr_path)
        out = {'src': chw_tensor(src), 'bgr': chw_tensor(bgr), 'path': src_path, 'name': file_stem(src_path)}
        if self.pha_paths is not None:
            pha = as_unit(read_gray(self.pha_paths[index], 'alpha matte'))
            check_same_size(src.shape, pha.shape, src_path, self.pha_paths[index])
            out['pha'] = chw_tensor(pha)
        return out

    # ------------------------------------------------------------------ Dataset API
    def __len__(self):
        return len(self.src_paths) if self.layout == 'test' else len(self.fgr_paths)

    def __getitem__(self, index):
        if self.layout == 'test':
            return self.test_item(index)
        return self.sample(index, self.sample_rng(index))
