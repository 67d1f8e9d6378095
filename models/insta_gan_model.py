"""InstaGAN (Mo, Cho, Shin, ICLR 2019): instance-aware unpaired translation of an image together
with its instance masks, trained with sequential mini-batch translation."""
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from data.trimap import trimap_from_masks
from models import networks
from models.base_model import BaseModel
from models.losses import alpha_prediction_loss, composition_loss, discriminator_loss
from options.base_options import as_trained
from util.errors import UserInputError
from util.image_pool import ImagePool
from util.train_step import Participation, participation


class SideNames(NamedTuple):
    """The loss names of one side (official naming: the identity loss of G_B is on A images)."""
    G: str
    cyc: str
    idt: str
    ctx: str
    D: str
    alpha: str
    comp: str


# side A: G_A translates A -> B, judged by D_A; side B: G_B translates B -> A, judged by D_B
NAMES = {'A': SideNames('G_A', 'cyc_A', 'idt_B', 'ctx_A', 'D_A', 'alpha_A', 'comp_A'),
         'B': SideNames('G_B', 'cyc_B', 'idt_A', 'ctx_B', 'D_B', 'alpha_B', 'comp_B')}
LOSS_SIDE = {name: side for side, names in NAMES.items() for name in names}

# --blend matte: a union below this (in [0, 1]) is no instance. tanh masks never reach -1, so
# without a floor every pixel of the image would be blended a little (0.5% per mask slot).
ALPHA_FLOOR = 0.05
# the edge band of --lambda_alpha: dilation minus erosion of a real mask, 3x3 ellipse, 2 iterations
EDGE_BAND = (3, 2)


def merge_masks(segs):
    """Union of masks: (B, N, H, W) in [-1, 1] -> (B, 1, H, W) in [-1, 1] (official ``merge_masks``)."""
    return (((segs + 1) / 2).sum(1, keepdim=True)).clamp(0, 1) * 2 - 1


def is_nonempty(segs):
    """(B, N, H, W) in [-1, 1] -> (B, N) bool: a slot is empty when all its pixels are -1."""
    return (segs > -1).flatten(2).any(2)


def masks_to_alpha(segs):
    """Alpha matte of a set of masks: their union (:func:`merge_masks`) mapped to [0, 1], below
    ``ALPHA_FLOOR`` set to 0 and stretched back to [0, 1]. (B, N, H, W) in [-1, 1] -> (B, 1, H, W)
    in [0, 1]; exactly 0 where every mask is below -1 + 2 * ALPHA_FLOOR (e.g. empty slots)."""
    union = (merge_masks(segs) + 1) / 2
    return ((union - ALPHA_FLOOR) / (1 - ALPHA_FLOOR)).clamp(0, 1)


def composite(alpha, fg, bg):
    """``alpha * fg + (1 - alpha) * bg``: alpha (B, 1, H, W) in [0, 1]; fg, bg (B, C, H, W). Where
    alpha is 0 the result is ``bg`` bit for bit."""
    return alpha * fg + (1 - alpha) * bg


def feather(alpha, radius):
    """Widen an alpha matte by a soft ramp outside it: dilation by ``radius`` pixels, then a box blur
    of the same reach. (B, 1, H, W) in [0, 1] -> same shape; unchanged where ``radius`` is 0, still 1
    wherever ``alpha`` was 1, and 0 beyond ``2 * radius`` pixels of ``alpha > 0``."""
    if radius == 0:
        return alpha
    k = 2 * radius + 1
    dilated = F.max_pool2d(alpha, k, stride=1, padding=radius)
    return F.avg_pool2d(dilated, k, stride=1, padding=radius, count_include_pad=False)


