"""Generic building blocks: norm layers, weight init, LR schedulers, the CycleGAN generators and
discriminators, and the GAN objective. Model-specific networks live in ``set_networks.py``
(InstaGAN) and ``matting_networks.py`` (AlphaGAN); ``define_G`` / ``define_D`` dispatch to them."""
import functools

import torch
import torch.nn as nn
from torch.nn import init
from torch.optim import lr_scheduler

from models.instance_norm import InstanceNorm2d
from models.shift_conv import ShiftSumConv2d


# ----------------------------------------------------------------------------- helpers
def get_norm_layer(norm_type='instance', instance_affine=False):
    """A constructor ``norm(num_features)``: batch | sync_batch | instance | none.

    Batch norm (``sync_batch`` too; the training code converts it to SyncBatchNorm) is affine and
    tracks running statistics. Instance norm tracks none and, by default, has no affine parameters
    (CycleGAN's and the official InstaGAN's choice); ``instance_affine=True`` gives it a per-channel
    scale and shift (AlphaGAN: they take the pretrained encoder's batch-norm weights)."""
    if norm_type in ('batch', 'sync_batch'):
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == 'instance':   # nn.InstanceNorm2d with a faster CPU path (models/instance_norm.py)
        return functools.partial(InstanceNorm2d, affine=instance_affine, track_running_stats=False)
    if norm_type == 'none':
        return lambda num_features: nn.Identity()
    raise ValueError(f'normalization layer {norm_type!r} is not one of batch, sync_batch, instance, none')


def uses_bias(norm_layer):
    """Whether a conv followed by ``norm_layer`` (a constructor, e.g. from :func:`get_norm_layer`)
    needs a bias: not before batch norm (its affine shift does that job), yes before instance norm
    (the official InstaGAN and CycleGAN rule, so their checkpoints' bias keys are ours) and before
    no normalisation at all."""
    base = norm_layer.func if isinstance(norm_layer, functools.partial) else norm_layer
    return not (isinstance(base, type) and issubclass(base, nn.modules.batchnorm._BatchNorm))


class LinearDecay:
    """LR factor: 1 for ``n_epochs`` epochs, then linear decay to 0 over ``n_epochs_decay``.
    A class (not a lambda) so that schedulers pickle and their state loads with weights_only."""

    def __init__(self, epoch_count, n_epochs, n_epochs_decay):
        self.epoch_count, self.n_epochs, self.n_epochs_decay = epoch_count, n_epochs, n_epochs_decay

    def __call__(self, epoch):
        return 1.0 - max(0, epoch + self.epoch_count - self.n_epochs) / float(self.n_epochs_decay + 1)


def get_scheduler(optimizer, opt):
    """LR scheduler for ``opt.lr_policy``: linear | step | plateau | cosine. Stepped once per epoch."""
    if opt.lr_policy == 'linear':
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=LinearDecay(opt.epoch_count, opt.n_epochs,
                                                                       opt.n_epochs_decay))
    if opt.lr_policy == 'step':
        return lr_scheduler.StepLR(optimizer, step_size=opt.lr_decay_iters, gamma=0.1)
    if opt.lr_policy == 'plateau':
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode='min', factor=0.2, threshold=0.01, patience=5)
    if opt.lr_policy == 'cosine':
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=opt.n_epochs + opt.n_epochs_decay, eta_min=0)
    raise ValueError(f'learning rate policy {opt.lr_policy!r} is not one of linear, step, plateau, cosine')


def init_weights(net, init_type='normal', init_gain=0.02):
    """Initialise conv and linear weights (normal | xavier | kaiming | orthogonal), biases to 0, and
    batch-norm weights from N(1, init_gain). Spectral-normalised convs initialise their raw weight."""

    def init_func(m):
        classname = m.__class__.__name__
        weight = getattr(m, 'weight', None)
        if hasattr(m, 'parametrizations') and hasattr(m.parametrizations, 'weight'):
            weight = m.parametrizations.weight.original
        if weight is not None and ('Conv' in classname or 'Linear' in classname):
            if init_type == 'normal':
                init.normal_(weight, 0.0, init_gain)
            elif init_type == 'xavier':
                init.xavier_normal_(weight, gain=init_gain)
            elif init_type == 'kaiming':
                init.kaiming_normal_(weight, a=0, mode='fan_in')
            elif init_type == 'orthogonal':
                init.orthogonal_(weight, gain=init_gain)
            else:
                raise ValueError(f'initialization method {init_type!r} is not implemented')
            if getattr(m, 'bias', None) is not None:
                init.constant_(m.bias, 0.0)
        elif 'BatchNorm2d' in classname and weight is not None:
            init.normal_(weight, 1.0, init_gain)
            init.constant_(m.bias, 0.0)

    with torch.no_grad():
        net.apply(init_func)


