"""AlphaGAN generator (Lutz, Amplianitis & Smolic, "AlphaGAN: Generative adversarial networks for
natural image matting", BMVC 2018).

The generator is an encoder-decoder:

* encoder: ResNet-50 (torchvision layout) whose first convolution takes 4 channels (RGB + trimap),
  whose 3x3 max-pool returns its indices, and whose conv4_x / conv5_x stages (``layer3`` /
  ``layer4``) use dilation 2 / 4 instead of striding, so the deepest features are at 1/8 of the
  input resolution (output stride 8);
* ASPP (DeepLab v3) on conv5_x: 1x1, 3x3 at rates 6/12/18 and image pooling, 256 channels each,
  concatenated and projected to 256 channels;
* decoder: bilinear x2 (1/8 -> 1/4) + skip from conv2_x, max-unpooling with the encoder's pooling
  indices (1/4 -> 1/2) + skip from conv1, transposed convolution (1/2 -> 1/1) + the input RGB,
  3x3 convolutions, a final 3x3 convolution to one channel and a sigmoid.

The discriminator of AlphaGAN is the generic PatchGAN ``NLayerDiscriminator(input_nc=4)`` in
``models/networks.py``, applied to ``[composite, trimap]``.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.networks import get_norm_layer
from util import checkpoint
from util.errors import UserInputError

# Normalisation the generator's RGB input must have (torchvision ImageNet statistics, RGB order),
# applied by the model class to images in [0, 1]: rgb_in = (rgb - IMAGENET_MEAN) / IMAGENET_STD.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# forward() pads H and W up to a multiple of this (output stride 8 with exact x2 steps; 32 keeps
# every stage's size even, as in the paper's training crops).
SIZE_MULTIPLE = 32


def conv_norm_relu(in_channels, out_channels, kernel_size, norm_layer, dilation=1):
    """Conv (no bias) -> norm -> ReLU; 'same' padding for odd kernel sizes; spatial size kept."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )


