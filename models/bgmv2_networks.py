"""BackgroundMattingV2's networks (Lin, Ryabtsev, Sengupta, Curless, Seitz & Kemelmacher-Shlizerman,
"Real-Time High-Resolution Background Matting", CVPR 2021).

* :class:`MattingBase`: ``cat[src, bgr]`` (B, 6, H, W) in [0, 1] -> backbone (torchvision MobileNetV2 /
  ResNet-50 / ResNet-101, first conv widened to 6 channels, output stride 16) -> torchvision's ASPP
  (rates 3, 6, 9) -> a 4-stage decoder -> 37 channels: alpha (1), foreground residual (3), error
  map (1), hidden features (32).
* :class:`MattingRefine`: the base at ``backbone_scale`` of the input, then :class:`Refiner`, which
  re-predicts alpha and the foreground residual at full resolution on 4x4 patches (all of them in
  ``'full'`` mode; the top-k error locations in ``'sampling'``; where the error exceeds a threshold
  in ``'thresholding'``) and writes them into the bilinear upsampling of the coarse output.

The module tree (and so every state-dict key: ``backbone.features.*`` / ``backbone.layer*``,
``aspp.*``, ``decoder.conv1..4 / bn1..3``, ``refiner.conv1..4 / bn1..3``) is the official one, so
``torch.save(model.state_dict())`` files of the official code load with ``strict=True``
(``tests/test_bgmv2.py`` reproduces the official outputs from such a file).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import mobilenet_v2, resnet50, resnet101
from torchvision.models.segmentation.deeplabv3 import ASPP

BACKBONES = ('mobilenetv2', 'resnet50', 'resnet101')
REFINE_MODES = ('full', 'sampling', 'thresholding')
HIDDEN = 32            # hidden feature channels handed from the base to the refiner
OUT_CHANNELS = 1 + 3 + 1 + HIDDEN   # alpha, foreground residual, error, hidden
ASPP_RATES = (3, 6, 9)


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 features without the last 1x1 block (``features[18]``), the first
    conv taking ``in_channels``; block 14 keeps stride 1 and blocks 15-17 use dilation 2 (output
    stride 16). ``forward(x) -> (x/16 320 ch, x/8 32, x/4 24, x/2 16, x itself)``."""

    channels = (320, 32, 24, 16)

    def __init__(self, in_channels=6):
        super().__init__()
        features = mobilenet_v2(weights=None).features
        if in_channels != 3:
            features[0][0] = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self.features = features[:18]
        self.features[14].conv[1][0].stride = (1, 1)
        for block in self.features[15:18]:
            depthwise = block.conv[1][0]
            depthwise.dilation, depthwise.padding = (2, 2), (2, 2)

    def forward(self, x):
        skips = [x]
        for i, block in enumerate(self.features):
            x = block(x)
            if i in (1, 3, 6):          # 1/2, 1/4, 1/8
                skips.append(x)
        return (x, *skips[::-1])


class ResNetEncoder(nn.Module):
    """torchvision's ResNet-50 / -101 without pooling and classifier, the first conv taking
    ``in_channels``, layer4 dilated (output stride 16). ``forward(x) -> (x/16 2048 ch, x/8 512,
    x/4 256, x/2 64, x itself)``."""

    channels = (2048, 512, 256, 64)

    def __init__(self, in_channels=6, variant='resnet50'):
        super().__init__()
        net = {'resnet50': resnet50, 'resnet101': resnet101}[variant](
            weights=None, replace_stride_with_dilation=[False, False, True])
        self.conv1 = net.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x):
        x0 = x
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x1))
        x3 = self.layer2(x2)
        x4 = self.layer4(self.layer3(x3))
        return x4, x3, x2, x1, x0


class Decoder(nn.Module):
    """Four stages, each: bilinear resize (align_corners=False) to the next skip, ``cat[up, skip]``,
    3x3 conv; BN + ReLU after the first three, a bias on the last. ``channels``: the input then
    each stage's output (256, 128, 64, 48, 37); ``skip_channels``: the four skips, coarse first."""

    def __init__(self, channels, skip_channels):
        super().__init__()
        for i in range(4):
            last = i == 3
            conv = nn.Conv2d(channels[i] + skip_channels[i], channels[i + 1], 3, padding=1, bias=last)
            setattr(self, f'conv{i + 1}', conv)
            if not last:
                setattr(self, f'bn{i + 1}', nn.BatchNorm2d(channels[i + 1]))
        self.relu = nn.ReLU(True)

    def forward(self, x, *skips):
        for i, skip in enumerate(skips):
            x = F.interpolate(x, size=skip.shape[2:], mode='bilinear', align_corners=False)
            x = getattr(self, f'conv{i + 1}')(torch.cat([x, skip], dim=1))
            if i < 3:
                x = self.relu(getattr(self, f'bn{i + 1}')(x))
        return x