def init_net(net, init_type='normal', init_gain=0.02, device='cpu', init=True):
    """Move ``net`` to ``device`` and initialise it (``init=False`` keeps the module's own init,
    e.g. a pretrained encoder)."""
    net.to(device)
    if init:
        init_weights(net, init_type, init_gain)
    return net


# ----------------------------------------------------------------------------- generators
UPSAMPLE_MODES = ('transpose', 'resize', 'resize_bilinear')


def upsampling_layer(in_nc, out_nc, mode='transpose', use_bias=True):
    """x2 upsampling conv of the ResNet decoders: (B, in_nc, h, w) -> (B, out_nc, 2h, 2w).

    ``transpose``: ConvTranspose2d(3, stride 2), CycleGAN's and the official InstaGAN's (their
    checkpoints' keys); ``resize`` / ``resize_bilinear``: nearest / bilinear x2 resize, then a 3x3
    conv ("resize-convolution", Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts",
    Distill 2016): every output pixel sees the same number of kernel taps, so no checkerboard."""
    if mode == 'transpose':
        return nn.ConvTranspose2d(in_nc, out_nc, kernel_size=3, stride=2, padding=1, output_padding=1, bias=use_bias)
    if mode in ('resize', 'resize_bilinear'):
        resize = nn.Upsample(scale_factor=2, mode='nearest') if mode == 'resize' else \
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
        return nn.Sequential(resize, nn.Conv2d(in_nc, out_nc, kernel_size=3, padding=1, bias=use_bias))
    raise ValueError(f'upsampling {mode!r} is not one of {", ".join(UPSAMPLE_MODES)}')


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-(dropout)-conv-norm(x): (B, dim, H, W) -> (B, dim, H, W).

    ``padding_type``: reflect | replicate | zero. The layer layout, hence the state-dict keys
    ``conv_block.<i>.*``, is CycleGAN's and the official InstaGAN's."""

    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        pads = {'reflect': nn.ReflectionPad2d, 'replicate': nn.ReplicationPad2d, 'zero': None}
        if padding_type not in pads:
            raise ValueError(f'padding {padding_type!r} is not one of reflect, replicate, zero')
        pad = pads[padding_type]
        layers = []
        for i in range(2):
            if pad:
                layers.append(pad(1))
            layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=0 if pad else 1, bias=use_bias), norm_layer(dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-out.

    (B, input_nc, H, W) in [-1, 1] -> (B, output_nc, H, W) in [-1, 1] (tanh); H, W multiples of 4.
    ``upsample``: the u-layers' x2 upsampling (:func:`upsampling_layer`; default transposed conv).
    """

    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                 padding_type='reflect', upsample='transpose'):
        super().__init__()
        use_bias = uses_bias(norm_layer)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            model.append(ResnetBlock(ngf * 4, padding_type, norm_layer, use_dropout, use_bias))
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [upsampling_layer(ngf * mult, ngf * mult // 2, upsample, use_bias),
                      norm_layer(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), ShiftSumConv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down, the inner levels, up, and the skip connection (concatenation)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = uses_bias(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), norm_layer(inner_nc)
        uprelu, upnorm = nn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net generator with ``num_downs`` levels: (B, input_nc, H, W) -> (B, output_nc, H, W) in
    [-1, 1]; H and W must be multiples of 2 ** num_downs (unet_256: 8 levels)."""

    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm_layer=norm_layer, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)


# ----------------------------------------------------------------------------- discriminators
class NLayerDiscriminator(nn.Module):
    """PatchGAN: (B, input_nc, H, W) -> (B, 1, h, w) patch scores (70x70 receptive field at n_layers=3)."""

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = uses_bias(norm_layer)
        kw, padw = 4, 1
        seq = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            mult_prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            seq += [nn.Conv2d(ndf * mult_prev, ndf * mult, kernel_size=kw, stride=stride, padding=padw,
                              bias=use_bias),
                    norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        seq.append(nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw))
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN (pixelGAN): (B, input_nc, H, W) -> (B, 1, H, W)."""

    def __init__(self, input_nc, ndf=64, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = uses_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=use_bias), norm_layer(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=use_bias))

    def forward(self, x):
        return self.net(x)


# ----------------------------------------------------------------------------- factories
def define_G(input_nc, output_nc, ngf, netG, norm='batch', use_dropout=False, init_type='normal', init_gain=0.02,
             device='cpu', **kwargs):
    """Build and initialise a generator: resnet_9blocks | resnet_6blocks | unet_128 | unet_256 | set |
    alphagan. ``kwargs`` go to the model-specific constructors (e.g. ``pretrained`` for alphagan;
    ``upsample`` for the ResNet and set generators, see :func:`upsampling_layer`)."""
    norm_layer = get_norm_layer(norm)
    do_init = True
    upsample = kwargs.get('upsample', 'transpose')
    if netG == 'resnet_9blocks':
        net = ResnetGenerator(input_nc, output_nc, ngf, norm_layer=norm_layer, use_dropout=use_dropout, n_blocks=9,
                              upsample=upsample)
    elif netG == 'resnet_6blocks':
        net = ResnetGenerator(input_nc, output_nc, ngf, norm_layer=norm_layer, use_dropout=use_dropout, n_blocks=6,
                              upsample=upsample)
    elif netG == 'unet_128':
        net = UnetGenerator(input_nc, output_nc, 7, ngf, norm_layer=norm_layer, use_dropout=use_dropout)
    elif netG == 'unet_256':
        net = UnetGenerator(input_nc, output_nc, 8, ngf, norm_layer=norm_layer, use_dropout=use_dropout)
    elif netG == 'set':
        from models.set_networks import ResnetSetGenerator
        net = ResnetSetGenerator(input_nc, output_nc, ngf, norm_layer=norm_layer, use_dropout=use_dropout,
                                 n_blocks=kwargs.get('n_blocks', 9), upsample=upsample)
    elif netG == 'alphagan':
        from models.matting_networks import AlphaGANGenerator
        net = AlphaGANGenerator(pretrained=kwargs.get('pretrained', False),
                                pretrained_path=kwargs.get('pretrained_path'), norm=norm, width=ngf,
                                guidance_nc=input_nc - 4)
        do_init = False   # torchvision's ResNet init (or ImageNet weights); PyTorch's defaults elsewhere
    else:
        raise ValueError(f'generator {netG!r} is not one of resnet_9blocks, resnet_6blocks, unet_128, unet_256, '
                         'set, alphagan')
    return init_net(net, init_type, init_gain, device, init=do_init)


def define_D(input_nc, ndf, netD, n_layers_D=3, norm='batch', init_type='normal', init_gain=0.02, device='cpu'):
    """Build and initialise a discriminator: basic (70x70 PatchGAN) | n_layers | pixel | set."""
    norm_layer = get_norm_layer(norm)
    if netD == 'basic':
        net = NLayerDiscriminator(input_nc, ndf, n_layers=3, norm_layer=norm_layer)
    elif netD == 'n_layers':
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_layer=norm_layer)
    elif netD == 'pixel':
        net = PixelDiscriminator(input_nc, ndf, norm_layer=norm_layer)
    elif netD == 'set':
        from models.set_networks import NLayerSetDiscriminator
        net = NLayerSetDiscriminator(input_nc, ndf, n_layers_D, norm_layer=norm_layer)
    else:
        raise ValueError(f'discriminator {netD!r} is not one of basic, n_layers, pixel, set')
    return init_net(net, init_type, init_gain, device)