def blend_translation(inp, out, radius=0):
    """``--blend matte``: a generator's output with its image composited over its input's.

    inp, out: (b, 3 + n, H, W) in [-1, 1], ``cat[image, masks]`` into and out of a set generator.
    alpha (b, 1, H, W) in [0, 1] is the soft union of the input and translated masks (the region an
    instance leaves and the region it takes, :func:`masks_to_alpha`), widened by ``radius`` pixels
    (``--feather``, :func:`feather`). Returns (translation with image ``alpha * G_img + (1 - alpha)
    * x`` and the translated masks, alpha).

    alpha is learned through, not detached: the GAN, cycle and context losses then reach the mask
    outputs through the composite, so a translated mask must cover exactly the pixels that
    should change -- the masks act as alpha mattes. Detached, the masks would get no signal from
    the image at all and the composite could not correct a mask that is too small. Not feathered by
    default: the real masks are hard ({-1, 1}) but the translated ones are soft (tanh), so the edges
    the generator draws are the edges of the composite, and a ramp changes pixels outside both
    masks. With ``--feather R`` a ramp of 2R pixels hides the seam between the generator's image and
    the input where an instance shrinks: on the shapes data ``--feather 1`` is what brings squares ->
    discs up to plain InstaGAN's rate (three seeds, README "InstaGAN with matting"); it stays opt-in
    so that ``--blend matte`` alone changes no pixel outside the masks.
    """
    alpha = feather(masks_to_alpha(torch.cat([inp[:, 3:], out[:, 3:]], 1)), radius)
    return torch.cat([composite(alpha, out[:, :3], inp[:, :3]), out[:, 3:]], 1), alpha


def edge_band(segs):
    """The edge band of each real mask, made as trimaps are made (``data/trimap.py``, dilation minus
    erosion, ``EDGE_BAND``): (B, N, H, W) in {-1, 1} -> (B, N, H, W) bool (empty slots: no band).
    Computed on the host with OpenCV, as the trimaps of the matting data."""
    masks = (segs.detach() > 0).cpu().numpy()
    band = np.zeros(masks.shape, bool)
    for idx in zip(*np.nonzero(masks.any((2, 3)))):
        band[idx] = trimap_from_masks(masks[idx], masks[idx], *EDGE_BAND, mode='dilate_erode') == 128
    return torch.from_numpy(band).to(segs.device)


def weighted_l1(src, tgt, weight):
    """mean(weight * |src - tgt|); src/tgt (B, 3, H, W), weight (B, 1, H, W) in [0, 1]."""
    return torch.mean(weight * torch.abs(src - tgt))