def clamp_passing_gradient(x, lo, hi):
    """``x.clamp(lo, hi)`` whose backward pass lets the gradient through as if unclamped (straight
    through); without a graph it is the plain clamp."""
    clamped = x.clamp(lo, hi)
    return clamped + (x - x.detach()) if x.requires_grad else clamped   # + exactly 0, with x's gradient


def split_coarse(x):
    """Raw 37-channel decoder output (B, 37, h, w) -> ``(pha, fgr_residual, err, hid)`` as the
    refiner receives them: alpha and error clamped to [0, 1], the residual raw, hidden ReLU'd.

    The error map's clamp passes its gradient (:func:`clamp_passing_gradient`; the values are the
    official ones). Through the official hard clamp the error loss never reaches a pixel whose raw
    error output is below 0: most pixels of a training crop have no alpha error, the output goes
    negative there and stays dead wherever an error appears later (after the README's recipe, 33-52 %
    of a test image's coarse error map was exactly 0, with raw outputs down to -1.2).
    """
    return x[:, 0:1].clamp(0.0, 1.0), x[:, 1:4], clamp_passing_gradient(x[:, 4:5], 0.0, 1.0), x[:, 5:].relu()


class MattingBase(nn.Module):
    """The base network at the resolution it is given.

    ``forward(src, bgr)``: (B, 3, H, W) x 2 in [0, 1] (no mean / std normalisation) ->
    ``pha`` (B, 1, H, W) in [0, 1], ``fgr`` = clamp(src + residual) (B, 3, H, W), ``err`` (B, 1, H, W)
    in [0, 1], ``hid`` (B, 32, H, W) >= 0. H and W: any size (the decoder resizes to every skip).
    """

    def __init__(self, backbone='mobilenetv2'):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f'backbone must be one of {BACKBONES}, got {backbone!r}')
        self.backbone_name = backbone
        if backbone == 'mobilenetv2':
            self.backbone = MobileNetV2Encoder(6)
        else:
            self.backbone = ResNetEncoder(6, backbone)
        deep, *skips = self.backbone.channels
        self.aspp = ASPP(deep, list(ASPP_RATES))
        self.decoder = Decoder([256, 128, 64, 48, OUT_CHANNELS], skips + [6])

    def coarse(self, src, bgr):
        """The raw decoder output (B, 37, H, W) for ``cat[src, bgr]``."""
        deep, *skips = self.backbone(torch.cat([src, bgr], dim=1))
        return self.decoder(self.aspp(deep), *skips)

    def forward(self, src, bgr):
        pha, fgr, err, hid = split_coarse(self.coarse(src, bgr))
        return pha, (fgr + src).clamp(0.0, 1.0), err, hid


