"""Deep Image Matting networks (Xu, Price, Cohen & Huang, "Deep Image Matting", CVPR 2017).

:class:`DIMNet` is the encoder-decoder and, from training stage 2 on, the refinement stage:

* encoder: VGG-16's 13 convolutions (``conv1_1`` ... ``conv5_3``, 3x3, ReLU), ``conv1_1`` widened
  to 4 inputs (ImageNet-normalised RGB + trimap), five 2x2 max-pools that keep their indices, and
  a 14th convolution ``conv6_1`` (512 -> 512, ReLU);
* decoder: ``deconv6_1`` (1x1), then five max-unpoolings with the encoder's indices, each followed
  by a 5x5 convolution (``deconv5_1`` ... ``deconv1_1``, ReLU), and the alpha prediction layer
  ``deconv1`` (5x5 -> 1 channel); the raw alpha is ``sigmoid(deconv1(...))``;
* refinement: ``[RGB, raw alpha]`` in, ``refine_conv1..3`` (3x3, 64 channels, ReLU) and
  ``refine_pred`` (3x3 -> 1, no activation), no down-sampling; its output is added to the raw
  prediction.

Parameter names are those of the widely used PyTorch port (github huochaitiantang/
pytorch-deep-image-matting, ``core/net.py``), so its ``state_dict`` loads as it is. Where the port
departs from the paper, the choice is an argument (the model's options name them):

=================  ================================  ==========================================
argument           paper (default)                   port (since 2020-09-09)
=================  ================================  ==========================================
``skip``           False: no skip connections        True: each unpooled map + the encoder's
                                                     post-ReLU feature of that size
``conv6_kernel``   1 (the paper gives no size; the   3 (1 in the port's releases before
                   port's first reading)             2019-09-09)
``refine_on``      ``'alpha'``: clamp(alpha + r,     ``'logit'``: sigmoid(logit + r)
                   0, 1)
=================  ================================  ==========================================

The refinement's RGB input is the network's own RGB input (ImageNet-normalised) in both modes:
the port's choice, and the paper says only "the image".
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.matting_networks import pad_to_multiple
from util.errors import UserInputError

# Five 2x2 poolings: H and W must be multiples of 32 (forward pads up to that and crops back).
SIZE_MULTIPLE = 32

# (name, in, out) of the 13 VGG-16 convolutions, in order; a pool follows the last of each block.
VGG16_BLOCKS = (
    (('conv1_1', 4, 64), ('conv1_2', 64, 64)),
    (('conv2_1', 64, 128), ('conv2_2', 128, 128)),
    (('conv3_1', 128, 256), ('conv3_2', 256, 256), ('conv3_3', 256, 256)),
    (('conv4_1', 256, 512), ('conv4_2', 512, 512), ('conv4_3', 512, 512)),
    (('conv5_1', 512, 512), ('conv5_2', 512, 512), ('conv5_3', 512, 512)),
)
# Index of each conv in torchvision's ``vgg16().features`` (ReLUs and pools in between).
TORCHVISION_VGG16_INDEX = dict(zip((name for block in VGG16_BLOCKS for name, _, _ in block),
                                   (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))
# (name, in, out) of the decoder's 5x5 convolutions, one after each unpooling (deepest first).
DECODER = (('deconv5_1', 512, 512), ('deconv4_1', 512, 256), ('deconv3_1', 256, 128),
           ('deconv2_1', 128, 64), ('deconv1_1', 64, 64))
REFINE_NAMES = ('refine_conv1', 'refine_conv2', 'refine_conv3', 'refine_pred')
REFINE_MODES = ('alpha', 'logit')


def caffe_xavier_(conv):
    """Caffe's ``xavier`` filler, which the paper's layers were initialised with: weights uniform in
    +-sqrt(3 / fan_in) (variance 1 / fan_in), biases 0."""
    fan_in = conv.weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        conv.weight.uniform_(-bound, bound)
        conv.bias.zero_()


class DIMNet(nn.Module):
    """(B, 4 + guidance_nc, H, W) [normalised RGB, trimap, guidance] -> (raw alpha, refined alpha or
    None), each (B, 1, H, W).

    Args:
        guidance_nc: extra input channels after the trimap into ``conv1_1`` (0 = the paper), e.g.
            the known-colour guidance of ``models/matting_guidance.py`` (7).
        skip: add the encoder's feature maps to the unpooled decoder maps (the port; not the paper).
        conv6_kernel: 1 or 3, the kernel of ``conv6_1`` (padding 0 / 1).
        refine_on: ``'alpha'`` (paper: ``clamp(raw_alpha + r, 0, 1)``) or ``'logit'`` (port:
            ``sigmoid(raw_logit + r)``).
        refinement: build the refinement layers (training stages 2 and 3; a stage-1 network and
            its checkpoints have none). :meth:`drop_refinement` removes them.

    All layers are initialised with Caffe's xavier filler (:func:`caffe_xavier_`);
    :meth:`load_vgg16` puts ImageNet weights into the 13 encoder convolutions.
    """

    def __init__(self, skip=False, conv6_kernel=1, refine_on='alpha', refinement=True, guidance_nc=0):
        super().__init__()
        if conv6_kernel not in (1, 3):
            raise UserInputError(f'DIM: conv6_1 kernel must be 1 or 3, got {conv6_kernel}')
        if refine_on not in REFINE_MODES:
            raise UserInputError(f'DIM: refine_on must be one of {REFINE_MODES}, got {refine_on!r}')
        self.skip, self.conv6_kernel, self.refine_on = skip, conv6_kernel, refine_on
        self.in_channels = 4 + guidance_nc
        for block in VGG16_BLOCKS:
            for name, cin, cout in block:
                setattr(self, name, nn.Conv2d(self.in_channels if name == 'conv1_1' else cin, cout, 3, padding=1))
        self.conv6_1 = nn.Conv2d(512, 512, conv6_kernel, padding=conv6_kernel // 2)
        self.deconv6_1 = nn.Conv2d(512, 512, 1)
        for name, cin, cout in DECODER:
            setattr(self, name, nn.Conv2d(cin, cout, 5, padding=2))
        self.deconv1 = nn.Conv2d(64, 1, 5, padding=2)
        self.refinement = refinement
        if refinement:
            self.refine_conv1 = nn.Conv2d(4, 64, 3, padding=1)
            self.refine_conv2 = nn.Conv2d(64, 64, 3, padding=1)
            self.refine_conv3 = nn.Conv2d(64, 64, 3, padding=1)
            self.refine_pred = nn.Conv2d(64, 1, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                caffe_xavier_(m)

    # ------------------------------------------------------------------ parts
    def encoder_decoder_parameters(self):
        """Parameters of the encoder-decoder (everything but the refinement)."""
        return [p for n, p in self.named_parameters() if not n.startswith('refine_')]

    def refinement_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith('refine_')]

    def drop_refinement(self):
        """Remove the refinement layers (a stage-1 network); forward then returns (raw, None)."""
        for name in REFINE_NAMES:
            if hasattr(self, name):
                delattr(self, name)
        self.refinement = False

    def load_vgg16(self, state_dict, source):
        """Load a ``torchvision.models.vgg16`` state dict (``features.<i>.weight/bias``) into the 13
        encoder convolutions. ``conv1_1`` takes the RGB weights and zeros for the trimap (and guidance) channels;
        ``classifier.*`` is not used (``conv6_1`` stays xavier-initialised, as in the port).
        Raises :class:`UserInputError` naming ``source`` if it is not a VGG-16 state dict."""
        fix = 'pass the state dict of a torchvision vgg16 (torch.save(vgg16(...).state_dict(), path))'
        own = self.state_dict()
        state = {}
        for name, index in TORCHVISION_VGG16_INDEX.items():
            for part in ('weight', 'bias'):
                key = f'features.{index}.{part}'
                value = state_dict.get(key) if isinstance(state_dict, dict) else None
                if not torch.is_tensor(value):
                    raise UserInputError(f'{source}: no tensor {key} ({name}.{part}); {fix}.')
                target = own[f'{name}.{part}']
                if name == 'conv1_1' and part == 'weight':
                    if tuple(value.shape) != (64, 3, 3, 3):
                        raise UserInputError(f'{source}: {key} has shape {tuple(value.shape)}, not '
                                             f'(64, 3, 3, 3); {fix}.')
                    value = torch.cat([value, value.new_zeros(64, self.in_channels - 3, 3, 3)], dim=1)
                if value.shape != target.shape:
                    raise UserInputError(f'{source}: {key} has shape {tuple(value.shape)}, {name}.{part} '
                                         f'needs {tuple(target.shape)}; {fix}.')
                state[f'{name}.{part}'] = value.to(target.dtype)
        self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ forward
    def forward(self, x):
        """x: (B, 4 + guidance_nc, H, W), channels 0-2 RGB normalised with ImageNet statistics, 3 the
        trimap (the model class encodes it), then the guidance. Any H, W: padded (reflection) to
        multiples of 32, outputs cropped.

        Returns ``(raw, refined)``: raw = sigmoid(deconv1(...)) (B, 1, H, W) in (0, 1); refined
        (B, 1, H, W) in [0, 1], or None without refinement layers."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'DIMNet expects (B, {self.in_channels}, H, W) RGB + trimap'
                             f'{" + guidance" if self.in_channels > 4 else ""}, got {tuple(x.shape)}')
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, SIZE_MULTIPLE)
        y, skips, indices = x, [], []
        for block in VGG16_BLOCKS:
            for name, _, _ in block:
                y = F.relu(getattr(self, name)(y))
            skips.append(y)
            y, idx = F.max_pool2d(y, kernel_size=2, stride=2, return_indices=True)
            indices.append(idx)
        y = F.relu(self.conv6_1(y))
        y = F.relu(self.deconv6_1(y))
        for (name, _, _), idx, feature in zip(DECODER, reversed(indices), reversed(skips)):
            y = F.max_unpool2d(y, idx, kernel_size=2, stride=2, output_size=feature.shape[-2:])
            if self.skip:
                y = y + feature
            y = F.relu(getattr(self, name)(y))
        logit = self.deconv1(y)
        raw = torch.sigmoid(logit)
        refined = None
        if self.refinement:
            r = torch.cat([x[:, :3], raw], dim=1)
            r = F.relu(self.refine_conv1(r))
            r = F.relu(self.refine_conv2(r))
            r = F.relu(self.refine_conv3(r))
            r = self.refine_pred(r)
            refined = torch.sigmoid(logit + r) if self.refine_on == 'logit' else (raw + r).clamp(0.0, 1.0)
            refined = refined[..., :h, :w]
        return raw[..., :h, :w], refined
