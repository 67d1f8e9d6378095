"""Deep Image Matting (Xu, Price, Cohen & Huang, CVPR 2017): a VGG-16 encoder-decoder that predicts
alpha from an image and its trimap, and a small refinement network, trained in three stages.

    python train.py --model dim --name dim1 --dim_stage 1 --pretrained_path vgg16.pth
    python train.py --model dim --name dim2 --dim_stage 2 --init_from dim1
    python train.py --model dim --name dim3 --dim_stage 3 --init_from dim2
    python test.py  --model dim --name dim3 --dataroot <Composition-1k layout>

``--dim_preset port`` (with test.py's ``--weights FILE``) runs the checkpoints of the public PyTorch
port (github huochaitiantang/pytorch-deep-image-matting) as its ``deploy.py`` does.
"""
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.base_model import unwrap
from models.dim_networks import REFINE_MODES, DIMNet
from models.losses import alpha_prediction_loss, composition_loss
from models.matting_base import MattingModel, composite, fill_known, trimap_to_255, unknown_region
from util import checkpoint
from util.errors import UserInputError

# --dim_preset -> (skip, conv6 kernel, refine on, trimap input, test-time fit). 'paper' where the
# paper says (no skips, refinement added to the alpha); conv6_1's kernel it does not give (1, the
# port's first reading). 'port': the port's current code and deploy path.
PRESETS = {'paper': dict(dim_skip=False, dim_conv6=1, dim_refine_on='alpha', dim_trimap='half', dim_fit='pad'),
           'port': dict(dim_skip=True, dim_conv6=3, dim_refine_on='logit', dim_trimap='byte', dim_fit='resize')}
PORT_MAX_SIDE = 1600     # deploy.py's --max_size default
UNKNOWN_BYTE = torch.tensor(128.0) / 255.0   # the port's unknown trimap value, trimap / 255. in float32


def resolve_preset(opt):
    """Fill every ``--dim_*`` architecture option left unset (None) from ``--dim_preset``, in ``opt``."""
    for key, value in PRESETS[opt.dim_preset].items():
        if getattr(opt, key, None) is None:
            setattr(opt, key, value)
    if opt.isTrain:   # --dim_fit / --max_side are test options; model.test() in training (benchmarks): no limit
        opt.max_side = None
    elif opt.max_side is None and opt.dim_fit == 'resize':
        opt.max_side = PORT_MAX_SIDE


