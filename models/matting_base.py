"""What trimap-based matting models share (AlphaGAN, Deep Image Matting): the batch they take, the
ImageNet-normalised network input, the trimap's known regions, and the test page's metrics.

:class:`MattingModel` is a :class:`BaseModel` with ``set_input`` for ``--dataset_mode matting``,
``score`` / ``test_tables`` / ``report_options`` (SAD / MSE / Grad / Conn on the saved 8-bit mattes)
and the ImageNet statistics on the device. A subclass sets ``self.alpha`` (the prediction with the
known regions copied) in ``forward`` and fills ``self.metrics`` in ``test`` by calling ``score``.

``--guidance`` (:meth:`MattingModel.add_guidance_option`, :meth:`MattingModel.guidance_channels`):
the known-colour evidence as extra network input channels, for every trimap-based model.

Test-time options of every matting model (:meth:`MattingModel.add_inference_options`, one copy):
``--tile`` / ``--tile_overlap`` (tiled inference in bounded memory) and ``--max_side`` (the longest
side scaled down, the matte scaled back); a model applies them by calling its network through
:meth:`MattingModel.run_network` (``util/tiling.py``).
"""
import os

import numpy as np
import torch

from models.base_model import BaseModel
from models.matting_guidance import GUIDANCE_CHOICES, GUIDANCE_NC, known_colours
from models.matting_networks import IMAGENET_MEAN, IMAGENET_STD
from options.base_options import as_trained
from util.errors import UserInputError
from util.metrics import evaluate_matte
from util.tiling import TILE_ALIGN, scaled, tiled
from util.util import tensor2im

METRIC_NAMES = ('SAD', 'MSE', 'Grad', 'Conn')
METRICS_TITLE = 'Matting metrics (unknown region of the trimap)'
# Plain background of the 'composite' visual (RGB in [0, 1]): a chroma-key green.
PLAIN_BACKGROUND = (0.0, 0.7, 0.25)


def unknown_region(trimap):
    """(B, 1, H, W) trimap in {0, 0.5, 1} -> (B, 1, H, W) bool, True where the trimap is 0.5."""
    return (trimap > 0.25) & (trimap < 0.75)


def fill_known(alpha, trimap):
    """Copy the trimap's known pixels into ``alpha``: 0 where the trimap is 0, 1 where it is 1.

    alpha: (B, 1, H, W) in [0, 1]; trimap: (B, 1, H, W) in {0, 0.5, 1}. Returns (B, 1, H, W) in
    [0, 1], equal to ``alpha`` in the unknown region (where gradients flow) and to the trimap elsewhere.
    """
    known = (trimap > 0.5).to(alpha.dtype)
    return torch.where(unknown_region(trimap), alpha, known)


def composite(alpha, fg, bg):
    """The matting equation ``alpha * F + (1 - alpha) * B``: (B, 1, H, W), (B, 3, H, W) x 2 -> (B, 3, H, W)."""
    return alpha * fg + (1.0 - alpha) * bg


def _to_255(t):
    """(H, W) tensor in [0, 1] -> float64 array on the 0-255 scale, rounded to 3 decimals (so an 8-bit
    matte read as k / 255 in float32 gives back exactly k)."""
    return np.round(t.detach().double().cpu().numpy() * 255.0, 3)


def trimap_to_255(t):
    """(H, W) trimap tensor in {0, 0.5, 1} -> uint8 array in {0, 128, 255}."""
    t = t.detach().cpu()
    out = torch.where(unknown_region(t), 128, torch.where(t > 0.5, 255, 0))
    return out.to(torch.uint8).numpy()


