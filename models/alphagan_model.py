"""AlphaGAN (Lutz, Amplianitis & Smolic, "AlphaGAN: Generative adversarial networks for natural image
matting", BMVC 2018): a trimap-based matting network trained with the Deep Image Matting losses
plus an adversarial loss from a discriminator that judges composites.

``python train.py --model alphagan --dataroot datasets/matting_synth --name alphagan`` trains on the
training layout of ``--dataset_mode matting``; ``python test.py --model alphagan --dataroot ...
--name alphagan`` predicts full-resolution mattes for the test layout and, when the ground truth
is there, adds a table of SAD / MSE / Grad / Conn to the HTML page.
"""
import torch

from models import networks
from models.losses import alpha_prediction_loss, composition_loss, discriminator_loss, laplacian_loss
from models.matting_base import (METRIC_NAMES, METRICS_TITLE, MattingModel, composite,  # noqa: F401 (re-exported)
                                 fill_known, unknown_region)
from util.errors import UserInputError
from util.image_pool import ImagePool


def discriminator_input(image, trimap):
    """D's 4-channel input ``[composite, trimap]``, both mapped from [0, 1] to [-1, 1] (``2 x - 1``),
    the range the CycleGAN-style PatchGAN is used with: (B, 3, H, W), (B, 1, H, W) -> (B, 4, H, W)."""
    return torch.cat([image, trimap], dim=1) * 2.0 - 1.0


