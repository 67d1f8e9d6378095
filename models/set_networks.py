"""InstaGAN's set networks (Mo et al., ICLR 2019): a generator and a discriminator that take an image
together with a *set* of instance masks.

Tensor convention (as the official code, github.com/sangwoomo/instagan):

    input  = torch.cat([image, masks], 1)   # (B, C_img + N, H, W) in [-1, 1]

`image` is (B, C_img, H, W); each of the N mask channels is one instance's mask, (B, 1, H, W) in
[-1, 1] (1 = instance, -1 = background). A slot whose mask is -1 everywhere is EMPTY: it carries no
instance. Emptiness is decided per sample and per slot, so different samples of a batch may hold
different numbers of instances, and N may be 0.

The instance features are aggregated by a SUM over the set, which makes every output invariant to
the order of the mask slots (the mask outputs are permuted with their inputs). Differences from the
official code, all deliberate:

* Batches: the official generator concatenates the instance features of all samples along the batch
  axis and sums over it (with batch > 1 it mixes samples or crashes), and both official networks
  decide emptiness over the whole batch (a slot that is empty for one sample but not for another
  goes through the mask network for both). Here set sums and emptiness are per sample, so each
  sample's output is the one it gets when run alone (with instance norm; batch norm in train mode
  necessarily couples samples).
* Efficiency: the official code runs the mask network once per slot. Here all non-empty masks of the
  whole batch go through the mask encoder (and the mask decoder) in ONE call, as a batch of M
  instances; their features are index_add-ed into per-sample set sums.
* A sample with no instance: the official code then pushes the empty slot 0 through the mask
  network anyway; here its set sum is zero and all its slots pass through unchanged.
* Biases follow :func:`models.networks.uses_bias`, as in the official code with instance norm (convs
  keep their bias) and batch norm (convs before it have none; ``classifier.0`` keeps its bias, as
  there); with ``--norm none``, which the official code cannot build, every conv has a bias.

Submodule names and layer indices are the official ones, so an official generator checkpoint loads
as is; an official discriminator checkpoint needs models/official_convert.py (spectral norm layout).
"""
import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from models.networks import ResnetBlock, upsampling_layer, uses_bias
from models.shift_conv import ShiftSumConv2d


def split_set(inp, input_nc):
    """Split `cat([image, masks], 1)` into its parts.

    Args:
        inp: (B, input_nc + N, H, W) in [-1, 1].
    Returns:
        image (B, input_nc, H, W); masks (B, N, H, W); present (B, N) bool, True where the slot
        holds an instance (its mask is not -1 everywhere); index (2, M) long: the (sample, slot)
        of each of the M non-empty slots, sample-major.
    """
    image, masks = inp[:, :input_nc], inp[:, input_nc:]
    present = (masks > -1).flatten(2).any(-1)
    index = present.nonzero().t()
    return image, masks, present, index


def set_sum(features, sample_index, batch_size):
    """Sum instance features per sample (empty samples get zeros).

    Args:
        features: (M, C, h, w), one row per instance.
        sample_index: (M,) long, the sample each instance belongs to.
    Returns:
        (batch_size, C, h, w).
    """
    total = features.new_zeros((batch_size,) + features.shape[1:])
    return total.index_add(0, sample_index, features)