class InstaGANModel(BaseModel):
    """Instance-aware unpaired translation (Mo et al., ICLR 2019).

    Inputs per batch: 'A', 'B' (B, 3, H, W) in [-1, 1]; 'A_segs', 'B_segs' (B, S, H, W) in {-1, 1},
    -1 = empty slot. Networks: G_A: A->B, G_B: B->A (``ResnetSetGenerator``: input and output
    ``cat([image, masks], 1)``), D_A judges B, D_B judges A (``NLayerSetDiscriminator``).

    Losses (weights as the official code): LSGAN ``G_A/G_B/D_A/D_B``; cycle ``cyc_A/cyc_B`` (L1 on
    image and masks, x lambda_A/B); identity ``idt_A/idt_B`` (x lambda_idt x lambda_B/A);
    context-preserving ``ctx_A/ctx_B``: L1 between the pass's input and translated image, weighted by
    the background of both the real and the translated masks (x lambda_ctx x lambda_A/B).

    ``--blend matte`` (default ``none``, the official model): every generator call's image is
    composited over its input image with the soft union of the input and translated masks as alpha
    (:func:`blend_translation`), so pixels outside both are the input's exactly; the alpha of the
    forward translations is shown as ``fake_B_alpha`` / ``fake_A_alpha`` (in [-1, 1] like the masks).
    Matting losses (Deep Image Matting, ``models/losses.py``; off by default):
    ``alpha_A/alpha_B`` (``--lambda_alpha``): alpha-prediction loss between reconstructed and real
    masks (in [0, 1]) over the real masks' edge bands; ``comp_A/comp_B`` (``--lambda_comp``):
    compositional loss, the translated image against the composite of itself over the input image
    with its own translated masks as alpha, over the input's background (outside the input masks).

    Sequential mini-batch translation: up to ``ins_max`` masks are selected per sample (largest
    first, or random order) and translated ``ins_per`` at a time; each pass takes the previous
    pass's translated image as its input, the discriminator sees the translated masks of all passes
    so far, and the generator and discriminator are updated after each pass. Unlike the official
    code, passes are decided per sample (a sample without instances in a pass keeps its image and is
    left out of that pass's losses, instead of a crash or its batch mates' decision), a remainder
    pass runs when ``ins_max`` is not a multiple of ``ins_per``, and the reported losses are the mean
    over the passes that ran.
    """

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(no_dropout=True, dataset_mode='unaligned_seg', netG='set', netD='set')
        parser.add_argument('--set_order', default='decreasing', choices=['decreasing', 'random'],
                            help='order in which instances are translated: by decreasing area or random')
        parser.add_argument('--ins_max', type=int, default=4, help='maximum number of instances used per image')
        parser.add_argument('--ins_per', type=int, default=2, help='instances translated per pass')
        parser.add_argument('--n_blocks', type=int, default=9,
                            help='residual blocks of each set-generator encoder (official: 9)')
        parser.add_argument('--blend', default='none', choices=['none', 'matte'],
                            help='none: the official model; matte: composite each translated image over its input '
                                 'with the union of input and translated masks as alpha')
        parser.add_argument('--feather', type=int, default=0,
                            help='--blend matte: widen the alpha by a soft ramp of 2 x this many pixels outside '
                                 'the masks (0: none)')
        parser.add_argument('--upsample', default='transpose', choices=networks.UPSAMPLE_MODES,
                            help='decoder upsampling: transposed conv (official) or resize (nearest / bilinear '
                                 'x2) then 3x3 conv')
        if not is_train:
            as_trained(parser, 'blend', 'feather', 'upsample')
        if is_train:
            parser.add_argument('--lambda_A', type=float, default=10.0, help='weight of cycle loss A->B->A')
            parser.add_argument('--lambda_B', type=float, default=10.0, help='weight of cycle loss B->A->B')
            parser.add_argument('--lambda_idt', type=float, default=1.0,
                                help='identity loss weight, multiplied by lambda_A/B (0 disables)')
            parser.add_argument('--lambda_ctx', type=float, default=1.0,
                                help='context-preserving loss weight, multiplied by lambda_A/B (0 disables)')
            parser.add_argument('--lambda_alpha', type=float, default=0.0,
                                help='Deep Image Matting alpha loss between reconstructed and real masks over '
                                     'their edge bands (0 disables)')
            parser.add_argument('--lambda_comp', type=float, default=0.0,
                                help='Deep Image Matting compositional loss tying the translated image to its '
                                     'translated masks over the input background (0 disables)')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        if opt.ins_per < 1 or opt.ins_max < 1:
            raise UserInputError(f'--ins_max and --ins_per must be at least 1 (got {opt.ins_max}, {opt.ins_per})')
        self.n_passes = math.ceil(opt.ins_max / opt.ins_per)
        self.blend = opt.blend == 'matte'
        if opt.feather < 0 or (opt.feather and not self.blend):
            raise UserInputError(f'--feather must be >= 0 and needs --blend matte (got --feather {opt.feather} '
                                 f'--blend {opt.blend}; with --blend none give --feather 0)')
        self.loss_names = ['D_A', 'G_A', 'cyc_A', 'idt_A', 'ctx_A', 'D_B', 'G_B', 'cyc_B', 'idt_B', 'ctx_B']
        if self.isTrain:
            if opt.lambda_alpha < 0 or opt.lambda_comp < 0:
                raise UserInputError(f'--lambda_alpha and --lambda_comp must be >= 0 (got {opt.lambda_alpha}, '
                                     f'{opt.lambda_comp})')
            for lam, name in ((opt.lambda_alpha, 'alpha'), (opt.lambda_comp, 'comp')):
                if lam > 0:
                    self.loss_names += [f'{name}_A', f'{name}_B']
        self.visual_names = ['real_A_img', 'fake_B_img', 'rec_A_img', 'real_A_seg', 'fake_B_seg', 'rec_A_seg',
                             'real_B_img', 'fake_A_img', 'rec_B_img', 'real_B_seg', 'fake_A_seg', 'rec_B_seg']
        if self.blend:
            self.visual_names[6:6] = ['fake_B_alpha']
            self.visual_names += ['fake_A_alpha']
        self.model_names = ['G_A', 'G_B', 'D_A', 'D_B'] if self.isTrain else ['G_A', 'G_B']
        g_args = (opt.ngf, opt.netG, opt.norm, not opt.no_dropout, opt.init_type, opt.init_gain, self.device)
        self.netG_A = networks.define_G(opt.input_nc, opt.output_nc, *g_args, n_blocks=opt.n_blocks,
                                        upsample=opt.upsample)
        self.netG_B = networks.define_G(opt.output_nc, opt.input_nc, *g_args, n_blocks=opt.n_blocks,
                                        upsample=opt.upsample)
        # one generator call for several inputs is exact only when samples are normalised alone
        self.fuse_calls = opt.norm in ('instance', 'none')
        if self.isTrain:
            d_args = (opt.ndf, opt.netD, opt.n_layers_D, opt.norm, opt.init_type, opt.init_gain, self.device)
            self.netD_A = networks.define_D(opt.output_nc, *d_args)
            self.netD_B = networks.define_D(opt.input_nc, *d_args)
            self.image_pools = {'fake_A': ImagePool(opt.pool_size), 'fake_B': ImagePool(opt.pool_size)}
            self.criterionGAN = networks.GANLoss(opt.gan_mode).to(self.device)
            self.criterionCyc = torch.nn.L1Loss()
            self.criterionIdt = torch.nn.L1Loss()
            self.opt_G = self.make_optimizer(self.netG_A, self.netG_B)
            self.opt_D = self.make_optimizer(self.netD_A, self.netD_B)
            self.optimizers = [self.opt_G, self.opt_D]

    # ------------------------------------------------------------------ checkpoints
    def convert_state_dict(self, name, state_dict, net):
        """Official InstaGAN checkpoints (hand-rolled spectral norm, DataParallel prefixes) load as is."""
        from models.official_convert import convert_official_state_dict
        return convert_official_state_dict(state_dict, net)

    # ------------------------------------------------------------------ input
    def select_masks(self, segs):
        """(B, S, H, W) -> (B, ins_max, H, W): per sample the largest masks first ('decreasing',
        as the official topk of mask means) or the non-empty ones in random order, then empty slots."""
        B, S, H, W = segs.shape
        if S < self.opt.ins_max:
            segs = torch.cat([segs, -torch.ones(B, self.opt.ins_max - S, H, W, dtype=segs.dtype)], 1)
        area = segs.flatten(2).mean(2)                                      # (B, S') in [-1, 1]
        if self.opt.set_order == 'random':
            nonempty = is_nonempty(segs).float()
            area = nonempty * (1 + torch.rand(area.shape)) - (1 - nonempty)   # random among non-empty
        idx = area.topk(self.opt.ins_max, dim=1).indices                     # (B, ins_max)
        return torch.gather(segs, 1, idx[:, :, None, None].expand(-1, -1, H, W))

    def set_input(self, input):
        AtoB = self.opt.direction == 'AtoB'
        self.real_A_img = input['A' if AtoB else 'B'].to(self.device)
        self.real_B_img = input['B' if AtoB else 'A'].to(self.device)
        self.real_A_segs = self.select_masks(input['A_segs' if AtoB else 'B_segs']).to(self.device)
        self.real_B_segs = self.select_masks(input['B_segs' if AtoB else 'A_segs']).to(self.device)
        self.real_A = torch.cat([self.real_A_img, self.real_A_segs], 1)
        self.real_B = torch.cat([self.real_B_img, self.real_B_segs], 1)
        self.real_A_seg = merge_masks(self.real_A_segs)
        self.real_B_seg = merge_masks(self.real_B_segs)
        self.image_paths = input['A_paths' if AtoB else 'B_paths']

    # ------------------------------------------------------------------ translation
    def pass_slots(self, i):
        """The mask slots translated in pass ``i``: ``ins_per`` of them (fewer in a remainder pass)."""
        return slice(self.opt.ins_per * i, min(self.opt.ins_per * (i + 1), self.opt.ins_max))

    def run_generators(self, real_A, real_B, with_idt):
        """Both translation cycles of a pass on its active samples ((b, 3 + n, H, W), b may be 0):
        fake_B = G_A(real_A), rec_A = G_B(fake_B), fake_A = G_B(real_B), rec_B = G_A(fake_A), and
        with ``with_idt`` the identity mappings idt_A = G_A(real_B), idt_B = G_B(real_A). With
        per-sample normalisation the calls of one generator are fused into one batch (per-sample
        results unchanged). With ``--blend matte`` each output's image is composited over its own
        input's (:func:`blend_translation`). Returns (fake_B, rec_A, fake_A, rec_B, idt_A, idt_B)
        (idt_* None without), the generators' own fake_B, fake_A before compositing and the alphas
        of those two composites (``--blend matte``; else None, None and None, None)."""
        def call(net, xs):
            """(outputs, the generator's own outputs, alphas): composited under --blend matte, else the
            outputs twice and no alphas."""
            sizes = [x.shape[0] for x in xs]
            if sum(sizes) == 0:
                ys = list(xs)
            elif self.fuse_calls:
                ys = list(net(torch.cat(xs, 0)).split(sizes, 0))
            else:
                ys = [net(x) if x.shape[0] else x for x in xs]
            if not self.blend:
                return ys, ys, [None] * len(ys)
            outs, alphas = zip(*(blend_translation(x, y, self.opt.feather) for x, y in zip(xs, ys)))
            return list(outs), ys, list(alphas)
        (fake_B, *idt_A), (raw_B, *_), (alpha_B, *_) = call(self.netG_A, [real_A] + ([real_B] if with_idt else []))
        (rec_A, fake_A, *idt_B), (_, raw_A, *_), (_, alpha_A, *_) = call(
            self.netG_B, [fake_B, real_B] + ([real_A] if with_idt else []))
        (rec_B,), _, _ = call(self.netG_A, [fake_A])
        raw_fakes = (raw_B, raw_A) if self.blend else (None, None)
        return (fake_B, rec_A, fake_A, rec_B, (idt_A or [None])[0], (idt_B or [None])[0]), raw_fakes, (alpha_B, alpha_A)

    def start_passes(self):
        """Start a sequential translation: each direction from the real images, no mask translated yet."""
        self.seq_A = Sequence.start(self.real_A_img, self.real_A_segs)
        self.seq_B = Sequence.start(self.real_B_img, self.real_B_segs)
        self.current_pass = None

    def forward(self, i=0, with_idt=False):
        """Pass ``i`` of the sequential translation, on the samples that have instances in it;
        returns its :class:`Pass` (also ``self.current_pass``), whose tensors keep their graph for
        the losses, and carries its outputs (detached) into ``seq_A`` / ``seq_B`` for the next pass.

        In multi-process training, a side with no instance in this pass in this process but some in
        another runs anyway on this process's first sample as a stand-in
        (:func:`util.train_step.participation`): its losses are multiplied by 0 and it changes no
        state, so that every process makes the same backward calls."""
        self.current_pass = None   # free the previous pass's graph before this pass allocates
        slots = self.pass_slots(i)
        segs_A, segs_B = self.real_A_segs[:, slots], self.real_B_segs[:, slots]
        with_instances = [is_nonempty(segs).any(1).nonzero().squeeze(1) for segs in (segs_A, segs_B)]
        part_A, part_B = participation(with_instances, self.device, training=self.isTrain and torch.is_grad_enabled())
        real_A = torch.cat([self.seq_A.image, segs_A], 1)[part_A.index]
        real_B = torch.cat([self.seq_B.image, segs_B], 1)[part_B.index]
        (fake_B, rec_A, fake_A, rec_B, idt_A, idt_B), (raw_B, raw_A), (alpha_B, alpha_A) = self.run_generators(
            real_A, real_B, with_idt)
        self.current_pass = Pass(
            slots,
            A=PassSide(part_A, real_A, fake_B, rec_A, idt_B, self.seq_A.with_all_masks(part_A.index, slots, fake_B),
                       raw_B, alpha_B),
            B=PassSide(part_B, real_B, fake_A, rec_B, idt_A, self.seq_B.with_all_masks(part_B.index, slots, fake_A),
                       raw_A, alpha_A))
        for seq, side in ((self.seq_A, self.current_pass.A), (self.seq_B, self.current_pass.B)):
            seq.advance(side.part.kept(side.part.index), slots, side.part.kept(side.fake), side.part.kept(side.rec))
            if self.blend:
                seq.add_alpha(side.part.kept(side.part.index), side.part.kept(side.alpha))
        self.set_visuals()
        return self.current_pass

    def set_visuals(self):
        self.fake_B_img, self.fake_A_img = self.seq_A.image, self.seq_B.image
        self.rec_A_img, self.rec_B_img = self.seq_A.rec_image, self.seq_B.rec_image
        self.fake_B_seg, self.fake_A_seg = merge_masks(self.seq_A.fake_segs), merge_masks(self.seq_B.fake_segs)
        self.rec_A_seg, self.rec_B_seg = merge_masks(self.seq_A.rec_segs), merge_masks(self.seq_B.rec_segs)
        if self.blend:
            self.fake_B_alpha, self.fake_A_alpha = self.seq_A.alpha * 2 - 1, self.seq_B.alpha * 2 - 1

    def test(self):
        """Sequential translation of all ``ins_max`` instances without gradients (test.py)."""
        with self.inference():
            self.start_passes()
            for i in range(self.n_passes):
                self.forward(i)
        self.current_pass = None

    # ------------------------------------------------------------------ losses
    def generator_losses(self, step):
        """The G losses (name -> tensor) of pass ``step``'s active samples, side by side: GAN (D frozen),
        cycle, identity and context-preserving; a stand-in side's are multiplied by 0."""
        o = self.opt
        losses = {}
        for side, netD, lam, names in ((step.A, self.netD_A, o.lambda_A, NAMES['A']),
                                       (step.B, self.netD_B, o.lambda_B, NAMES['B'])):
            if side.part.runs:
                losses.update(side.part.weigh(self.side_losses(side, netD, lam, names)))
        return losses

    def side_losses(self, side, netD, lam, names):
        """GAN, cycle, identity and context-preserving losses of one direction of a pass. The context
        loss is L1 between the pass's input and translated image, weighted by the background of both
        the input and the translated masks. With ``--blend matte`` it is taken on the generator's own
        image, before compositing: the composite equals the input outside both masks by
        construction, so there the loss would be 0 and the generator would never learn to draw the
        background -- which is what it must draw where an instance shrinks (a square's corners
        becoming a disc's background)."""
        o = self.opt
        out = {names.G: self.criterionGAN(netD(side.fake_set), True, for_discriminator=False),
               names.cyc: self.criterionCyc(side.rec, side.real) * lam}
        if side.idt is not None:
            out[names.idt] = self.criterionIdt(side.idt, side.real) * lam * o.lambda_idt
        if o.lambda_ctx > 0:
            weight = (1 - merge_masks(torch.cat([side.real[:, 3:], side.fake[:, 3:]], 1))) / 2
            image = side.fake if side.fake_raw is None else side.fake_raw
            out[names.ctx] = weighted_l1(side.real[:, :3], image[:, :3], weight) * lam * o.lambda_ctx
        if o.lambda_alpha > 0:
            out[names.alpha] = self.alpha_loss(side) * o.lambda_alpha
        if o.lambda_comp > 0:
            out[names.comp] = self.comp_loss(side) * o.lambda_comp
        return out

    @staticmethod
    def alpha_loss(side):
        """Deep Image Matting's alpha-prediction loss between the reconstructed and the real masks of
        the pass, both mapped to [0, 1], over the real masks' edge bands (:func:`edge_band`): each
        mask slot is one (1, H, W) alpha, so instance boundaries must come back sharp."""
        b, c, H, W = side.real.shape
        real, rec = side.real[:, 3:].reshape(-1, 1, H, W), side.rec[:, 3:].reshape(-1, 1, H, W)
        return alpha_prediction_loss((rec + 1) / 2, (real + 1) / 2, edge_band(real))

    @staticmethod
    def comp_loss(side):
        """Deep Image Matting's compositional loss tying the translated image I to its translated masks:
        alpha_t (their union, :func:`masks_to_alpha`) composited over the input image x with I as the
        foreground must give I back, ``|alpha_t I + (1 - alpha_t) x - I| = (1 - alpha_t) |I - x|``,
        over the input's background (outside the input masks, where x is the true background). It
        penalises image change where the masks say background, and pushes the masks to cover the
        pixels that changed. Images in [0, 1] as the loss requires.

        With ``--blend matte`` I is the generator's own image (as for the context loss): the composite
        equals ``alpha_t G + (1 - alpha_t) x`` over the input's background already, so on it the loss
        would be ``alpha_t (1 - alpha_t) |G - x|``, nearly 0, and would only reward hard masks."""
        x = (side.real[:, :3] + 1) / 2
        fake = (side.fake[:, :3] if side.fake_raw is None else side.fake_raw[:, :3]) / 2 + 0.5
        alpha_t = masks_to_alpha(side.fake[:, 3:])
        background = merge_masks(side.real[:, 3:]) < 0
        return composition_loss(alpha_t, fake, x, fake, background)

    def discriminator_losses(self, step):
        """D_A: real B sets -> real, pooled translations of pass ``step`` (with the masks of every pass so
        far) -> fake; D_B likewise. A stand-in side leaves its pool alone and weighs its loss by 0."""
        losses = {}
        for side, netD, real, pool, name in ((step.A, self.netD_A, self.real_B, self.image_pools['fake_B'], 'D_A'),
                                             (step.B, self.netD_B, self.real_A, self.image_pools['fake_A'], 'D_B')):
            if side.part.runs:
                fake = side.fake_set.detach()
                fake = fake if side.part.stand_in else pool.query(fake)
                losses.update(side.part.weigh({name: discriminator_loss(self.criterionGAN, netD, real, fake)}))
        return losses

    def optimize_parameters(self):
        """Sequential mini-batch translation (the paper's Section 2.3): for each pass, translate a
        mini-batch of instances, update G (D frozen), update D, and feed the translated image on.
        A pass without instances is skipped (in multi-process training only when no process has any). The losses
        reported are the means over the passes in which their side trained."""
        self.start_passes()
        totals = {k: [] for k in self.loss_names}
        for i in range(self.n_passes):
            with self.opt_G.context():
                step = self.forward(i, with_idt=self.opt.lambda_idt > 0)
                if not step.runs:
                    continue
                self.set_requires_grad([self.netD_A, self.netD_B], False)
                g_losses = self.generator_losses(step)
            self.opt_G.update(g_losses)
            self.set_requires_grad([self.netD_A, self.netD_B], True)
            with self.opt_D.context():
                d_losses = self.discriminator_losses(step)
            self.opt_D.update(d_losses)
            trained = {'A': step.A.part.trains, 'B': step.B.part.trains}
            for k, v in {**g_losses, **d_losses}.items():
                if trained[LOSS_SIDE[k]]:
                    totals[k].append(float(v.detach()))
        for k, values in totals.items():
            setattr(self, 'loss_' + k, sum(values) / len(values) if values else 0.0)
        self.current_pass = None   # free the last pass's graph