class ResNet50Encoder(nn.Module):
    """ResNet-50 encoder with a 4-channel input, pooling indices and output stride 8.

    Parameter names are those of ``torchvision.models.resnet50`` (``conv1``, ``bn1``,
    ``layer1`` ... ``layer4``; ``avgpool`` / ``fc`` are dropped), so a torchvision state dict loads
    after widening ``conv1.weight`` (see :meth:`load_torchvision_state_dict`).

    Dilation: torchvision's ``replace_stride_with_dilation=[False, True, True]`` gives every block
    after the first of ``layer3`` dilation 2 and of ``layer4`` dilation 4, but leaves the first block
    of each stage at the previous stage's dilation (1 and 2). As in the paper's architecture table,
    here every block of ``layer3`` has dilation 2 and every block of ``layer4`` dilation 4: the
    first block's 3x3 ``conv2`` (where torchvision would put the stride) is given the stage's
    dilation and matching padding. Weight shapes are unchanged.
    """

    STAGE_DILATION = {"layer3": 2, "layer4": 4}

    def __init__(self, norm_layer=nn.BatchNorm2d, width=64, in_channels=4):
        super().__init__()
        if width == 64:
            resnet = torchvision.models.resnet50(
                weights=None, replace_stride_with_dilation=[False, True, True], norm_layer=norm_layer
            )
        else:
            resnet = _ScaledResNet50(width, replace_stride_with_dilation=[False, True, True], norm_layer=norm_layer)
        self.width = width
        # conv1 widened to RGB + trimap (+ guidance channels); same initialisation as torchvision's.
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = resnet.bn1 if width == 64 else norm_layer(width)
        self.relu = resnet.relu
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, return_indices=True)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        # Memory format of the features after the max-pool (the inference copy of AlphaGANGenerator
        # sets channels_last; conv1 and the pooling indices are always computed as here).
        self.features_memory_format = torch.contiguous_format
        for name, dilation in self.STAGE_DILATION.items():
            first_conv = getattr(self, name)[0].conv2
            first_conv.dilation = (dilation, dilation)
            first_conv.padding = (dilation, dilation)

    def forward(self, x):
        """Encode ``x``: (B, 4, H, W), H and W multiples of 8 (RGB normalised, trimap in {0, .5, 1}).

        Returns a dict of features (channel counts for ``width`` 64; ``width / 64`` times these otherwise):
            ``conv1``: (B, 64, H/2, W/2) after conv1 + norm + ReLU (before pooling);
            ``pool_indices``: (B, 64, H/4, W/4) int64 max-pool indices into ``conv1``;
            ``conv2_x``: (B, 256, H/4, W/4) (``layer1``);
            ``conv3_x``: (B, 512, H/8, W/8) (``layer2``);
            ``conv4_x``: (B, 1024, H/8, W/8) (``layer3``, dilation 2);
            ``conv5_x``: (B, 2048, H/8, W/8) (``layer4``, dilation 4).
        """
        conv1 = self.relu(self.bn1(self.conv1(x)))
        pooled, indices = self.maxpool(conv1)
        pooled = pooled.contiguous(memory_format=self.features_memory_format)
        conv2 = self.layer1(pooled)
        conv3 = self.layer2(conv2)
        conv4 = self.layer3(conv3)
        conv5 = self.layer4(conv4)
        return {
            "conv1": conv1,
            "pool_indices": indices,
            "conv2_x": conv2,
            "conv3_x": conv3,
            "conv4_x": conv4,
            "conv5_x": conv5,
        }

    def load_torchvision_state_dict(self, state_dict, source):
        """Load a ``torchvision.models.resnet50`` state dict (ImageNet weights or a local file).

        ``conv1.weight`` (64, 3, 7, 7) fills the RGB input channels; the trimap (and any guidance)
        channels' weights are set to zero, so at the start of training the network sees the image exactly as the
        pretrained ResNet did. ``fc.*`` is ignored; with a norm that has no running statistics the
        file's ``running_mean`` / ``running_var`` / ``num_batches_tracked`` are ignored too.
        ``source`` names the weights in error messages. Raises :class:`UserInputError` if the dict
        is not a ResNet-50 state dict.
        """
        fix = "pass the state dict of a torchvision resnet50 (torch.save(resnet50(...).state_dict(), path))"
        if self.width != 64:
            raise UserInputError(f"{source}: ImageNet ResNet-50 weights need the full-width encoder "
                                 f"(--ngf 64), not --ngf {self.width}.")
        if not checkpoint.is_state_dict(state_dict):
            raise UserInputError(f"{source} is not a state dict (a dict of tensors); {fix}.")
        own = self.state_dict()
        stat_suffixes = ("running_mean", "running_var", "num_batches_tracked")
        state = {}
        for key, value in state_dict.items():
            if key.startswith("fc."):
                continue
            if key not in own and key.endswith(stat_suffixes):
                continue
            state[key] = value
        conv1 = state.get("conv1.weight")
        if conv1 is None or tuple(conv1.shape) != (64, 3, 7, 7):
            shape = None if conv1 is None else tuple(conv1.shape)
            raise UserInputError(f"{source}: conv1.weight should have shape (64, 3, 7, 7), found {shape}; {fix}.")
        widened = torch.zeros_like(own["conv1.weight"])
        widened[:, :3] = conv1.to(widened.dtype)
        state["conv1.weight"] = widened
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise UserInputError(
                f"{source} does not match ResNet-50: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; {fix}."
            )
        wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if wrong:
            k = wrong[0]
            raise UserInputError(
                f"{source}: {k} has shape {tuple(state[k].shape)}, ResNet-50 needs {tuple(own[k].shape)}; {fix}."
            )
        self.load_state_dict(state, strict=True)