class MattingModel(BaseModel):
    """Base of the trimap-based matting models.

    Inputs per batch (``--dataset_mode matting``): 'image' (B, 3, H, W) RGB in [0, 1], 'trimap'
    (B, 1, H, W) in {0, 0.5, 1}; for training also 'fg', 'bg' (B, 3, H, W) in [0, 1] and 'alpha'
    (B, 1, H, W) in [0, 1] with ``image = alpha * fg + (1 - alpha) * bg``; at test time 'alpha' is
    optional (ground truth for the metrics).
    """

    visual_value_range = (0.0, 1.0)

    @staticmethod
    def add_inference_options(parser):
        """Add ``--tile``, ``--tile_overlap`` and ``--max_side`` (test time; a matting model's
        ``modify_commandline_options`` calls this when not ``is_train``)."""
        g = parser.add_argument_group('matting inference (any image size)')
        g.add_argument('--tile', type=int, default=0,
                       help='run the network on overlapping tiles of this many pixels (a multiple of 32, '
                            '>= 64; 0 = the whole image at once) blended with a cosine ramp: memory bounded by '
                            'the tile size (util/tiling.py). 1024 mattes a 4000x3000 photo in about 3 GB peak '
                            '(AlphaGAN, float32, measured)')
        g.add_argument('--tile_overlap', type=int, default=64,
                       help='pixels by which neighbouring tiles overlap at least (<= --tile / 2)')
        g.add_argument('--max_side', type=int, default=None,
                       help='scale the input down so that its longer side is this many pixels (>= 32; area '
                            'averaging, the trimap nearest), the matte back up (bilinear); default: full size. '
                            '--model dim --dim_fit resize: the limit of each side (default 1600, as the port)')
        return parser

    @staticmethod
    def add_guidance_option(parser, is_train):
        """Add ``--guidance`` (train and test time, test.py taking the trained value by default:
        :func:`options.base_options.as_trained`; a matting model's ``modify_commandline_options``
        calls this). The model appends :meth:`guidance_channels` to its network input."""
        parser.add_argument('--guidance', default='none', choices=GUIDANCE_CHOICES,
                            help="none: the network sees RGB + trimap (the papers). known_colours: also the "
                                 "colours of the nearest known foreground / background pixels and the alpha "
                                 "projected between them (models/matting_guidance.py; the CPU recipe of make "
                                 "demo-matting)")
        if not is_train:
            as_trained(parser, 'guidance')
        return parser

    @property
    def guidance_nc(self):
        """Extra input channels of ``--guidance`` (0 for none)."""
        return GUIDANCE_NC[self.opt.guidance]

    def guidance_channels(self):
        """``--guidance known_colours``: [F_n, B_n, alpha_n], the nearest known foreground and background
        colours (B, 3, H, W) x 2 normalised as the RGB input, and their projected alpha (B, 1, H, W) in
        [0, 1]; [] for ``none``."""
        if self.opt.guidance != 'known_colours':
            return []
        fg_n, bg_n, alpha_n = known_colours(self.image, self.trimap)
        return [self.normalised_rgb(fg_n), self.normalised_rgb(bg_n), alpha_n]

    def __init__(self, opt):
        super().__init__(opt)
        # --tile / --tile_overlap / --max_side are test options; model.test() during training
        # (benchmarks) runs the whole image (a benchmark sets these attributes itself).
        self.tile, self.tile_overlap, self.max_side = (0, 0, None) if self.isTrain else \
            (opt.tile, opt.tile_overlap, opt.max_side)
        if self.tile and (self.tile < 64 or self.tile % TILE_ALIGN):
            raise UserInputError(f'--tile {self.tile}: give a multiple of {TILE_ALIGN} of at least 64 (e.g. 1024), '
                                 'or 0 for the whole image at once')
        if self.tile and not 0 <= self.tile_overlap <= self.tile // 2:
            raise UserInputError(f'--tile_overlap {self.tile_overlap}: give 0 to {self.tile // 2} '
                                 f'(half of --tile {self.tile}); 64 is the default')
        if self.max_side is not None and self.max_side < 32:
            raise UserInputError(f'--max_side must be >= 32, got {self.max_side}')
        self.rgb_mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.rgb_std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self.plain_bg = torch.tensor(PLAIN_BACKGROUND, device=self.device).view(1, 3, 1, 1)
        self.metrics = {}        # image name -> {'SAD', 'MSE', 'Grad', 'Conn'} (test time, with ground truth)
        self.gt_alpha = None
        self.fg = self.bg = None

    # ------------------------------------------------------------------ input
    def set_input(self, input):
        """Unpack a matting batch (see the class docstring); 'fg' / 'bg' / 'alpha' are required to train."""
        self.image = input['image'].to(self.device)
        self.trimap = input['trimap'].to(self.device)
        self.gt_alpha = input['alpha'].to(self.device) if 'alpha' in input else None
        self.fg = input['fg'].to(self.device) if 'fg' in input else None
        self.bg = input['bg'].to(self.device) if 'bg' in input else None
        paths = input['path']
        self.image_paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
        names = input.get('name', None)
        if names is None:
            names = [os.path.splitext(os.path.basename(p))[0] for p in self.image_paths]
        self.image_names = list(names) if isinstance(names, (list, tuple)) else [names]
        if self.isTrain and (self.fg is None or self.bg is None or self.gt_alpha is None):
            raise UserInputError(f'--model {self.opt.model} trains on the training layout of --dataset_mode matting '
                                 '(<dataroot>/train/fg, alpha, bg): the batch has no fg / bg / alpha. '
                                 'Check --dataroot and --phase train.')

    def normalised_rgb(self, image=None):
        """(B, 3, H, W): ``image`` (default the batch's) in [0, 1] normalised with ImageNet statistics."""
        return ((self.image if image is None else image) - self.rgb_mean) / self.rgb_std

    def run_network(self, fn, x, nearest_channels=(3,)):
        """``fn(x)`` with the inference options: ``x`` (B, C, H, W) scaled down to ``--max_side``
        (``nearest_channels``: the trimap's, kept in {0, 0.5, 1}), then run tile by tile with
        ``--tile``; the output(s) of ``fn`` ((B, K, h, w) tensors, a tuple of them or None) at (H, W).
        Without these options (and always in training) this is ``fn(x)``."""
        if self.tile:
            run = lambda t: tiled(fn, t, self.tile, self.tile_overlap)  # noqa: E731
        else:
            run = fn
        return scaled(run, x, self.max_side, nearest_channels)

    # ------------------------------------------------------------------ test page
    def score(self, i):
        """SAD / MSE / Grad / Conn of sample ``i`` (:func:`util.metrics.evaluate_matte`).

        The prediction is quantised exactly as test.py saves ``<name>_alpha.png`` (``tensor2im``:
        8 bits, round half up), because the official evaluation reads the saved PNGs: scoring the
        saved files with ``scripts/eval_matting.py`` gives the same numbers.
        """
        pred = tensor2im(self.alpha[i], (0.0, 1.0))[..., 0]
        gt = _to_255(self.gt_alpha[i, 0])
        trimap = trimap_to_255(self.trimap[i, 0])
        return evaluate_matte(pred, gt, trimap, copy_known=True)

    def score_batch(self):
        """With ground truth, score every image of the batch into ``self.metrics``."""
        if self.gt_alpha is not None:
            for i, name in enumerate(self.image_names):
                self.metrics[name] = self.score(i)

    def test_tables(self):
        """[(title, rows)] for test.py's page: one row per scored image and a 'mean' row; [] when no
        image had ground truth."""
        if not self.metrics:
            return []
        rows = [{'image': name, **{k: m[k] for k in METRIC_NAMES}} for name, m in self.metrics.items()]
        mean = {'image': 'mean', **{k: float(np.mean([m[k] for m in self.metrics.values()])) for k in METRIC_NAMES}}
        return [(METRICS_TITLE, rows + [mean])]

    def report_options(self):
        """Extra header lines of the test page."""
        return {'alpha': 'known trimap regions copied; metrics on the saved 8-bit mattes',
                'units': 'SAD, Grad, Conn / 1000; MSE mean over unknown pixels', 'guidance': self.opt.guidance}