# ----------------------------------------------------------------------------- objective
class GANLoss(nn.Module):
    """GAN objectives on discriminator outputs of any shape.

    lsgan: MSE to 1 (real) / 0 (fake); vanilla: BCE with logits; hinge: for D
    relu(1 - x) on real and relu(1 + x) on fake, for G -x (``for_discriminator=False``).
    """

    def __init__(self, gan_mode='lsgan', target_real_label=1.0, target_fake_label=0.0):
        super().__init__()
        if gan_mode not in ('lsgan', 'vanilla', 'hinge'):
            raise ValueError(f'gan mode {gan_mode!r} is not one of lsgan, vanilla, hinge')
        self.gan_mode = gan_mode
        self.register_buffer('real_label', torch.tensor(target_real_label))
        self.register_buffer('fake_label', torch.tensor(target_fake_label))

    def forward(self, prediction, target_is_real, for_discriminator=True):
        prediction = prediction.float()
        if self.gan_mode == 'hinge':
            if not for_discriminator:
                return -prediction.mean()
            sign = -1.0 if target_is_real else 1.0
            return torch.relu(1.0 + sign * prediction).mean()
        label = self.real_label if target_is_real else self.fake_label
        target = label.to(prediction.device).expand_as(prediction)
        if self.gan_mode == 'lsgan':
            return nn.functional.mse_loss(prediction, target)
        return nn.functional.binary_cross_entropy_with_logits(prediction, target)


def count_parameters(net):
    """Number of parameters of ``net`` (millions are printed by ``BaseModel.print_networks``)."""
    return sum(p.numel() for p in net.parameters())