class Refiner(nn.Module):
    """Full-resolution re-prediction of alpha and the foreground residual on 4x4 patches.

    Each selected quarter-resolution location (i, j) is the full-resolution patch rows 4i..4i+3,
    columns 4j..4j+3. Stage 1 sees an 8x8 half-resolution window around it (the 2x2 cell plus 3 px
    of context, zero padded at the border) of ``[hid, pha, fgr residual]`` (36 ch) and
    ``[src, bgr]`` (6 ch), both resized bilinearly to half resolution: two 3x3 valid convs (BN,
    ReLU) -> 4x4, nearest x2 -> 8x8; stage 2 adds the full-resolution ``[src, bgr]`` 4x4 patch
    plus 2 px (22 ch): 3x3 valid conv (BN, ReLU), 3x3 valid conv with bias -> 4 channels 4x4.
    With ``kernel_size`` 1 the windows have no context (2x2 and 4x4).

    ``'full'`` computes every location at once with plain convolutions on the padded images;
    ``'sampling'`` picks the ``sample_pixels // 16`` locations of largest error (fewer when the
    error is 0 elsewhere, with ``prevent_oversampling``); ``'thresholding'`` those with error >
    ``threshold``. The error map is first resized bilinearly to (H/4, W/4).

    ``forward(src, bgr, pha, fgr, err, hid)``: full-resolution src / bgr (B, 3, H, W), H and W
    multiples of 4; the coarse outputs at any resolution (as :func:`split_coarse` gives them).
    Returns ``pha`` (B, 1, H, W) and ``fgr`` residual (B, 3, H, W), both unclamped, and ``ref``
    (B, 1, H/4, W/4) in {0, 1}: the refined locations.
    """

    def __init__(self, mode='sampling', sample_pixels=80_000, threshold=0.1, kernel_size=3,
                 prevent_oversampling=True):
        super().__init__()
        if mode not in REFINE_MODES:
            raise ValueError(f'refine mode must be one of {REFINE_MODES}, got {mode!r}')
        if kernel_size not in (1, 3):
            raise ValueError(f'refine kernel size must be 1 or 3, got {kernel_size}')
        self.mode, self.sample_pixels, self.threshold = mode, sample_pixels, threshold
        self.kernel_size, self.prevent_oversampling = kernel_size, prevent_oversampling
        self.conv1 = nn.Conv2d(HIDDEN + 4 + 6, 24, kernel_size, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.conv2 = nn.Conv2d(24, 16, kernel_size, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16 + 6, 12, kernel_size, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.conv4 = nn.Conv2d(12, 4, kernel_size, bias=True)
        self.relu = nn.ReLU(True)

    # context (px) around a cell: half-resolution stage, full-resolution stage
    @property
    def context(self):
        return (3, 2) if self.kernel_size == 3 else (0, 0)

    def stage1(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))

    def stage2(self, x):
        return self.conv4(self.relu(self.bn3(self.conv3(x))))

    def select(self, err):
        """(B, 1, H/4, W/4) error in [0, 1] -> (B, 1, H/4, W/4) float in {0, 1}, 1 = refine."""
        if self.mode == 'thresholding':
            return (err > self.threshold).to(err.dtype)
        b = err.shape[0]
        flat = err.reshape(b, -1)
        k = min(self.sample_pixels // 16, flat.shape[1])
        ref = torch.zeros_like(flat).scatter_(1, flat.topk(k, dim=1, sorted=False).indices, 1.0)
        if self.prevent_oversampling:
            ref = ref * (flat > 0).to(ref.dtype)
        return ref.view_as(err)

    def forward(self, src, bgr, pha, fgr, err, hid):
        H, W = src.shape[2:]
        p_half, p_full = self.context
        coarse = torch.cat([hid, pha, fgr], dim=1)

        def half(t):
            return F.interpolate(t, (H // 2, W // 2), mode='bilinear', align_corners=False)

        if self.mode == 'full':
            src_bgr = torch.cat([src, bgr], dim=1)
            x = self.stage1(F.pad(torch.cat([half(coarse), half(src_bgr)], dim=1), (p_half,) * 4))
            x = F.interpolate(x, (H + 2 * p_full, W + 2 * p_full), mode='nearest')
            out = self.stage2(torch.cat([x, F.pad(src_bgr, (p_full,) * 4)], dim=1))
            ref = src.new_ones(src.shape[0], 1, H // 4, W // 4)
            return out[:, :1], out[:, 1:], ref

        err = F.interpolate(err, (H // 4, W // 4), mode='bilinear', align_corners=False)
        ref = self.select(err)
        out = F.interpolate(torch.cat([pha, fgr], dim=1), (H, W), mode='bilinear', align_corners=False)
        where = torch.nonzero(ref[:, 0])           # (P, 3): batch, row, column of each location
        if len(where):
            # Only the patches' windows are needed: no padded or concatenated copies of the full- or
            # half-resolution images; channels-last half-resolution maps so each window row is one read
            # (the small coarse map converted before resizing, the images after: the cheaper side).
            b, i, j = where.unbind(1)
            cl = torch.channels_last
            x = torch.cat([crop_patches(half(coarse.contiguous(memory_format=cl)), b, i, j, 2, p_half),
                           crop_patches(half(src).contiguous(memory_format=cl), b, i, j, 2, p_half),
                           crop_patches(half(bgr).contiguous(memory_format=cl), b, i, j, 2, p_half)], dim=1)
            x = F.interpolate(self.stage1(x), scale_factor=2, mode='nearest')
            x = self.stage2(torch.cat([x, crop_patches(src, b, i, j, 4, p_full),
                                       crop_patches(bgr, b, i, j, 4, p_full)], dim=1))
            out = paste_patches(out, x, b, i, j)
        return out[:, :1], out[:, 1:], ref


def crop_patches(x, b, i, j, cell, pad):
    """Windows of ``x`` (B, C, h, w) around grid cells: cell (i, j) of image b covers rows
    ``i*cell .. i*cell+cell-1`` (columns likewise); ``pad`` pixels around it, zeros outside.
    ``b, i, j``: (P,) long. Returns (P, C, cell + 2 pad, cell + 2 pad) (channels-last strides)."""
    h, w = x.shape[2:]
    offsets = torch.arange(-pad, cell + pad, device=x.device)
    rows = (i * cell)[:, None] + offsets                     # (P, side)
    cols = (j * cell)[:, None] + offsets
    # advanced indices around a slice: the indexed dims come first -> (P, side, side, C)
    patches = x[b[:, None, None], :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    if pad:   # zeros outside the image, as a zero-padded crop (only border windows have such pixels)
        outside = ((rows < 0) | (rows >= h))[:, :, None] | ((cols < 0) | (cols >= w))[:, None, :]
        if outside.any():
            patches = patches.masked_fill(outside[..., None], 0.0)
    return patches.permute(0, 3, 1, 2)


def paste_patches(x, patches, b, i, j):
    """``x`` (B, C, H, W) contiguous with the 4x4 ``patches`` (P, C, 4, 4) written at quarter-resolution
    cells (b, i, j), in place (autograd records it; ``x`` must be no leaf). Returns ``x``."""
    B, C, H, W = x.shape
    s = patches.shape[-1]
    grid = x.view(B, C, H // s, s, W // s, s).permute(0, 2, 4, 1, 3, 5)   # (B, H/s, W/s, C, s, s)
    grid.index_put_((b, i, j), patches)
    return x


class MattingRefine(MattingBase):
    """The base at ``backbone_scale`` (<= 1/2) of the input, then the :class:`Refiner`.

    ``forward(src, bgr)``: (B, 3, H, W) x 2 in [0, 1], H and W multiples of 4 -> ``pha`` (B, 1, H, W),
    ``fgr`` (B, 3, H, W), ``pha_sm`` (B, 1, h, w), ``fgr_sm`` (B, 3, h, w), ``err_sm`` (B, 1, h, w),
    all in [0, 1] (h, w: the input resized by ``backbone_scale``, bilinear, align_corners=False), and
    ``ref_sm`` (B, 1, H/4, W/4) in {0, 1} (refined 4x4 patches).

    ``refine_sample_pixels // 16`` patches are refined in ``'sampling'`` mode, at most the number of
    patches there are (the official code raises instead). Recommended: HD at 1/4 with 80,000 pixels,
    4K at 1/8 with 320,000.
    """

    def __init__(self, backbone='mobilenetv2', backbone_scale=0.25, refine_mode='sampling',
                 refine_sample_pixels=80_000, refine_threshold=0.1, refine_kernel_size=3,
                 refine_prevent_oversampling=True):
        if backbone_scale > 0.5 or backbone_scale <= 0:
            raise ValueError(f'backbone_scale must be in (0, 1/2], got {backbone_scale}')
        super().__init__(backbone)
        self.backbone_scale = backbone_scale
        self.refiner = Refiner(refine_mode, refine_sample_pixels, refine_threshold, refine_kernel_size,
                               refine_prevent_oversampling)

    def downsample(self, x):
        return F.interpolate(x, scale_factor=self.backbone_scale, mode='bilinear', align_corners=False,
                             recompute_scale_factor=True)

    def forward(self, src, bgr):
        if src.shape != bgr.shape:
            raise ValueError(f'src and bgr must have the same shape, got {tuple(src.shape)} and {tuple(bgr.shape)}')
        if src.shape[2] % 4 or src.shape[3] % 4:
            raise ValueError(f'height and width must be multiples of 4, got {tuple(src.shape[2:])}')
        src_sm, bgr_sm = self.downsample(src), self.downsample(bgr)
        pha_sm, fgr_res_sm, err_sm, hid_sm = split_coarse(self.coarse(src_sm, bgr_sm))
        pha, fgr_res, ref_sm = self.refiner(src, bgr, pha_sm, fgr_res_sm, err_sm, hid_sm)
        return (pha.clamp(0.0, 1.0), (fgr_res + src).clamp(0.0, 1.0), pha_sm,
                (src_sm + fgr_res_sm).clamp(0.0, 1.0), err_sm, ref_sm)