class AlphaGANModel(MattingModel):
    """AlphaGAN matting.

    Inputs per batch (``--dataset_mode matting``): 'image' (B, 3, H, W) RGB in [0, 1], 'trimap'
    (B, 1, H, W) in {0, 0.5, 1}; for training also 'fg', 'bg' (B, 3, H, W) in [0, 1] and 'alpha'
    (B, 1, H, W) in [0, 1] with ``image = alpha * fg + (1 - alpha) * bg``; at test time 'alpha' is
    optional (ground truth for the metrics).

    Networks: G = ``AlphaGANGenerator`` (ResNet-50 encoder with dilated conv4_x / conv5_x, ASPP,
    decoder with max-unpooling), input ``cat[(image - ImageNet mean) / std, trimap]`` (B, 4, H, W),
    output alpha (B, 1, H, W) in [0, 1]; D = PatchGAN (``--netD n_layers``, ``--n_layers_D 3``) on
    ``[composite, trimap]`` (B, 4, H, W) in [-1, 1]. Real: the ground-truth composite 'image'; fake:
    the same F and B composited with the predicted alpha.

    Known trimap regions: the generator predicts alpha everywhere, but the prediction used for the
    fake composite, the losses, the visuals and the metrics is ``fill_known(pred_alpha, trimap)``
    (trimap values copied into the known regions). Training so matches test time, where the
    benchmark protocol copies the known pixels too; the composite D sees then differs from the real
    one only in the unknown region, which is what the generator can still change.

    Losses, all over the unknown region only (averaged over its pixels, as Deep Image Matting):
    ``alpha`` (Charbonnier alpha-prediction loss), ``comp`` (compositional loss, RGB on a 0-1 scale,
    eps 1e-6), ``G_GAN`` (non-saturating adversarial loss), optional ``lap`` (Laplacian pyramid,
    ``--lambda_lap`` > 0, listed in ``loss_names`` only then); ``D`` = (real + fake) / 2.

    Test time: visuals 'image', 'trimap', 'alpha' (the prediction at full resolution, known regions
    copied; test.py saves it as ``<stem>_alpha.png``), 'composite' and, with ground truth, 'gt_alpha';
    all in [0, 1] (``visual_value_range``). Batch norm: without test.py's ``--eval`` each image is
    normalised with its own statistics, as every training step at batch size 1 is; ``--eval`` uses
    the running statistics instead (on the synthetic demo both gave a similar SAD).
    """

    visual_value_range = (0.0, 1.0)

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        # Paper: batch size 1, crops of 320 px (from 320 / 480 / 640 px windows, the matting
        # dataset's --crop_sizes default), batch norm, a 70x70 PatchGAN on 4 channels.
        parser.set_defaults(dataset_mode='matting', netG='alphagan', netD='n_layers', n_layers_D=3,
                            norm='batch', input_nc=4, output_nc=1, crop_size=320, load_size=320,
                            batch_size=1)
        MattingModel.add_guidance_option(parser, is_train)
        if is_train:
            # The paper's adversarial objective is the standard GAN one,
            # L_GAN = log D(real) + log(1 - D(C(G(x)))), i.e. --gan_mode vanilla (BCE on logits;
            # the generator uses the usual non-saturating form). No history of fakes (pool 0).
            parser.set_defaults(gan_mode='vanilla', pool_size=0)
            parser.add_argument('--pretrained', action='store_true',
                                help="initialise G's encoder with torchvision's ImageNet ResNet-50 "
                                     '(IMAGENET1K_V1; downloaded, needs the internet or its cache)')
            parser.add_argument('--pretrained_path', default=None,
                                help="initialise G's encoder from this local torchvision resnet50 state "
                                     'dict (torch.save(resnet50(...).state_dict(), path)); implies --pretrained')
            # L = L_alpha + L_comp + L_GAN as the paper writes its objective (weights 1). Deep Image
            # Matting, whose two losses AlphaGAN reuses, weights them 0.5 / 0.5: pass
            # --lambda_alpha 0.5 --lambda_comp 0.5 for that balance.
            parser.add_argument('--lambda_alpha', type=float, default=1.0, help='weight of the alpha-prediction loss')
            parser.add_argument('--lambda_comp', type=float, default=1.0, help='weight of the compositional loss')
            parser.add_argument('--lambda_gan', type=float, default=1.0,
                                help='weight of the adversarial loss (0: D is neither run nor trained)')
            parser.add_argument('--lambda_lap', type=float, default=0.0,
                                help='weight of a Laplacian-pyramid alpha loss (not in the paper; 0 = off)')
        else:
            MattingModel.add_inference_options(parser)   # --tile, --tile_overlap, --max_side
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        if opt.netG != 'alphagan':
            raise UserInputError(f'--model alphagan needs --netG alphagan (got {opt.netG!r}); drop --netG.')
        if opt.input_nc != 4 or opt.output_nc != 1:
            raise UserInputError(f'--model alphagan takes RGB + trimap (--input_nc 4) and predicts alpha '
                                 f'(--output_nc 1); got --input_nc {opt.input_nc} --output_nc {opt.output_nc}. '
                                 'Drop these options.')
        for name in ('lambda_alpha', 'lambda_comp', 'lambda_gan', 'lambda_lap'):
            if self.isTrain and getattr(opt, name) < 0:
                raise UserInputError(f'--{name} must be >= 0, got {getattr(opt, name)}')
        self.visual_names = ['image', 'trimap', 'alpha', 'composite', 'gt_alpha']
        self.model_names = ['G', 'D'] if self.isTrain else ['G']
        # Pretrained encoder weights only for a new training run: at test time and with
        # --continue_train the checkpoint overwrites them anyway (and no download is needed).
        fresh = self.isTrain and not opt.continue_train
        self.netG = networks.define_G(4 + self.guidance_nc, 1, opt.ngf, 'alphagan', opt.norm, False, opt.init_type, opt.init_gain,
                                      self.device, pretrained=fresh and opt.pretrained,
                                      pretrained_path=opt.pretrained_path if fresh else None)
        if self.isTrain:
            self.loss_names = ['G_GAN', 'alpha', 'comp'] + (['lap'] if opt.lambda_lap > 0 else []) + ['D']
            self.netD = networks.define_D(4, opt.ndf, opt.netD, opt.n_layers_D, opt.norm, opt.init_type,
                                          opt.init_gain, self.device)
            self.image_pools = {'fake': ImagePool(opt.pool_size)}
            self.criterionGAN = networks.GANLoss(opt.gan_mode).to(self.device)
            self.opt_G = self.make_optimizer(self.netG)
            self.opt_D = self.make_optimizer(self.netD)
            self.optimizers = [self.opt_G, self.opt_D]

    # ------------------------------------------------------------------ forward
    def generator_input(self):
        """(B, 4, H, W): RGB normalised with ImageNet statistics, then the trimap in {0, 0.5, 1}; with
        ``--guidance known_colours`` (B, 11, H, W): then the nearest known foreground and background
        colours (normalised as the RGB) and their projected alpha in [0, 1]."""
        return torch.cat([self.normalised_rgb(), self.trimap, *self.guidance_channels()], dim=1)

    def forward(self):
        """G on the batch: ``pred_alpha`` (raw output, float32; at test time with ``--max_side`` /
        ``--tile`` as :meth:`MattingModel.run_network` says) and everything derived from it (``derive``)."""
        self.pred_alpha = self.run_network(self.netG, self.generator_input()).float()
        self.derive()

    def derive(self):
        """From ``pred_alpha``: ``unknown`` (B, 1, H, W) bool, ``alpha`` = prediction with the known
        trimap regions copied in, the ``composite`` visual ``alpha I + (1 - alpha) green`` (the input
        colours I stand in for the foreground, so semi-transparent pixels keep some of the original
        background) and, when F and B are known, ``fake_composite`` = alpha F + (1 - alpha) B
        (B, 3, H, W) in [0, 1], what D judges."""
        self.unknown = unknown_region(self.trimap)
        self.alpha = fill_known(self.pred_alpha, self.trimap)
        self.composite = composite(self.alpha, self.image, self.plain_bg)
        self.fake_composite = None
        if self.fg is not None and self.bg is not None:
            self.fake_composite = composite(self.alpha, self.fg, self.bg)

    # ------------------------------------------------------------------ losses
    def generator_losses(self):
        """Set and return ``loss_alpha``, ``loss_comp``, ``loss_G_GAN`` (and ``loss_lap``), weighted
        (name -> tensor). Every term only sees the unknown region: the known pixels of ``alpha``
        are the trimap's."""
        opt = self.opt
        self.loss_alpha = alpha_prediction_loss(self.alpha, self.gt_alpha, self.unknown) * opt.lambda_alpha
        self.loss_comp = composition_loss(self.alpha, self.fg, self.bg, self.image, self.unknown) * opt.lambda_comp
        if opt.lambda_gan > 0:
            fake = discriminator_input(self.fake_composite, self.trimap)
            self.loss_G_GAN = self.criterionGAN(self.netD(fake), True, for_discriminator=False) * opt.lambda_gan
        else:   # no adversarial term: D is not run (nor trained, see optimize_parameters)
            self.loss_G_GAN = self.alpha.new_zeros(())
        if opt.lambda_lap > 0:
            self.loss_lap = laplacian_loss(self.alpha, self.gt_alpha, self.unknown) * opt.lambda_lap
        return {k: getattr(self, 'loss_' + k) for k in self.loss_names if k != 'D'}

    def discriminator_losses(self):
        """D: ground-truth composite -> real, composite of the (detached) prediction -> fake. With
        ``--pool_size`` > 0 the pool keeps whole D inputs, so a past fake keeps its own trimap."""
        real = discriminator_input(self.image, self.trimap)
        fake = self.image_pools['fake'].query(discriminator_input(self.fake_composite.detach(), self.trimap))
        self.loss_D = discriminator_loss(self.criterionGAN, self.netD, real, fake)
        return {'D': self.loss_D}

    def optimize_parameters(self):
        """G step (D frozen), then D step, each through its ``OptimWrapper``. With ``--lambda_gan 0``
        D takes no part (its loss is logged as 0): the recipe is then Deep Image Matting's losses alone."""
        with self.opt_G.context():
            self.forward()
            self.set_requires_grad(self.netD, False)
            losses = self.generator_losses()
        self.opt_G.update(losses)
        self.set_requires_grad(self.netD, True)
        if self.opt.lambda_gan == 0:
            self.loss_D = self.loss_G_GAN
            return
        with self.opt_D.context():
            losses = self.discriminator_losses()
        self.opt_D.update(losses)

    # ------------------------------------------------------------------ test time
    def test(self):
        """Full-resolution inference (G pads to a multiple of 32 and crops back), known trimap regions
        copied into ``alpha``; with ground truth, score every image of the batch (``self.metrics``)."""
        super().test()
        self.score_batch()
