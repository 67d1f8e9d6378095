"""BackgroundMattingV2 (Lin et al., "Real-Time High-Resolution Background Matting", CVPR 2021):
alpha and foreground from an image and a photo of the same scene without the subject (the
background plate), at up to 4K, with a base network at reduced resolution and a refiner that
re-predicts only the patches where the base network's error map is largest.

Training, in two stages as the official scripts::

    python train.py --model bgmv2 --bgmv2_stage base --dataroot <fgr/pha/backgrounds> --name bgm_base
    python train.py --model bgmv2 --bgmv2_stage refine --crop_size 2048 --dataroot ... --name bgm \\
        --base_checkpoint checkpoints/bgm_base/latest_net_G.pth

Inference (an official ``torch.save(model.state_dict())`` file loads as it is)::

    python test.py --model bgmv2 --dataroot <src/ bgr/ [pha/]> --backbone mobilenetv2 \\
        --weights pytorch_mobilenetv2.pth --refine_mode sampling --refine_sample_pixels 80000
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from models.alphagan_model import METRIC_NAMES, composite
from models.base_model import BaseModel, load_weights_file, unwrap
from models.bgmv2_networks import BACKBONES, REFINE_MODES, MattingBase, MattingRefine
from models.losses import background_matting_losses, error_map_loss
from util.errors import UserInputError
from util.metrics import UNKNOWN, evaluate_matte
from util.util import tensor2im

STAGES = ('base', 'refine')
# Official learning rates (train_base.py, train_refine.py) per part of the network.
STAGE_LRS = {'base': {'backbone': 1e-4, 'aspp': 5e-4, 'decoder': 5e-4},
             'refine': {'backbone': 5e-5, 'aspp': 5e-5, 'decoder': 1e-4, 'refiner': 3e-4}}
METRICS_TITLE = 'Matting metrics (whole image: no trimap, every pixel scored)'
COARSE_TITLE = 'Base network only (coarse alpha upsampled bilinearly, no refinement), whole image'
PLAIN_BACKGROUND = (0.0, 0.7, 0.25)   # the 'composite' visual: foreground over chroma-key green
PATCH_TINT = (1.0, 0.15, 0.15)        # the 'refined' visual: refined 4x4 patches tinted red


def _to_255(t):
    """(H, W) tensor in [0, 1] -> float64 array on the 0-255 scale (3 decimals, as the saved PNGs read)."""
    return np.round(t.detach().double().cpu().numpy() * 255.0, 3)


def whole_image_scores(pred, gt):
    """SAD / MSE / Grad / Conn (:func:`util.metrics.evaluate_matte`) over every pixel: the trimap
    is all unknown, nothing is copied. pred: (1, H, W) tensor in [0, 1] (quantised to 8 bits as
    test.py saves it); gt: (1, H, W) in [0, 1]."""
    p = tensor2im(pred, (0.0, 1.0))[..., 0]
    trimap = np.full(p.shape, UNKNOWN, np.uint8)
    return evaluate_matte(p, _to_255(gt[0]), trimap, copy_known=False)


def batch_crop(tensors, low, high, multiple):
    """The official training scripts' ``random_crop`` of a batch: one size (h, w) drawn uniformly in
    [low, high) (rounded down to ``multiple``), every tensor resized bilinearly (align_corners=False)
    to cover it keeping the aspect ratio, then centre-cropped. tensors: (B, C, H, W) of one size."""
    H, W = tensors[0].shape[2:]
    h = int(torch.randint(low, high, (1,))) // multiple * multiple
    w = int(torch.randint(low, high, (1,))) // multiple * multiple
    scale = max(h / H, w / W)
    size = (max(h, int(H * scale)), max(w, int(W * scale)))
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    out = []
    for t in tensors:
        if size != (H, W):
            t = F.interpolate(t, size, mode='bilinear', align_corners=False)
        out.append(t[:, :, top:top + h, left:left + w])
    return out


class BGMV2Model(BaseModel):
    """BackgroundMattingV2.

    Inputs per batch (``--dataset_mode background_matting``): 'src' (B, 3, H, W) the image and 'bgr'
    (B, 3, H, W) its background plate, RGB in [0, 1]; for training also 'pha' (B, 1, H, W) and
    'fgr' (B, 3, H, W) ground truth; at test time 'pha' is optional (metrics).

    Network G: ``--bgmv2_stage base``: :class:`MattingBase` (``--backbone``) on the whole crop;
    ``refine``: :class:`MattingRefine` (base at ``--backbone_scale``, refiner ``--refine_mode`` etc.).
    The state dict of G is the official one: ``<epoch>_net_G.pth`` and the official files are
    interchangeable (test.py's ``--weights`` loads one; ``--base_checkpoint`` starts training, e.g.
    the refine stage from a stage-1 file).

    Training: each batch is cropped to one random size in [crop_size / 2, crop_size) (the official
    ``random_crop``: resize to cover, centre crop; multiples of 4 in the refine stage). Losses
    (weights 1, as the official scripts): ``pha`` L1 alpha, ``sobel`` L1 of the Sobel magnitudes,
    ``fgr`` L1 foreground where the true alpha > 0, ``err`` MSE(error map, |alpha - true alpha|)
    with alpha detached; the refine stage computes the first three at full resolution and again on
    the coarse outputs (``pha_sm``, ``sobel_sm``, ``fgr_sm``, ground truth resized bilinearly) and
    ``err`` at full resolution on the bilinearly upsampled coarse error and alpha. Adam
    (``--beta1`` 0.9) with the official rate of each part: base stage backbone 1e-4, ASPP 5e-4,
    decoder 5e-4; refine stage 5e-5 / 5e-5 / 1e-4 / refiner 3e-4 (``--lr`` is not used).

    Test time (always in eval mode, as the official inference scripts): visuals 'src', 'alpha'
    (saved as ``<stem>_alpha.png``), 'fgr' (``<stem>_fgr.png``), both at the input's size, 8 bits;
    'composite' (fgr over green), 'error' (the coarse error map, nearest-upsampled), 'refined' (src
    with the refined patches tinted; refine stage), 'gt_alpha' with ground truth. Sizes that are
    not multiples of 4 are padded (replicate) for the refiner and cropped back.
    """

    visual_value_range = (0.0, 1.0)

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(dataset_mode='background_matting', crop_size=512, load_size=512, batch_size=4)
        parser.add_argument('--backbone', default='mobilenetv2', choices=BACKBONES,
                            help='encoder of the base network (torchvision; first conv takes 6 channels)')
        parser.add_argument('--bgmv2_stage', default='base' if is_train else 'refine', choices=STAGES,
                            help='base: MattingBase alone on the whole crop (training stage 1); refine: '
                                 'MattingRefine, the base at --backbone_scale plus the refiner')
        parser.add_argument('--backbone_scale', type=float, default=0.25,
                            help='refine stage: the base network sees the input resized by this (<= 1/2); '
                                 'recommended 1/4 for HD, 1/8 for 4K')
        parser.add_argument('--refine_mode', default='sampling', choices=REFINE_MODES,
                            help='full: refine every pixel; sampling: the --refine_sample_pixels of largest '
                                 'predicted error; thresholding: where the error > --refine_threshold')
        parser.add_argument('--refine_sample_pixels', type=int, default=80_000,
                            help='sampling mode: pixels refined (in 4x4 patches); recommended 80,000 for HD, '
                                 '320,000 for 4K')
        parser.add_argument('--refine_threshold', type=float, default=0.1,
                            help='thresholding mode: refine where the coarse error exceeds this')
        parser.add_argument('--refine_kernel_size', type=int, default=3, choices=(1, 3),
                            help="refiner convolutions' kernel size")
        if is_train:
            parser.set_defaults(beta1=0.9, beta2=0.999)
            parser.add_argument('--base_checkpoint', default=None,
                                help='initialise the base network (backbone, ASPP, decoder) from this state dict '
                                     '(ours or official, MattingBase or MattingRefine; refiner.* keys are ignored): '
                                     'the refine stage starts from the stage-1 file; the refiner starts fresh')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        if opt.bgmv2_stage not in STAGES:
            raise UserInputError(f'--bgmv2_stage must be one of {STAGES}, got {opt.bgmv2_stage!r}')
        if not 0 < opt.backbone_scale <= 0.5:
            raise UserInputError(f'--backbone_scale must be in (0, 1/2] (the refiner works at 1/2 and 1/4 of '
                                 f'the input), got {opt.backbone_scale}')
        if opt.refine_sample_pixels < 16:
            raise UserInputError(f'--refine_sample_pixels must be >= 16 (one 4x4 patch), got {opt.refine_sample_pixels}')
        self.stage = opt.bgmv2_stage
        if self.stage == 'base':
            net = MattingBase(opt.backbone)
        else:
            net = MattingRefine(opt.backbone, opt.backbone_scale, opt.refine_mode, opt.refine_sample_pixels,
                                opt.refine_threshold, opt.refine_kernel_size)
        self.netG = net.to(self.device)
        self.model_names = ['G']
        self.visual_names = ['src', 'alpha', 'fgr', 'composite', 'error'] + \
            (['refined'] if self.stage == 'refine' else []) + ['gt_alpha']
        self.plain_bg = torch.tensor(PLAIN_BACKGROUND, device=self.device).view(1, 3, 1, 1)
        self.patch_tint = torch.tensor(PATCH_TINT, device=self.device).view(1, 3, 1, 1)
        self.metrics, self.coarse_metrics = {}, {}   # image name -> {'SAD', 'MSE', 'Grad', 'Conn'}
        self.gt_alpha = self.gt_fgr = None
        if self.isTrain:
            self.loss_names = ['pha', 'sobel', 'fgr'] + \
                (['pha_sm', 'sobel_sm', 'fgr_sm'] if self.stage == 'refine' else []) + ['err']
            if opt.base_checkpoint:
                self.load_base(opt.base_checkpoint)
            lrs = STAGE_LRS[self.stage]
            self.opt_G = self.make_optimizer(groups=[(getattr(self.netG, part), lr) for part, lr in lrs.items()])
            self.optimizers = [self.opt_G]

    # ------------------------------------------------------------------ weights
    def load_base(self, path):
        """Load the base network's part (backbone, ASPP, decoder) of a state-dict file into G
        (:func:`models.base_model.load_weights_file`: ours or official, MattingBase or MattingRefine);
        every base key must be there with its shape; the refiner keeps its initialisation."""
        if not os.path.isfile(path):
            raise UserInputError(f'--base_checkpoint {path}: no such file')
        state = {k: v for k, v in load_weights_file(path, map_location=self.device).items()
                 if not k.startswith('refiner.')}
        expected = {k for k in self.netG.state_dict() if not k.startswith('refiner.')}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise UserInputError(f'{path} does not fit the base network ({self.opt.backbone}): missing keys '
                                 f'{missing[:4]}, unexpected keys {unexpected[:4]}. Check --backbone.')
        try:
            self.netG.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise UserInputError(f'{path} does not fit the base network: {str(e).splitlines()[-1].strip()}. '
                                 'Check --backbone.') from None

    def setup(self, opt):
        super().setup(opt)
        if not self.isTrain:
            self.eval()   # batch norm with running statistics, no ASPP dropout (official inference)

    # ------------------------------------------------------------------ input
    def set_input(self, input):
        """Unpack a batch (see the class docstring); training batches are cropped (:func:`batch_crop`)."""
        self.src = input['src'].to(self.device)
        self.bgr = input['bgr'].to(self.device)
        self.gt_alpha = input['pha'].to(self.device) if 'pha' in input else None
        self.gt_fgr = input['fgr'].to(self.device) if 'fgr' in input else None
        paths = input['path']
        self.image_paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
        names = input.get('name', [os.path.splitext(os.path.basename(p))[0] for p in self.image_paths])
        self.image_names = list(names) if isinstance(names, (list, tuple)) else [names]
        if self.isTrain:
            if self.gt_alpha is None or self.gt_fgr is None:
                raise UserInputError('--model bgmv2 trains on the training layout of --dataset_mode '
                                     'background_matting (fgr/, pha/, backgrounds): the batch has no pha / fgr.')
            side = self.opt.crop_size
            self.src, self.bgr, self.gt_alpha, self.gt_fgr = batch_crop(
                [self.src, self.bgr, self.gt_alpha, self.gt_fgr], max(4, side // 2), max(5, side),
                4 if self.stage == 'refine' else 1)

    # ------------------------------------------------------------------ forward
    def forward(self):
        """G on (src, bgr): ``alpha`` (B, 1, H, W), ``fgr`` (B, 3, H, W) in [0, 1]; base stage
        ``err`` (B, 1, H, W); refine stage the coarse ``pha_sm``, ``fgr_sm``, ``err_sm`` and the
        refined-patch map ``ref_sm`` (B, 1, H/4, W/4). At test time sizes are padded to multiples of
        4 for the refiner and every output cropped back."""
        src, bgr = self.src, self.bgr
        H, W = src.shape[2:]
        pad = (0, -W % 4, 0, -H % 4) if self.stage == 'refine' else (0, 0, 0, 0)
        if any(pad):
            src, bgr = F.pad(src, pad, mode='replicate'), F.pad(bgr, pad, mode='replicate')
        out = [t.float() for t in self.netG(src, bgr)]
        if self.stage == 'base':
            self.alpha, self.fgr, self.err, _ = out
            self.err_full, self.ref_sm = self.err, None
        else:
            self.alpha, self.fgr, self.pha_sm, self.fgr_sm, self.err_sm, self.ref_sm = out
            self.err_full = F.interpolate(self.err_sm, src.shape[2:], mode='bilinear', align_corners=False)
        self.alpha, self.fgr = self.alpha[:, :, :H, :W], self.fgr[:, :, :H, :W]

    # ------------------------------------------------------------------ losses
    def losses(self):
        """Set and return the losses (name -> tensor; see the class docstring)."""
        losses = background_matting_losses(self.alpha, self.fgr, self.gt_alpha, self.gt_fgr)
        if self.stage == 'refine':
            size = self.pha_sm.shape[2:]
            gt_pha_sm = F.interpolate(self.gt_alpha, size, mode='bilinear', align_corners=False)
            gt_fgr_sm = F.interpolate(self.gt_fgr, size, mode='bilinear', align_corners=False)
            losses.update(background_matting_losses(self.pha_sm, self.fgr_sm, gt_pha_sm, gt_fgr_sm, '_sm'))
            pha_up = F.interpolate(self.pha_sm, self.gt_alpha.shape[2:], mode='bilinear', align_corners=False)
            losses['err'] = error_map_loss(self.err_full, pha_up, self.gt_alpha)
        else:
            losses['err'] = error_map_loss(self.err, self.alpha, self.gt_alpha)
        for name, value in losses.items():
            setattr(self, 'loss_' + name, value)
        return losses

    def optimize_parameters(self):
        """One update of G through its ``OptimWrapper``."""
        with self.opt_G.context():
            self.forward()
            losses = self.losses()
        self.opt_G.update(losses)

    # ------------------------------------------------------------------ visuals, test page
    def compute_visuals(self):
        """'composite', 'error' and 'refined' (see the class docstring), at the input's size."""
        H, W = self.src.shape[2:]
        self.composite = composite(self.alpha, self.fgr, self.plain_bg)
        err = self.err if self.stage == 'base' else F.interpolate(self.err_sm, self.err_full.shape[2:], mode='nearest')
        self.error = err[:, :, :H, :W]
        if self.ref_sm is not None:
            mask = F.interpolate(self.ref_sm, scale_factor=4, mode='nearest')[:, :, :H, :W]
            self.refined = self.src * (1 - 0.5 * mask) + 0.5 * mask * self.patch_tint

    def coarse_alpha(self):
        """The base network's alpha upsampled bilinearly to the input's size, no refinement
        (refine stage; (B, 1, H, W) in [0, 1])."""
        up = F.interpolate(self.pha_sm, self.err_full.shape[2:], mode='bilinear', align_corners=False)
        return up[:, :, :self.src.shape[2], :self.src.shape[3]]

    def test(self):
        """Inference without gradients; with ground truth, score every image of the batch."""
        super().test()
        if self.gt_alpha is not None:
            coarse = self.coarse_alpha() if self.stage == 'refine' else None
            for i, name in enumerate(self.image_names):
                self.metrics[name] = whole_image_scores(self.alpha[i], self.gt_alpha[i])
                if coarse is not None:
                    self.coarse_metrics[name] = whole_image_scores(coarse[i], self.gt_alpha[i])

    def test_tables(self):
        """[(title, rows)]: the metrics of the output and, in the refine stage, of the base network's
        upsampled alpha (what refinement adds); [] without ground truth."""
        tables = []
        for title, metrics in ((METRICS_TITLE, self.metrics), (COARSE_TITLE, self.coarse_metrics)):
            if metrics:
                rows = [{'image': name, **{k: m[k] for k in METRIC_NAMES}} for name, m in metrics.items()]
                rows.append({'image': 'mean', **{k: float(np.mean([m[k] for m in metrics.values()]))
                                                 for k in METRIC_NAMES}})
                tables.append((title, rows))
        return tables

    def report_options(self):
        opt = self.opt
        lines = {'network': f'{type(unwrap(self.netG)).__name__} ({opt.backbone})',
                 'metrics': 'whole image (no trimap: every pixel scored), on the saved 8-bit mattes',
                 'units': 'SAD, Grad, Conn / 1000; MSE mean over all pixels'}
        if self.stage == 'refine':
            lines['refine'] = (f'{opt.refine_mode}, backbone_scale {opt.backbone_scale}, sample_pixels '
                               f'{opt.refine_sample_pixels}, threshold {opt.refine_threshold}, kernel '
                               f'{opt.refine_kernel_size}')
        if getattr(opt, 'weights', None):
            lines['weights'] = ', '.join(opt.weights)
        return lines
