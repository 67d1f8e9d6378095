"""InstaGAN (Mo, Cho, Shin, ICLR 2019): instance-aware unpaired translation of an image together
with its instance masks, trained with sequential mini-batch translation."""
import math

import torch

from models import networks
from models.base_model import BaseModel
from util import distributed
from util.image_pool import ImagePool


# the side (A: G_A's direction, B: G_B's) each reported loss belongs to
LOSS_SIDE = {'G_A': 'A', 'cyc_A': 'A', 'idt_B': 'A', 'ctx_A': 'A', 'D_A': 'A',
             'G_B': 'B', 'cyc_B': 'B', 'idt_A': 'B', 'ctx_B': 'B', 'D_B': 'B'}


def merge_masks(segs):
    """Union of masks: (B, N, H, W) in [-1, 1] -> (B, 1, H, W) in [-1, 1] (official ``merge_masks``)."""
    return (((segs + 1) / 2).sum(1, keepdim=True)).clamp(0, 1) * 2 - 1


def is_nonempty(segs):
    """(B, N, H, W) in [-1, 1] -> (B, N) bool: a slot is empty when all its pixels are -1."""
    return (segs > -1).flatten(2).any(2)


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
        if is_train:
            parser.add_argument('--lambda_A', type=float, default=10.0, help='weight of cycle loss A->B->A')
            parser.add_argument('--lambda_B', type=float, default=10.0, help='weight of cycle loss B->A->B')
            parser.add_argument('--lambda_idt', type=float, default=1.0,
                                help='identity loss weight, multiplied by lambda_A/B (0 disables)')
            parser.add_argument('--lambda_ctx', type=float, default=1.0,
                                help='context-preserving loss weight, multiplied by lambda_A/B (0 disables)')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        if opt.ins_per < 1 or opt.ins_max < 1:
            raise ValueError('--ins_max and --ins_per must be at least 1')
        self.n_passes = math.ceil(opt.ins_max / opt.ins_per)
        self.loss_names = ['D_A', 'G_A', 'cyc_A', 'idt_A', 'ctx_A', 'D_B', 'G_B', 'cyc_B', 'idt_B', 'ctx_B']
        self.visual_names = ['real_A_img', 'fake_B_img', 'rec_A_img', 'real_A_seg', 'fake_B_seg', 'rec_A_seg',
                             'real_B_img', 'fake_A_img', 'rec_B_img', 'real_B_seg', 'fake_A_seg', 'rec_B_seg']
        self.model_names = ['G_A', 'G_B', 'D_A', 'D_B'] if self.isTrain else ['G_A', 'G_B']
        g_args = (opt.ngf, opt.netG, opt.norm, not opt.no_dropout, opt.init_type, opt.init_gain, self.device)
        self.netG_A = networks.define_G(opt.input_nc, opt.output_nc, *g_args, n_blocks=opt.n_blocks)
        self.netG_B = networks.define_G(opt.output_nc, opt.input_nc, *g_args, n_blocks=opt.n_blocks)
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
            self.optimizer_G = self.make_adam(self.netG_A, self.netG_B)
            self.optimizer_D = self.make_adam(self.netD_A, self.netD_B)
            self.optimizers = [self.optimizer_G, self.optimizer_D]

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
    def pass_slice(self, i):
        return slice(self.opt.ins_per * i, min(self.opt.ins_per * (i + 1), self.opt.ins_max))

    def run_generators(self, real_A_sng, real_B_sng, with_idt):
        """G_A(real_A) -> fake_B -> G_B -> rec_A and G_B(real_B) -> fake_A -> G_A -> rec_B for the
        active samples of each side ((b, 3 + n, H, W) tensors, b may be 0). With instance norm, the
        calls of one generator are fused into one batch: per-sample results are unchanged.
        Returns dict with fake_B, rec_A, fake_A, rec_B, idt_A (G_A(real_B)), idt_B (G_B(real_A))."""
        def call(net, xs):
            xs = [x for x in xs]
            sizes = [x.shape[0] for x in xs]
            if sum(sizes) == 0:
                return [x for x in xs]
            if self.fuse_calls:
                return list(net(torch.cat(xs, 0)).split(sizes, 0))
            return [net(x) if x.shape[0] else x for x in xs]
        idt = [real_B_sng] if with_idt else []
        fake_B, *idt_A = call(self.netG_A, [real_A_sng] + idt)
        idt = [real_A_sng] if with_idt else []
        rec_A, fake_A, *idt_B = call(self.netG_B, [fake_B, real_B_sng] + idt)
        rec_B, = call(self.netG_A, [fake_A])
        return dict(fake_B=fake_B, rec_A=rec_A, fake_A=fake_A, rec_B=rec_B,
                    idt_A=idt_A[0] if idt_A else None, idt_B=idt_B[0] if idt_B else None)

    def start_passes(self):
        """Per-pass state: the current input images and the translated masks of earlier passes."""
        self.cur_A_img, self.cur_B_img = self.real_A_img, self.real_B_img
        self.fake_B_segs = -torch.ones_like(self.real_A_segs)
        self.fake_A_segs = -torch.ones_like(self.real_B_segs)
        self.rec_A_segs = -torch.ones_like(self.real_A_segs)
        self.rec_B_segs = -torch.ones_like(self.real_B_segs)
        self.rec_A_img, self.rec_B_img = self.real_A_img.clone(), self.real_B_img.clone()
        self._rec_set_A = torch.zeros(self.real_A_img.shape[0], dtype=torch.bool, device=self.device)
        self._rec_set_B = torch.zeros_like(self._rec_set_A)

    def forward(self, i=0, with_idt=False):
        """Pass ``i`` of the sequential translation, on the samples that have instances in it.

        Sets ``self.p`` (the pass's tensors for the losses) and updates the current images, the
        merged masks and the visuals. Gradients flow through this pass only.

        Under torchrun (training), a side that has no instance in this pass on this rank but has
        some on another rank runs anyway on its first sample as a *stand-in* (``p['stand_in_A']``):
        its losses are multiplied by 0 and it changes no state, so that every rank makes the same
        backward calls (DistributedDataParallel's all-reduce) and adds zero gradients."""
        self.p = None   # free the previous pass's graph before this pass allocates
        sl = self.pass_slice(i)
        segs_A, segs_B = self.real_A_segs[:, sl], self.real_B_segs[:, sl]
        ia = is_nonempty(segs_A).any(1).nonzero().squeeze(1)    # active samples of each side
        ib = is_nonempty(segs_B).any(1).nonzero().squeeze(1)
        run_A, run_B = len(ia) > 0, len(ib) > 0
        stand_in_A = stand_in_B = False
        if self.isTrain and torch.is_grad_enabled() and distributed.active():
            run_A, run_B = self.any_rank([run_A, run_B])
            first = torch.zeros(1, dtype=torch.long, device=ia.device)
            stand_in_A, stand_in_B = run_A and not len(ia), run_B and not len(ib)
            ia = first if stand_in_A else ia
            ib = first if stand_in_B else ib
        real_A_sng = torch.cat([self.cur_A_img, segs_A], 1)[ia]
        real_B_sng = torch.cat([self.cur_B_img, segs_B], 1)[ib]
        out = self.run_generators(real_A_sng, real_B_sng, with_idt)
        n = sl.stop - sl.start
        # D input: the translated image with the masks of all passes so far (earlier ones detached)
        fake_B_mul = self.fake_B_segs[ia].clone()
        fake_B_mul[:, sl] = out['fake_B'][:, 3:]
        fake_A_mul = self.fake_A_segs[ib].clone()
        fake_A_mul[:, sl] = out['fake_A'][:, 3:]
        self.p = dict(out, ia=ia, ib=ib, real_A_sng=real_A_sng, real_B_sng=real_B_sng, run_A=run_A, run_B=run_B,
                      stand_in_A=stand_in_A, stand_in_B=stand_in_B,
                      fake_B_mul=torch.cat([out['fake_B'][:, :3], fake_B_mul], 1),
                      fake_A_mul=torch.cat([out['fake_A'][:, :3], fake_A_mul], 1))
        # carry state to the next pass (inactive samples keep their image and empty masks)
        if stand_in_A:
            ia, out = ia[:0], dict(out, fake_B=out['fake_B'][:0], rec_A=out['rec_A'][:0])
        if stand_in_B:
            ib, out = ib[:0], dict(out, fake_A=out['fake_A'][:0], rec_B=out['rec_B'][:0])
        with torch.no_grad():
            self.cur_A_img = self.cur_A_img.index_copy(0, ia, out['fake_B'][:, :3].detach())
            self.cur_B_img = self.cur_B_img.index_copy(0, ib, out['fake_A'][:, :3].detach())
            self.fake_B_segs[ia, sl] = out['fake_B'][:, 3:3 + n].detach()
            self.fake_A_segs[ib, sl] = out['fake_A'][:, 3:3 + n].detach()
            self.rec_A_segs[ia, sl] = out['rec_A'][:, 3:3 + n].detach()
            self.rec_B_segs[ib, sl] = out['rec_B'][:, 3:3 + n].detach()
            # the reconstruction shown is that of the first pass each sample took part in
            first_a = ia[~self._rec_set_A[ia]]
            first_b = ib[~self._rec_set_B[ib]]
            self.rec_A_img[first_a] = out['rec_A'][~self._rec_set_A[ia], :3].detach()
            self.rec_B_img[first_b] = out['rec_B'][~self._rec_set_B[ib], :3].detach()
            self._rec_set_A[ia] = True
            self._rec_set_B[ib] = True
        self.set_visuals()

    def set_visuals(self):
        self.fake_B_img, self.fake_A_img = self.cur_A_img, self.cur_B_img
        self.fake_B_seg, self.fake_A_seg = merge_masks(self.fake_B_segs), merge_masks(self.fake_A_segs)
        self.rec_A_seg, self.rec_B_seg = merge_masks(self.rec_A_segs), merge_masks(self.rec_B_segs)

    def test(self):
        """Sequential translation of all ``ins_max`` instances without gradients (test.py)."""
        with torch.no_grad(), self.autocast():
            self.start_passes()
            for i in range(self.n_passes):
                self.forward(i)

    # ------------------------------------------------------------------ losses
    def backward_G(self):
        """Generator losses of the current pass (only its active samples), then backward."""
        zero = torch.zeros((), device=self.device)
        losses = {k: zero for k in ('G_A', 'cyc_A', 'idt_B', 'ctx_A', 'G_B', 'cyc_B', 'idt_A', 'ctx_B')}
        with self.autocast():
            losses = self.generator_losses(losses)
        self.backward(sum(losses.values()), self.optimizer_G)
        return losses

    def generator_losses(self, losses):
        """The G losses of the current pass's active samples, filled into ``losses`` (name -> tensor)."""
        p, o = self.p, self.opt
        if p['run_A']:   # G_A: A -> B, judged by D_A; identity of G_B on A images (official naming)
            side = self.direction_losses(self.netD_A, p['fake_B_mul'], p['real_A_sng'], p['fake_B'],
                                         p['rec_A'], p['idt_B'], o.lambda_A, ('G_A', 'cyc_A', 'idt_B', 'ctx_A'))
            losses.update({k: v * 0 for k, v in side.items()} if p['stand_in_A'] else side)
        if p['run_B']:
            side = self.direction_losses(self.netD_B, p['fake_A_mul'], p['real_B_sng'], p['fake_A'],
                                         p['rec_B'], p['idt_A'], o.lambda_B, ('G_B', 'cyc_B', 'idt_A', 'ctx_B'))
            losses.update({k: v * 0 for k, v in side.items()} if p['stand_in_B'] else side)
        return losses

    def direction_losses(self, netD, fake_mul, real, fake, rec, idt, lam, names):
        """GAN, cycle, identity and context-preserving losses of one direction.

        real / fake / rec / idt: (b, 3 + n, H, W) pass input, translation, reconstruction and identity
        mapping (idt None: no identity loss); fake_mul: the translation with the masks of every pass
        (what D sees). The context loss is L1 between real and translated image, weighted by the
        background of both the real and the translated masks."""
        o = self.opt
        out = {names[0]: self.criterionGAN(netD(fake_mul), True, for_discriminator=False),
               names[1]: self.criterionCyc(rec, real) * lam}
        if idt is not None:
            out[names[2]] = self.criterionIdt(idt, real) * lam * o.lambda_idt
        if o.lambda_ctx > 0:
            n = real.shape[1] - 3
            weight = (1 - merge_masks(torch.cat([real[:, 3:], fake[:, 3:3 + n]], 1))) / 2
            out[names[3]] = weighted_l1(real[:, :3], fake[:, :3], weight) * lam * o.lambda_ctx
        return out

    def backward_D(self, netD, real, fake, pool, stand_in=False):
        """(real -> 1, pooled fake -> 0) / 2 for one discriminator; backward. A stand-in (see
        :meth:`forward`) leaves the pool alone and backpropagates 0 * loss."""
        fake = fake.detach() if stand_in else pool.query(fake.detach())
        with self.autocast():
            loss = (self.criterionGAN(netD(real), True) + self.criterionGAN(netD(fake), False)) * 0.5
        if stand_in:
            loss = loss * 0
        self.backward(loss, self.optimizer_D)
        return loss

    def optimize_parameters(self):
        """Sequential mini-batch translation: for each pass, update G then D (through
        ``BaseModel.step``). A pass without instances is skipped; under torchrun only when no rank
        has any (a rank without them runs a stand-in with zero loss, see :meth:`forward`)."""
        self.start_passes()
        sums = {k: 0.0 for k in self.loss_names}
        counts = {k: 0 for k in self.loss_names}
        with_idt = self.opt.lambda_idt > 0
        for i in range(self.n_passes):
            with self.autocast():
                self.forward(i, with_idt=with_idt)
            p = self.p
            if not (p['run_A'] or p['run_B']):
                continue
            self.set_requires_grad([self.netD_A, self.netD_B], False)
            self.optimizer_G.zero_grad(set_to_none=True)
            g_losses = self.backward_G()
            self.step(self.optimizer_G, g_losses)
            self.set_requires_grad([self.netD_A, self.netD_B], True)
            self.optimizer_D.zero_grad(set_to_none=True)
            d_losses = {}
            if p['run_A']:
                d_losses['D_A'] = self.backward_D(self.netD_A, self.real_B, p['fake_B_mul'], self.image_pools['fake_B'],
                                                  p['stand_in_A'])
            if p['run_B']:
                d_losses['D_B'] = self.backward_D(self.netD_B, self.real_A, p['fake_A_mul'], self.image_pools['fake_A'],
                                                  p['stand_in_B'])
            self.step(self.optimizer_D, d_losses)
            ran = {'A': p['run_A'] and not p['stand_in_A'], 'B': p['run_B'] and not p['stand_in_B']}
            for k, v in {**g_losses, **d_losses}.items():
                if ran[LOSS_SIDE[k]]:
                    sums[k] += float(v.detach() if torch.is_tensor(v) else v)
                    counts[k] += 1
        for k in self.loss_names:
            setattr(self, 'loss_' + k, sums[k] / counts[k] if counts[k] else 0.0)
        self.p = None   # free the last pass's graph references
