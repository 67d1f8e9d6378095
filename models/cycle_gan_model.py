"""CycleGAN (Zhu et al., ICCV 2017): unpaired translation with cycle consistency."""

import torch

from models import networks
from models.base_model import BaseModel
from models.losses import discriminator_loss
from util.image_pool import ImagePool


class CycleGANModel(BaseModel):
    """Unpaired A <-> B translation.

    Inputs per batch: 'A', 'B' (B, C, H, W) in [-1, 1]. Networks: G_A: A->B, G_B: B->A,
    D_A judges B, D_B judges A. Losses: LSGAN (default), cycle L1 (lambda_A, lambda_B = 10),
    identity L1 (lambda_identity = 0.5, times lambda_A/B).
    """

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(no_dropout=True)
        if is_train:
            parser.add_argument('--lambda_A', type=float, default=10.0, help='weight of cycle loss A->B->A')
            parser.add_argument('--lambda_B', type=float, default=10.0, help='weight of cycle loss B->A->B')
            parser.add_argument('--lambda_identity', type=float, default=0.5,
                                help='identity loss weight, relative to lambda_A/B (0 disables)')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ['D_A', 'G_A', 'cycle_A', 'idt_A', 'D_B', 'G_B', 'cycle_B', 'idt_B']
        visual_names_A = ['real_A', 'fake_B', 'rec_A']
        visual_names_B = ['real_B', 'fake_A', 'rec_B']
        if self.isTrain and opt.lambda_identity > 0.0:
            visual_names_A.append('idt_B')
            visual_names_B.append('idt_A')
        self.visual_names = visual_names_A + visual_names_B
        self.model_names = ['G_A', 'G_B', 'D_A', 'D_B'] if self.isTrain else ['G_A', 'G_B']
        g_args = (opt.ngf, opt.netG, opt.norm, not opt.no_dropout, opt.init_type, opt.init_gain, self.device)
        self.netG_A = networks.define_G(opt.input_nc, opt.output_nc, *g_args)
        self.netG_B = networks.define_G(opt.output_nc, opt.input_nc, *g_args)
        if self.isTrain:
            d_args = (opt.ndf, opt.netD, opt.n_layers_D, opt.norm, opt.init_type, opt.init_gain, self.device)
            self.netD_A = networks.define_D(opt.output_nc, *d_args)
            self.netD_B = networks.define_D(opt.input_nc, *d_args)
            if opt.lambda_identity > 0.0:
                assert opt.input_nc == opt.output_nc, 'identity loss needs input_nc == output_nc'
            self.image_pools = {'fake_A': ImagePool(opt.pool_size), 'fake_B': ImagePool(opt.pool_size)}
            self.criterionGAN = networks.GANLoss(opt.gan_mode).to(self.device)
            self.criterionCycle = torch.nn.L1Loss()
            self.criterionIdt = torch.nn.L1Loss()
            self.opt_G = self.make_optimizer(self.netG_A, self.netG_B)
            self.opt_D = self.make_optimizer(self.netD_A, self.netD_B)
            self.optimizers = [self.opt_G, self.opt_D]

    def set_input(self, input):
        AtoB = self.opt.direction == 'AtoB'
        self.real_A = input['A' if AtoB else 'B'].to(self.device)
        self.real_B = input['B' if AtoB else 'A'].to(self.device)
        self.image_paths = input['A_paths' if AtoB else 'B_paths']

    def forward(self):
        self.fake_B = self.netG_A(self.real_A)
        self.rec_A = self.netG_B(self.fake_B)
        self.fake_A = self.netG_B(self.real_B)
        self.rec_B = self.netG_A(self.fake_A)

    def generator_losses(self):
        """Set and return the G losses (name -> tensor): GAN, cycle and identity of both directions."""
        lambda_idt, lambda_A, lambda_B = self.opt.lambda_identity, self.opt.lambda_A, self.opt.lambda_B
        if lambda_idt > 0:
            self.idt_A = self.netG_A(self.real_B)
            self.loss_idt_A = self.criterionIdt(self.idt_A, self.real_B) * lambda_B * lambda_idt
            self.idt_B = self.netG_B(self.real_A)
            self.loss_idt_B = self.criterionIdt(self.idt_B, self.real_A) * lambda_A * lambda_idt
        else:
            self.loss_idt_A = self.loss_idt_B = torch.zeros((), device=self.device)
        self.loss_G_A = self.criterionGAN(self.netD_A(self.fake_B), True, for_discriminator=False)
        self.loss_G_B = self.criterionGAN(self.netD_B(self.fake_A), True, for_discriminator=False)
        self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * lambda_A
        self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * lambda_B
        return {k: getattr(self, 'loss_' + k) for k in ('G_A', 'G_B', 'cycle_A', 'cycle_B', 'idt_A', 'idt_B')}

    def optimize_parameters(self):
        """G step (D frozen), then D step on pooled fakes; each through its ``OptimWrapper``."""
        with self.opt_G.context():
            self.forward()
            self.set_requires_grad([self.netD_A, self.netD_B], False)
            losses = self.generator_losses()
        self.opt_G.update(losses)
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        fake_B, fake_A = self.image_pools['fake_B'].query(self.fake_B), self.image_pools['fake_A'].query(self.fake_A)
        with self.opt_D.context():
            self.loss_D_A = discriminator_loss(self.criterionGAN, self.netD_A, self.real_B, fake_B.detach())
            self.loss_D_B = discriminator_loss(self.criterionGAN, self.netD_B, self.real_A, fake_A.detach())
        self.opt_D.update({'D_A': self.loss_D_A, 'D_B': self.loss_D_B})