class DIMModel(MattingModel):
    """Deep Image Matting.

    Inputs per batch: those of :class:`MattingModel` ('image' RGB in [0, 1], 'trimap' in {0, 0.5, 1},
    for training 'fg', 'bg', 'alpha'). Network: G = :class:`models.dim_networks.DIMNet`, input
    ``cat[(image - ImageNet mean) / std, trimap]`` (B, 4, H, W), the trimap channel in {0, 0.5, 1}
    (``--dim_trimap half``) or {0, 128/255, 1} (``byte``: the port's ``trimap / 255``); outputs the
    encoder-decoder's alpha ``pred_raw`` and, from stage 2 on, the refined ``pred_refined``, each
    (B, 1, H, W) in [0, 1].

    Stages (``--dim_stage``), losses over the trimap's unknown region (as the paper):
      1. encoder-decoder alone: ``alpha`` = w L_alpha(raw), ``comp`` = (1 - w) L_comp(raw), w = 0.5
         (``--dim_alpha_weight``);
      2. encoder-decoder frozen (bit for bit), refinement trained: ``refine`` = L_alpha(refined);
      3. everything: ``alpha`` + ``comp`` + ``refine`` (the port's sum; the paper says "fine-tune the
         whole network").
    A stage starts from the previous stage's weights (``--init_from``); refinement layers missing
    there start from Caffe's xavier filler.

    Test time (test.py): the final prediction with the known trimap regions copied is 'alpha' (saved
    as ``<stem>_alpha.png``), with ``raw_alpha`` (the encoder-decoder's) from stage 2 on; metrics as
    for AlphaGAN. Without ``--dim_stage`` the checkpoint decides: refinement layers in it are used.
    ``--dim_fit pad``: full resolution, padded to a multiple of 32 and cropped back (``--max_side``:
    scaled down first so that the longer side fits, the matte scaled back). ``resize``: the port's
    deploy path, image and trimap resized (bilinear, 8 bits) to ``min(max_side, s - s % 32)`` per side,
    the matte resized back, known regions set and truncated to 8 bits as the port writes its PNGs.
    """

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        # Paper: batch size 1, 320 px crops from 320 / 480 / 640 px windows (the matting dataset's
        # default), Adam at a constant 1e-5 (torch's default betas).
        parser.set_defaults(dataset_mode='matting', input_nc=4, output_nc=1, norm='none', crop_size=320,
                            load_size=320, batch_size=1)
        g = parser.add_argument_group('Deep Image Matting')
        g.add_argument('--dim_preset', default='paper', choices=sorted(PRESETS),
                       help='paper: no skips, conv6_1 1x1, refinement added to the alpha, trimap {0, .5, 1}; '
                            'port: the PyTorch port (huochaitiantang) since 2020-09-09: skips, conv6_1 3x3, '
                            'refinement on the logit, trimap / 255, its deploy path at test time. Each '
                            '--dim_* option below overrides its part')
        g.add_argument('--dim_skip', dest='dim_skip', action='store_const', const=True, default=None,
                       help='skip connections: the encoder features added to the unpooled decoder maps')
        g.add_argument('--no_dim_skip', dest='dim_skip', action='store_const', const=False,
                       help='no skip connections (the paper; the port before 2020-09-09, release v1.4 and older)')
        g.add_argument('--dim_conv6', type=int, default=None, choices=(1, 3),
                       help="conv6_1's kernel (port: 3; its releases before 2019-09-09: 1)")
        g.add_argument('--dim_refine_on', default=None, choices=REFINE_MODES,
                       help='alpha: clamp(alpha + refinement, 0, 1) (paper); logit: sigmoid(logit + refinement)')
        g.add_argument('--dim_trimap', default=None, choices=('half', 'byte'),
                       help="trimap channel: half {0, 0.5, 1}; byte {0, 128/255, 1} (the port's trimap / 255)")
        MattingModel.add_guidance_option(g, is_train)
        g.add_argument('--dim_stage', type=int, choices=(1, 2, 3), default=1 if is_train else None,
                       help='1: encoder-decoder; 2: refinement (encoder-decoder frozen); 3: all. '
                            + ('' if is_train else 'Default at test time: refinement if the checkpoint has it'))
        if is_train:
            parser.set_defaults(lr=1e-5, beta1=0.9, beta2=0.999, lr_policy='linear', n_epochs_decay=0)
            g.add_argument('--dim_alpha_weight', type=float, default=0.5,
                           help='w in w * L_alpha + (1 - w) * L_comp (stages 1 and 3)')
            g.add_argument('--pretrained_path', default=None,
                           help='a local torchvision vgg16 state dict for the 13 encoder convolutions '
                                '(conv1_1 gets a zero trimap channel); other layers: xavier')
            g.add_argument('--init_from', default=None,
                           help="the previous stage: a run name (its latest_net_G.pth under --checkpoints_dir) "
                                "or a weights file (ours or the port's ckpt_*.pth)")
        else:
            g.add_argument('--dim_fit', default=None, choices=('pad', 'resize'),
                           help="pad to a multiple of 32 (paper preset) or the port's resize (port preset)")
            MattingModel.add_inference_options(parser)   # --tile, --tile_overlap, --max_side (pad and resize)
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        resolve_preset(opt)
        self.stage = opt.dim_stage
        if opt.input_nc != 4 or opt.output_nc != 1:
            raise UserInputError(f'--model dim takes RGB + trimap (--input_nc 4) and predicts alpha (--output_nc 1); '
                                 f'got --input_nc {opt.input_nc} --output_nc {opt.output_nc}. Drop these options.')
        if self.isTrain and not 0.0 <= opt.dim_alpha_weight <= 1.0:
            raise UserInputError(f'--dim_alpha_weight must be in [0, 1], got {opt.dim_alpha_weight}')
        self.visual_names = ['image', 'trimap', 'alpha', 'raw_alpha', 'composite', 'gt_alpha']
        self.model_names = ['G']
        if self.guidance_nc and not self.isTrain and opt.dim_fit == 'resize':
            raise UserInputError('--guidance known_colours runs with --dim_fit pad: the resize path is the port\'s '
                                 'deploy.py, for its checkpoints (which have no guidance channels)')
        self.netG = DIMNet(opt.dim_skip, opt.dim_conv6, opt.dim_refine_on,
                           refinement=self.stage is None or self.stage >= 2, guidance_nc=self.guidance_nc).to(self.device)
        self.raw_alpha = None
        if not self.isTrain:
            return
        fresh = not opt.continue_train
        if fresh and opt.pretrained_path:
            weights = checkpoint.load(opt.pretrained_path, what='pretrained weights file',
                                      hint='Check --pretrained_path: it should be a torchvision vgg16 state dict '
                                           'saved with torch.save.')
            self.netG.load_vgg16(weights, opt.pretrained_path)
        if fresh and opt.init_from:
            self.load_network_file('G', self.init_path(opt.init_from))
        self.loss_names = {1: ['alpha', 'comp'], 2: ['refine'], 3: ['alpha', 'comp', 'refine']}[self.stage]
        if self.stage == 2:   # Adam steps only parameters with gradients: the frozen ones never change
            self.set_requires_grad_of(self.netG.encoder_decoder_parameters(), False)
        self.opt_G = self.make_optimizer(self.netG)
        self.optimizers = [self.opt_G]

    @staticmethod
    def set_requires_grad_of(params, flag):
        for p in params:
            p.requires_grad = flag

    def init_path(self, init_from):
        """``--init_from``: a file, or a run name -> ``<checkpoints_dir>/<name>/latest_net_G.pth``."""
        if os.path.isfile(init_from):
            return init_from
        path = os.path.join(self.opt.checkpoints_dir, init_from, 'latest_net_G.pth')
        if not os.path.isfile(path):
            raise UserInputError(f'--init_from {init_from}: neither a file nor a run with {path}. Pass the '
                                 'previous stage\'s --name (same --checkpoints_dir) or a weights file.')
        return path

    def convert_state_dict(self, name, state, net):
        """Fit a DIM state dict (ours or the port's: the same names) to ``net``: conv6_1's kernel must
        match (it is the one architecture choice a file shows); refinement layers missing from a
        file start fresh in training (a stage-1 file starting stage 2 or 3) and, at test time without
        ``--dim_stage``, are dropped (a stage-1 checkpoint); refinement layers a stage-1 network has
        no place for are not used."""
        first = state.get('conv1_1.weight')
        if torch.is_tensor(first) and first.dim() == 4 and first.shape[1] != net.in_channels:
            raise UserInputError(f'the weights take {first.shape[1]} input channels, the network {net.in_channels}: '
                                 f'pass --guidance {"known_colours" if first.shape[1] > 4 else "none"} as the run '
                                 'that wrote them')
        shape = state.get('conv6_1.weight', torch.empty(0, 0, 0, 0)).shape
        if len(shape) == 4 and shape[-1] in (1, 3) and shape[-1] != net.conv6_kernel:
            k = shape[-1]
            raise UserInputError(f'the weights have a {k}x{k} conv6_1, the network {net.conv6_kernel}x'
                                 f'{net.conv6_kernel}: pass --dim_conv6 {k} (the port\'s releases before '
                                 '2019-09-09, v1.3 and older, use 1; --dim_preset port sets 3)')
        has_refine = any(k.startswith('refine_') for k in state)
        if net.refinement and not has_refine:
            if self.isTrain:
                state.update({k: v for k, v in net.state_dict().items() if k.startswith('refine_')})
                print('dim: the weights have no refinement layers (a stage-1 file); they start fresh')
            elif self.opt.dim_stage is None:
                net.drop_refinement()
                self.stage = 1
            else:
                raise UserInputError(f'--dim_stage {self.opt.dim_stage}: the weights have no refinement layers '
                                     '(a stage-1 checkpoint); pass --dim_stage 1 or leave it out')
        elif not net.refinement and has_refine:
            state = {k: v for k, v in state.items() if not k.startswith('refine_')}
        return state

    # ------------------------------------------------------------------ forward
    def trimap_channel(self, trimap):
        """(B, 1, H, W) trimap in {0, 0.5, 1} -> the network's trimap channel (``--dim_trimap``)."""
        if self.opt.dim_trimap == 'byte':
            return torch.where(unknown_region(trimap), UNKNOWN_BYTE.to(trimap.device), trimap)
        return trimap

    def network_input(self):
        """(B, 4 + guidance channels, H, W): ImageNet-normalised RGB, the trimap channel, then the
        ``--guidance`` channels (:meth:`MattingModel.guidance_channels`)."""
        return torch.cat([self.normalised_rgb(), self.trimap_channel(self.trimap), *self.guidance_channels()], dim=1)

    def forward(self):
        """G on the batch: ``pred_raw`` (encoder-decoder), ``pred_refined`` (None in stage 1) and
        ``pred_alpha`` (the final one), float32; then :meth:`derive`."""
        raw, refined = self.run_network(self.netG, self.network_input())
        self.pred_raw = raw.float()
        self.pred_refined = None if refined is None else refined.float()
        self.derive()

    def derive(self):
        """``pred_alpha`` and the visuals from ``pred_raw`` / ``pred_refined``: ``alpha`` with the known
        trimap regions copied, ``raw_alpha`` (stage >= 2), ``composite`` over a plain green."""
        self.unknown = unknown_region(self.trimap)
        self.pred_alpha = self.pred_raw if self.pred_refined is None else self.pred_refined
        self.alpha = fill_known(self.pred_alpha, self.trimap)
        self.raw_alpha = None if self.pred_refined is None else fill_known(self.pred_raw, self.trimap)
        self.composite = composite(self.alpha, self.image, self.plain_bg)

    # ------------------------------------------------------------------ losses
    def stage_losses(self):
        """name -> loss of ``--dim_stage`` (see the class docstring); each also ``loss_<name>``."""
        w = self.opt.dim_alpha_weight
        if self.stage in (1, 3):
            self.loss_alpha = alpha_prediction_loss(self.pred_raw, self.gt_alpha, self.unknown) * w
            self.loss_comp = composition_loss(self.pred_raw, self.fg, self.bg, self.image, self.unknown) * (1 - w)
        if self.stage in (2, 3):
            self.loss_refine = alpha_prediction_loss(self.pred_refined, self.gt_alpha, self.unknown)
        return {k: getattr(self, 'loss_' + k) for k in self.loss_names}

    def optimize_parameters(self):
        with self.opt_G.context():
            self.forward()
            losses = self.stage_losses()
        self.opt_G.update(losses)

    # ------------------------------------------------------------------ test time
    def test(self):
        """Inference as ``--dim_fit`` says (class docstring), then the metrics with ground truth."""
        with self.inference():
            if self.opt.dim_fit == 'resize':
                self.forward_port_deploy()
            else:        # --max_side / --tile: MattingModel.run_network
                self.forward()
        self.compute_visuals()
        self.score_batch()

    def forward_port_deploy(self):
        """The port's ``deploy.py`` whole-image path, per sample: 8-bit image and trimap resized with
        ``cv2.INTER_LINEAR`` to ``(min(max_side, w - w % 32), min(max_side, h - h % 32))`` (the trimap
        is then no longer ternary), the network, the matte resized back (``INTER_LINEAR``), 1 / 0 at
        the known pixels of the original trimap, then ``uint8(pred * 255)`` (truncated) as it writes
        its PNGs; ``alpha`` is that 8-bit matte / 255."""
        outs = [self.port_deploy_one(image, trimap) for image, trimap in zip(self.image, self.trimap)]
        stack = lambda ts: torch.stack(ts).to(self.device)  # noqa: E731
        self.pred_raw = stack([raw for raw, _, _ in outs])
        self.pred_refined = None if outs[0][1] is None else stack([ref for _, ref, _ in outs])
        self.derive()
        self.alpha = stack([png for _, _, png in outs])

    def port_deploy_one(self, image, trimap):
        """(3, H, W), (1, H, W) -> (encoder-decoder matte, refined matte or None, the final one on 8
        bits / 255), each (1, H, W) float32 on the CPU, known regions set."""
        h, w = image.shape[-2:]
        size = (min(self.opt.max_side, w - w % 32), min(self.opt.max_side, h - h % 32))   # (w, h) as cv2
        if min(size) < 32:
            raise UserInputError(f'--dim_fit resize: an image of {w}x{h} is below 32 px on a side; use --dim_fit pad')
        tri = trimap_to_255(trimap[0])
        img = (image.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        img_s = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        if self.opt.dim_trimap == 'byte':
            tri_s = torch.from_numpy(cv2.resize(tri, size, interpolation=cv2.INTER_LINEAR)).float() / 255.0
        else:
            tri_s = torch.from_numpy(cv2.resize(trimap[0].float().cpu().numpy(), size, interpolation=cv2.INTER_LINEAR))
        rgb = torch.from_numpy(img_s).permute(2, 0, 1).float().div(255).to(self.device)[None]
        x = torch.cat([self.normalised_rgb(rgb), tri_s.to(self.device)[None, None]], dim=1)
        back = []
        for t in self.netG(x):
            if t is None:
                back.append(None)
                continue
            pred = cv2.resize(t[0, 0].float().cpu().numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
            pred[tri == 255] = 1.0
            pred[tri == 0] = 0.0
            back.append(pred)
        final = back[1] if back[1] is not None else back[0]
        png = (final * 255).astype(np.uint8)
        png[tri == 255] = 255
        png[tri == 0] = 0
        as_tensor = lambda a: None if a is None else torch.from_numpy(a)[None]  # noqa: E731
        return as_tensor(back[0]), as_tensor(back[1]), torch.from_numpy(png).float()[None] / 255.0

    def report_options(self):
        opt = self.opt
        return {**super().report_options(),
                'dim': f'{"encoder-decoder + refinement" if unwrap(self.netG).refinement else "encoder-decoder"}, preset {opt.dim_preset}: skip {opt.dim_skip}, conv6_1 {opt.dim_conv6}x'
                       f'{opt.dim_conv6}, refinement on the {opt.dim_refine_on}, trimap {opt.dim_trimap}, fit '
                       f'{opt.dim_fit}' + (f' (max side {opt.max_side})' if opt.max_side else '')}