class _ScaledResNet50(torchvision.models.ResNet):
    """torchvision's ResNet-50 with every stage ``width / 64`` times as wide (base width ``width``
    instead of 64; the bottleneck expansion 4 kept): the same blocks, dilations and parameter names,
    about ``(width / 64)^2`` of the compute. For training from random initialisation only."""

    def __init__(self, width, **kwargs):
        self._scale = width / 64
        self._first = True
        super().__init__(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], **kwargs)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if self._first:   # conv1's output (64 in torchvision) is the first stage's input
            self.inplanes, self._first = int(64 * self._scale), False
        return super()._make_layer(block, max(1, int(planes * self._scale)), blocks, stride, dilate)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3) on conv5_x.

    Branches: 1x1 conv; 3x3 convs at ``rates`` (6, 12, 18); image pooling (global average -> 1x1
    conv -> ReLU, broadcast back). Each gives ``out_channels`` (256); they are concatenated and
    projected by a 1x1 conv + norm + ReLU to ``out_channels``.

    The image-pooling branch has a bias and no normalisation: its features are 1x1, so BatchNorm
    would normalise over the batch alone and fails with batch size 1 (the paper trains with
    batch size 1); InstanceNorm over one pixel would zero it.
    """

    def __init__(self, in_channels=2048, out_channels=256, rates=(6, 12, 18), norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_norm_relu(in_channels, out_channels, 1, norm_layer)]
            + [conv_norm_relu(in_channels, out_channels, 3, norm_layer, dilation=r) for r in rates]
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True)
        )
        self.project = conv_norm_relu(out_channels * (len(rates) + 2), out_channels, 1, norm_layer)

    def forward(self, x):
        """(B, in_channels, h, w) -> (B, out_channels, h, w), values >= 0.

        The projection of the concatenated branches, computed in two parts: the image-pooling
        branch is constant over the image, so its share of the 1x1 projection is one value per
        sample and channel, added to the projection of the other branches (no broadcast copy of
        it is concatenated; the same sum in another order)."""
        conv, norm_relu = self.project[0], self.project[1:]
        n = conv.in_channels - self.image_pool[1].out_channels      # channels of the other branches
        y = F.conv2d(torch.cat([b(x) for b in self.branches], dim=1), conv.weight[:, :n], conv.bias)
        return norm_relu(y + F.conv2d(self.image_pool(x), conv.weight[:, n:]))


def fold_batch_norms(module, keep=()):
    """Fold every eval-mode batch norm into the convolution before it, in place: each (Conv2d or
    ConvTranspose2d, BatchNorm) pair of an ``nn.Sequential``, and each ``convK`` / ``bnK`` attribute
    pair (torchvision's Bottleneck, ``conv1`` / ``bn1``), become the fused convolution (with a bias)
    and ``nn.Identity``; ``torch.nn.utils.fusion.fuse_conv_bn_eval`` does the arithmetic,
    ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``.
    Only batch norms with running statistics are folded (instance norm is left alone); ``keep``:
    modules whose own pairs stay as they are. Returns the number of pairs folded.
    """
    def foldable(conv, bn):
        return (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, _BatchNorm)
                and bn.track_running_stats and bn.running_mean is not None)

    count = 0
    for m in list(module.modules()):
        if any(m is k for k in keep):
            continue
        pairs = []
        if isinstance(m, nn.Sequential):
            names = list(m._modules)
            pairs = list(zip(names, names[1:]))
        pairs += [(f'conv{i}', f'bn{i}') for i in range(1, 4) if f'conv{i}' in m._modules and f'bn{i}' in m._modules]
        for conv_name, bn_name in pairs:
            conv, bn = m._modules[conv_name], m._modules[bn_name]
            if foldable(conv, bn):
                m._modules[conv_name] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                m._modules[bn_name] = nn.Identity()
                count += 1
    return count


def pad_to_multiple(x, multiple):
    """Pad (B, C, H, W) at the bottom/right to multiples of ``multiple``.

    Reflection padding, or replicate padding where a side is too small to reflect (pad >= size).
    Returns the padded tensor; crop with ``[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class AlphaGANGenerator(nn.Module):
    """AlphaGAN generator: (B, 4, H, W) image + trimap -> alpha matte (B, 1, H, W) in [0, 1].

    Input channels: 0-2 RGB normalised with ImageNet statistics
    (``(rgb - IMAGENET_MEAN) / IMAGENET_STD`` for ``rgb`` in [0, 1]; the model class does this);
    channel 3 the trimap in {0, 0.5, 1} (background, unknown, foreground). Any H, W: the input is
    padded to multiples of 32 (reflection) and the output cropped back.

    Args:
        pretrained: load torchvision's ImageNet ResNet-50 weights (``IMAGENET1K_V1``, downloaded by
            torchvision, needs the internet or torchvision's cache) into the encoder.
        pretrained_path: a local ``torchvision.models.resnet50`` state dict to load instead; giving
            it implies loading pretrained weights, whatever ``pretrained`` says.
        norm: ``'batch'`` (paper; ``'sync_batch'`` is converted by the training code), the only one
            that uses the running statistics of pretrained ImageNet weights; or ``'instance'``,
            with affine parameters (they take the pretrained BatchNorm scales and shifts) and no
            running statistics. Used in encoder, ASPP and decoder. ``'none'`` is refused: the
            ResNet-50 encoder and its pretrained weights need a normalisation layer.
        guidance_nc: extra input channels after the trimap (0 = paper), e.g. the known-colour
            guidance of ``models/matting_guidance.py`` (7); they enter conv1 and, with the RGB, the
            full-resolution decoder stage.
        width: base width (``--ngf``): 64 is ResNet-50 and the paper's decoder; a smaller multiple of
            4 scales every encoder, ASPP and decoder layer by ``width / 64`` (16: about 1/16 of the
            compute, for the CPU recipe of ``make demo-matting``; random initialisation only).

    With pretrained weights, conv1's RGB weights are the ImageNet ones and the trimap channel's
    weights start at zero. Only the encoder is pretrained: when re-initialising the network, leave
    ``self.encoder`` alone (initialise ``self.aspp`` / decoder modules only).

        fast_inference: in eval mode without gradients, run a copy of the network whose batch norms
            are folded into the convolutions and whose features are ``channels_last`` from ``layer1``
            on (:meth:`inference_network`). It is as exact as the layers as written: on a network
            with calibrated batch-norm statistics, both are about 7e-5 from a float64 computation at
            256 px, and the fast path never further from it than the reference
            (``tests/test_matting_speed.py``); with random weights and the default statistics (a
            saturated sigmoid) they agree within 1e-5. Faster on a CPU (``scripts/benchmark.py
            --vs_peer``). False: always the layers as they are (the reference path).
        channels_last: the fast path's memory format (oneDNN's NHWC kernels, no reorders between
            layers); False: folding alone (contiguous), slower on a CPU.

    Submodules: ``encoder`` (:class:`ResNet50Encoder`), ``aspp`` (:class:`ASPP`), then the decoder
    ``skip_conv2``, ``decode_quarter``, ``unpool``, ``skip_conv1``, ``decode_half``,
    ``up_full``, ``decode_full``, ``alpha_conv``.
    """

    def __init__(self, pretrained=False, pretrained_path=None, norm="batch", width=64, guidance_nc=0,
                 fast_inference=True, channels_last=True):
        super().__init__()
        self.fast_inference = fast_inference
        self.channels_last = channels_last
        self._inference_copy = None      # (key, folded copy): see inference_network
        if norm not in ("batch", "sync_batch", "instance"):
            raise UserInputError(
                f"AlphaGAN generator: norm {norm!r} is not supported; use --norm batch (paper) or --norm instance."
            )
        if width < 4 or width % 4:
            raise UserInputError(f"AlphaGAN generator: --ngf {width} must be a multiple of 4 (64 = ResNet-50).")
        norm_layer = get_norm_layer(norm, instance_affine=True)
        w, c = width, lambda n: n * width // 64   # c(n): the paper's n channels at this width
        self.guidance_nc = guidance_nc
        self.encoder = ResNet50Encoder(norm_layer, width, 4 + guidance_nc)
        self.aspp = ASPP(c(2048), c(256), (6, 12, 18), norm_layer)
        # 1/4: ASPP upsampled x2 (256) + conv2_x reduced to 48 -> 3x3 convs; down to conv1's 64
        # channels so the encoder's pooling indices (B, 64, H/4, W/4) apply.
        self.skip_conv2 = conv_norm_relu(c(256), c(48), 1, norm_layer)
        self.decode_quarter = nn.Sequential(
            conv_norm_relu(c(256) + c(48), c(256), 3, norm_layer),
            conv_norm_relu(c(256), w, 3, norm_layer),
        )
        # 1/4 -> 1/2: max-unpooling with the indices of the encoder's 3x3/2 max-pool (a x2
        # upsampling; the output size is given explicitly in forward).
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        self.skip_conv1 = conv_norm_relu(w, c(32), 1, norm_layer)
        self.decode_half = nn.Sequential(
            conv_norm_relu(w + c(32), w, 3, norm_layer),
            conv_norm_relu(w, w, 3, norm_layer),
        )
        # 1/2 -> 1/1: transposed conv, kernel 4, stride 2, padding 1 (exactly x2).
        self.up_full = nn.Sequential(
            nn.ConvTranspose2d(w, c(32), kernel_size=4, stride=2, padding=1, bias=False),
            norm_layer(c(32)),
            nn.ReLU(inplace=True),
        )
        self.decode_full = nn.Sequential(
            conv_norm_relu(c(32) + 3 + guidance_nc, c(32), 3, norm_layer),
            conv_norm_relu(c(32), c(32), 3, norm_layer),
        )
        self.alpha_conv = nn.Conv2d(c(32), 1, kernel_size=3, padding=1)

        if pretrained_path is not None:
            weights = checkpoint.load(pretrained_path, what="pretrained weights file",
                                      hint="Check --pretrained_path: it should be a torchvision resnet50 state dict "
                                           "saved with torch.save.")
            self.encoder.load_torchvision_state_dict(weights, str(pretrained_path))
        elif pretrained:
            self.encoder.load_torchvision_state_dict(download_imagenet_resnet50(), "torchvision IMAGENET1K_V1")

    def forward(self, x):
        """(B, 4 + guidance_nc, H, W) [normalised RGB, trimap in {0, 0.5, 1}, guidance] -> alpha
        (B, 1, H, W) in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 4 + self.guidance_nc:
            raise ValueError(f"AlphaGANGenerator expects (B, {4 + self.guidance_nc}, H, W) RGB + trimap"
                             f"{' + guidance' if self.guidance_nc else ''}, got {tuple(x.shape)}")
        if self.fast_inference and not self.training and not torch.is_grad_enabled() \
                and not torch.compiler.is_compiling():
            return self.inference_network().reference_forward(x)
        return self.reference_forward(x)

    def inference_network(self):
        """The eval-mode copy the fast path runs: this network with its batch norms folded into the
        convolutions (:func:`fold_batch_norms`; none with ``--norm instance``) and, with
        ``channels_last``, its features in that memory format from ``layer1`` on, except the encoder's
        ``conv1`` / ``bn1``, kept as they are so that the max-pool indices the decoder unpools with
        are bit for bit the reference ones (a folded ``conv1`` rounds differently, and an index can
        flip where two pooled values tie, e.g. at ReLU zeros: a large, local difference).

        Made on first use and again whenever a parameter or buffer changed (an optimizer step,
        ``load_state_dict``, ``.to(device)``): the copy costs the weights' memory once more (about
        160 MB at ``--ngf 64``).
        """
        tensors = list(self.parameters()) + list(self.buffers())
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
        if self._inference_copy is None or self._inference_copy[0] != key:
            self._inference_copy = None          # not deep-copied into the new copy
            net = copy.deepcopy(self).eval()
            net.fast_inference = False
            for p in net.parameters():
                p.requires_grad_(False)
            if fold_batch_norms(net, keep=(net.encoder,)) and self.channels_last:   # layer1-4 folded
                # channels_last from layer1 on (oneDNN's NHWC kernels, no reorders): the weights and
                # the pooled features; conv1's weight stays contiguous, so conv1 runs the reference
                # kernel. Not with instance norm: its statistics, reduced in another order, moved
                # the output by 1.5e-5.
                net.to(memory_format=torch.channels_last)
                net.encoder.conv1.weight.data = net.encoder.conv1.weight.data.contiguous()
                net.encoder.features_memory_format = torch.channels_last
            self._inference_copy = (key, net)
        return self._inference_copy[1]

    def reference_forward(self, x):
        """The layers as they are (see :meth:`forward`)."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, SIZE_MULTIPLE)
        feats = self.encoder(x)
        y = self.aspp(feats["conv5_x"])
        y = F.interpolate(y, size=feats["conv2_x"].shape[-2:], mode="bilinear", align_corners=False)
        y = self.decode_quarter(torch.cat([y, self.skip_conv2(feats["conv2_x"])], dim=1))
        # Contiguous: the 3x3/2 max-pool's windows overlap, so an index can repeat and the last write
        # wins; max_unpool2d's channels-last kernel writes in another order (a different matte).
        y = self.unpool(y.contiguous(), feats["pool_indices"], output_size=feats["conv1"].shape[-2:])
        y = y.contiguous(memory_format=self.encoder.features_memory_format)
        y = self.decode_half(torch.cat([y, self.skip_conv1(feats["conv1"])], dim=1))
        y = self.up_full(y)
        # Full resolution: the input RGB (and guidance channels) join the decoder's features.
        image = torch.cat([x[:, :3], x[:, 4:]], dim=1).contiguous(memory_format=self.encoder.features_memory_format)
        y = self.decode_full(torch.cat([y, image], dim=1))
        alpha = torch.sigmoid(self.alpha_conv(y))
        return alpha[..., :h, :w].contiguous()


def download_imagenet_resnet50():
    """torchvision's ImageNet ResNet-50 state dict (``ResNet50_Weights.IMAGENET1K_V1``).

    Downloads into torchvision's cache (``$TORCH_HOME``) on first use; without internet access,
    raises :class:`UserInputError` suggesting a local file.
    """
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # URLError, OSError, hash mismatch, ...
        raise UserInputError(
            f"could not download ImageNet ResNet-50 weights from {weights.url} ({type(exc).__name__}: {exc}); "
            "connect to the internet, or save a torchvision resnet50 state dict elsewhere and pass it with "
            "--pretrained_path."
        ) from None