@dataclass
class PassSide:
    """One direction of a pass (side A: G_A translates A sets; side B: G_B translates B sets).

    ``part``: which samples take part (:class:`util.train_step.Participation`); ``real``: the pass
    input ``cat[image, the pass's n masks]`` (b, 3 + n, H, W) in [-1, 1]; ``fake``: its translation,
    ``rec``: the reconstruction of ``real`` from ``fake``, ``idt``: the other generator's identity
    mapping of ``real`` (None without the identity loss), all (b, 3 + n, H, W); ``fake_set``: what
    the discriminator judges, the translated image with the translated masks of every pass so far
    (b, 3 + ins_max, H, W; earlier passes' detached, empty slots -1); ``fake_raw``: with ``--blend
    matte`` the generator's own output before compositing (b, 3 + n, H, W), else None; ``alpha``:
    with ``--blend matte`` the alpha of the composite (b, 1, H, W) in [0, 1], else None."""
    part: Participation
    real: torch.Tensor
    fake: torch.Tensor
    rec: torch.Tensor
    idt: Optional[torch.Tensor]
    fake_set: torch.Tensor
    fake_raw: Optional[torch.Tensor] = None
    alpha: Optional[torch.Tensor] = None


@dataclass
class Pass:
    """The tensors of one pass of sequential translation (with their graph), for its losses."""
    slots: slice
    A: PassSide
    B: PassSide

    @property
    def runs(self):
        return self.A.part.runs or self.B.part.runs


