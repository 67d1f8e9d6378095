"""CycleGAN (Zhu et al., ICCV 2017): unpaired translation with cycle consistency."""

import torch

from models import networks
from models.base_model import BaseModel
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
            self.optimizer_G = self.make_adam(self.netG_A, self.netG_B)
            self.optimizer_D = self.make_adam(self.netD_A, self.netD_B)
            self.optimizers = [self.optimizer_G, self.optimizer_D]

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

    def backward_D_basic(self, netD, real, fake):
        """Discriminator loss: (real -> 1, fake -> 0) / 2; backward (scaled under --amp fp16)."""
        with self.autocast():
            loss_D = (self.criterionGAN(netD(real), True) + self.criterionGAN(netD(fake.detach()), False)) * 0.5
        self.backward(loss_D, self.optimizer_D)
        return loss_D

    def backward_D_A(self):
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, self.image_pools['fake_B'].query(self.fake_B))

    def backward_D_B(self):
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, self.image_pools['fake_A'].query(self.fake_A))

    def backward_G(self):
        lambda_idt, lambda_A, lambda_B = self.opt.lambda_identity, self.opt.lambda_A, self.opt.lambda_B
        with self.autocast():
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
            self.loss_G = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                           + self.loss_idt_A + self.loss_idt_B)
        self.backward(self.loss_G, self.optimizer_G)

    def optimize_parameters(self):
        """G step, then D step, each through ``BaseModel.step`` (non-finite check, gradient
        averaging under torchrun, GradScaler under --amp fp16)."""
        with self.autocast():
            self.forward()
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.step(self.optimizer_G, ['G_A', 'G_B', 'cycle_A', 'cycle_B', 'idt_A', 'idt_B'])
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.backward_D_A()
        self.backward_D_B()
        self.step(self.optimizer_D, ['D_A', 'D_B'])