class ResnetSetGenerator(nn.Module):
    """InstaGAN generator: translates an image and its set of instance masks.

    Input  (B, input_nc + N, H, W) in [-1, 1]: image, then N mask slots (all -1 = empty slot).
    Output (B, output_nc + N, H, W) in [-1, 1]: translated image (tanh), then one translated mask
    (tanh) per non-empty slot; empty slots are returned unchanged (all -1). H, W divisible by 4.

    Encoders (7x7 conv, two stride-2 convs, n_blocks residual blocks) give features of
    C = 4 * ngf channels at (H/4, W/4): `encoder_img` for the image, `encoder_seg` for each mask.
    With f_img the image feature and S = sum of the sample's instance features:
      `decoder_img` sees [f_img, S]            (2C channels) -> image;
      `decoder_seg` sees [f_seg_i, f_img, S]   (3C channels) -> mask i, for every instance i.
    `upsample`: the decoders' x2 upsampling (:func:`models.networks.upsampling_layer`; the default,
    transposed conv, is the official layout).
    """

    def __init__(self, input_nc=3, output_nc=3, ngf=64, norm_layer=nn.InstanceNorm2d, use_dropout=False,
                 n_blocks=9, padding_type='reflect', upsample='transpose'):
        assert n_blocks >= 0
        super().__init__()
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.ngf = ngf
        use_bias = uses_bias(norm_layer)
        n_downsampling = 2
        self.encoder_img = self.get_encoder(input_nc, n_downsampling, ngf, norm_layer, use_dropout, n_blocks,
                                            padding_type, use_bias)
        self.encoder_seg = self.get_encoder(1, n_downsampling, ngf, norm_layer, use_dropout, n_blocks,
                                            padding_type, use_bias)
        self.decoder_img = self.get_decoder(output_nc, n_downsampling, 2 * ngf, norm_layer, use_bias, upsample)
        self.decoder_seg = self.get_decoder(1, n_downsampling, 3 * ngf, norm_layer, use_bias, upsample)

    @staticmethod
    def get_encoder(input_nc, n_downsampling, ngf, norm_layer, use_dropout, n_blocks, padding_type, use_bias):
        """(B, input_nc, H, W) -> (B, ngf * 2**n_downsampling, H / 2**n, W / 2**n)."""
        model = [nn.ReflectionPad2d(3),
                 nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf),
                 nn.ReLU(True)]
        for i in range(n_downsampling):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2),
                      nn.ReLU(True)]
        mult = 2 ** n_downsampling
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                                  use_dropout=use_dropout, use_bias=use_bias)]
        return nn.Sequential(*model)

    @staticmethod
    def get_decoder(output_nc, n_downsampling, ngf, norm_layer, use_bias, upsample='transpose'):
        """(B, ngf * 2**n, h, w) -> (B, output_nc, h * 2**n, w * 2**n) in [-1, 1] (tanh)."""
        model = []
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            model += [upsampling_layer(ngf * mult, ngf * mult // 2, upsample, use_bias),
                      norm_layer(ngf * mult // 2),
                      nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3),
                  ShiftSumConv2d(ngf, output_nc, kernel_size=7, padding=0),   # nn.Conv2d, faster on CPU
                  nn.Tanh()]
        return nn.Sequential(*model)

    def forward(self, inp):
        """(B, input_nc + N, H, W) in [-1, 1] -> (B, output_nc + N, H, W) in [-1, 1]."""
        image, masks, _, (b, k) = split_set(inp, self.input_nc)
        batch_size = image.shape[0]
        enc_img = self.encoder_img(image)                          # (B, C, h, w)
        # Every non-empty mask of the batch in one call: (M, 1, H, W) -> (M, C, h, w).
        enc_segs = self.encoder_seg(masks[b, k].unsqueeze(1))
        enc_sum = set_sum(enc_segs, b, batch_size)                 # (B, C, h, w)

        out_img = self.decoder_img(torch.cat([enc_img, enc_sum], 1))
        out_segs = self.decoder_seg(torch.cat([enc_segs, enc_img[b], enc_sum[b]], 1))  # (M, 1, H, W)
        # Translated masks into their slots; empty slots keep the input (all -1).
        out_masks = masks.index_put((b, k), out_segs[:, 0].to(masks.dtype))
        return torch.cat([out_img, out_masks], 1)


class NLayerSetDiscriminator(nn.Module):
    """InstaGAN PatchGAN discriminator on an image and its set of instance masks.

    Input (B, input_nc + N, H, W) in [-1, 1] (all -1 = empty slot, ignored). Output: (B, 1, h', w')
    patch scores (raw, or in (0, 1) with use_sigmoid), e.g. 6x6 for 64x64 input with n_layers=3.

    `feature_img` / `feature_seg`: the first n_layers convs of a PatchGAN (4x4, stride 2), giving
    ndf * min(2**(n_layers-1), 8) channels; the instance features are summed per sample;
    `classifier`: the last two PatchGAN convs (stride 1) on [image feature, set sum]. Every conv is
    spectrally normalised with torch.nn.utils.parametrizations.spectral_norm (one power iteration
    per forward, in train mode only; see models/official_convert.py for how the official wrapper
    differs).
    """

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm_layer=nn.InstanceNorm2d, use_sigmoid=False):
        super().__init__()
        self.input_nc = input_nc
        use_bias = uses_bias(norm_layer)
        kw, padw = 4, 1
        self.feature_img = self.get_feature_extractor(input_nc, ndf, n_layers, kw, padw, norm_layer, use_bias)
        self.feature_seg = self.get_feature_extractor(1, ndf, n_layers, kw, padw, norm_layer, use_bias)
        self.classifier = self.get_classifier(2 * ndf, n_layers, kw, padw, norm_layer, use_sigmoid)

    @staticmethod
    def get_feature_extractor(input_nc, ndf, n_layers, kw, padw, norm_layer, use_bias):
        """(B, input_nc, H, W) -> (B, ndf * min(2**(n_layers-1), 8), H / 2**n_layers, W / 2**n_layers)."""
        model = [spectral_norm(nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw)),
                 nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            model += [spectral_norm(nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2,
                                              padding=padw, bias=use_bias)),
                      norm_layer(ndf * nf_mult),
                      nn.LeakyReLU(0.2, True)]
        return nn.Sequential(*model)

    @staticmethod
    def get_classifier(ndf, n_layers, kw, padw, norm_layer, use_sigmoid):
        """(B, ndf * min(2**(n_layers-1), 8), h, w) -> (B, 1, h - 2, w - 2). `ndf` is twice the
        network's ndf here (image and set features are concatenated)."""
        nf_mult_prev = min(2 ** (n_layers - 1), 8)
        nf_mult = min(2 ** n_layers, 8)
        model = [spectral_norm(nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1,
                                         padding=padw)),
                 norm_layer(ndf * nf_mult),
                 nn.LeakyReLU(0.2, True),
                 spectral_norm(nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw))]
        if use_sigmoid:
            model += [nn.Sigmoid()]
        return nn.Sequential(*model)

    def forward(self, inp):
        """(B, input_nc + N, H, W) in [-1, 1] -> (B, 1, h', w') patch scores."""
        image, masks, _, (b, _k) = split_set(inp, self.input_nc)
        feat_img = self.feature_img(image)
        feat_segs = self.feature_seg(masks[b, _k].unsqueeze(1))   # all instances of the batch at once
        feat_sum = set_sum(feat_segs, b, image.shape[0])
        return self.classifier(torch.cat([feat_img, feat_sum], 1))