@dataclass
class Sequence:
    """What sequential translation carries from pass to pass for one direction, per sample (no graph).

    ``image``: (B, 3, H, W) the input of the next pass (the real image translated by the passes so
    far); ``fake_segs`` / ``rec_segs``: (B, ins_max, H, W) translated / reconstructed masks so far
    (-1 where not yet translated); ``rec_image``: (B, 3, H, W) the reconstruction of the first pass
    each sample took part in (the real image until then); ``rec_taken``: (B,) bool, whether it has one;
    ``alpha``: (B, 1, H, W) in [0, 1], with ``--blend matte`` the largest alpha of the passes so far
    (the region of the image the composites may have changed; 0 until then)."""
    image: torch.Tensor
    fake_segs: torch.Tensor
    rec_segs: torch.Tensor
    rec_image: torch.Tensor
    rec_taken: torch.Tensor
    alpha: torch.Tensor

    @classmethod
    def start(cls, image, segs):
        empty = -torch.ones_like(segs)
        return cls(image, empty, empty.clone(), image.clone(),
                   torch.zeros(image.shape[0], dtype=torch.bool, device=image.device),
                   torch.zeros_like(image[:, :1]))

    def with_all_masks(self, index, slots, fake):
        """``fake`` (b, 3 + n, H, W) of samples ``index`` with the translated masks of the earlier
        passes around its own (in ``slots``): (b, 3 + ins_max, H, W), what D judges."""
        segs = self.fake_segs[index].clone()
        segs[:, slots] = fake[:, 3:]
        return torch.cat([fake[:, :3], segs], 1)

    @torch.no_grad()
    def advance(self, index, slots, fake, rec):
        """Take a pass's translations ``fake`` and reconstructions ``rec`` ((b, 3 + n, H, W)) of
        samples ``index`` (b,): the others keep their image and masks."""
        self.image = self.image.index_copy(0, index, fake[:, :3].detach())
        self.fake_segs[index, slots] = fake[:, 3:].detach()
        self.rec_segs[index, slots] = rec[:, 3:].detach()
        first = ~self.rec_taken[index]
        self.rec_image[index[first]] = rec[first, :3].detach()
        self.rec_taken[index] = True

    @torch.no_grad()
    def add_alpha(self, index, alpha):
        """Take the alpha (b, 1, H, W) of a pass's composites for samples ``index`` (b,)."""
        self.alpha = self.alpha.index_copy(0, index, torch.maximum(self.alpha[index], alpha))
