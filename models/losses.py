"""Losses: the discriminator's GAN loss, and the matting losses.

* :func:`discriminator_loss`: ``(real -> 1, fake -> 0) / 2`` for any ``GANLoss`` mode (CycleGAN,
  InstaGAN, AlphaGAN); the ``GANLoss`` criterion itself lives in ``models/networks.py``;

* :func:`alpha_prediction_loss` and :func:`composition_loss`: Xu, Price, Cohen & Huang, "Deep Image
  Matting", CVPR 2017 (also used by AlphaGAN, Lutz et al., BMVC 2018);
* :func:`laplacian_loss`: Laplacian-pyramid L1 on alpha, as in later matting work (Hou & Liu,
  ICCV 2019; GCA Matting, Li & Lu, AAAI 2020; FBA Matting, Forte & Pitie, 2020).
* :func:`background_matting_losses`: BackgroundMattingV2's (Lin et al., CVPR 2021) L1 alpha, L1 Sobel
  alpha, L1 foreground where alpha > 0 and the error-map MSE; :func:`sobel_magnitude`.

The matting losses are computed over the trimap's unknown region when a mask is given.
"""

import torch
import torch.nn.functional as F


def discriminator_loss(criterion, netD, real, fake):
    """``(criterion(netD(real), True) + criterion(netD(fake), False)) / 2``: D's loss, real judged first.
    ``fake`` should be detached (or pooled) by the caller; ``criterion``: a ``networks.GANLoss``."""
    return (criterion(netD(real), True) + criterion(netD(fake), False)) * 0.5


def _check_shapes(name, reference, **tensors):
    for key, t in tensors.items():
        if t.dim() != 4 or t.shape[0] != reference.shape[0] or t.shape[-2:] != reference.shape[-2:]:
            raise ValueError(
                f"{name}: {key} has shape {tuple(t.shape)}, expected (B, C, H, W) matching {tuple(reference.shape)}"
            )


def _masked_mean(values, mask, channels=1):
    """sum(values * mask) / (channels * sum(mask)); 0 (with a graph) where the mask is empty.

    values: (B, C, H, W), finite; mask: (B, 1, H, W) float weights >= 0. ``channels`` = C when the
    mask is broadcast over C channels, so the result is a mean over masked pixel-channel entries.
    An empty mask makes the sum exactly 0, and 0 / clamp(0) = 0, without a host-device sync.
    """
    total = (values * mask).sum()
    count = mask.sum() * channels
    return total / count.clamp_min(1e-8)


def _as_mask(unknown, like):
    """Bool / float mask (B, 1, H, W) -> float weights of ``like``'s dtype and device."""
    return unknown.to(dtype=like.dtype, device=like.device)


def alpha_prediction_loss(pred, gt, unknown, eps=1e-6):
    """Alpha-prediction loss (Deep Image Matting, eq. 1), averaged over unknown pixels.

        L_alpha = sum_{i in U} sqrt((a_p,i - a_g,i)^2 + eps^2) / |U|

    Args:
        pred: predicted alpha (B, 1, H, W) in [0, 1].
        gt: ground-truth alpha (B, 1, H, W) in [0, 1].
        unknown: (B, 1, H, W) bool or {0, 1} float mask of the trimap's unknown region; known
            pixels do not contribute. |U| is the number of unknown pixels in the whole batch.
        eps: > 0; the Charbonnier constant (keeps the gradient finite at zero error). Each
            unknown pixel contributes at least ``eps``.

    Returns:
        Scalar tensor >= 0 (>= eps when |U| > 0); 0 (still differentiable) when |U| = 0.
    """
    if eps <= 0:
        raise ValueError(f"alpha_prediction_loss: eps must be > 0, got {eps}")
    _check_shapes("alpha_prediction_loss", pred, gt=gt, unknown=unknown)
    diff = torch.sqrt((pred - gt) ** 2 + eps**2)
    return _masked_mean(diff, _as_mask(unknown, pred))


def composition_loss(pred_alpha, fg, bg, image, unknown, eps=1e-6):
    """Compositional loss (Deep Image Matting, eq. 2), averaged over unknown pixels and channels.

        c_p = a_p * F + (1 - a_p) * B
        L_comp = sum_{i in U} sum_{c in RGB} sqrt((c_p,i,c - I_i,c)^2 + eps^2) / (3 |U|)

    Normalisation: by 3 |U| (unknown pixels times colour channels), i.e. the mean over unknown
    pixel-channel entries, so that a colour error ``e`` in every channel gives about ``e`` -- the
    same scale as :func:`alpha_prediction_loss` (the paper weights the two losses 0.5 / 0.5).

    Args:
        pred_alpha: (B, 1, H, W) in [0, 1].
        fg, bg: ground-truth foreground / background (B, 3, H, W), RGB in [0, 1] (not [-1, 1], not
            ImageNet-normalised: the composite equation needs linear colours on a 0-1 scale).
        image: the ground-truth composite ``a_g F + (1 - a_g) B``, (B, 3, H, W), RGB in [0, 1].
        unknown: (B, 1, H, W) bool or {0, 1} float mask of the unknown region.
        eps: > 0, Charbonnier constant.

    Returns:
        Scalar tensor >= 0; 0 (differentiable) when there is no unknown pixel.

    Raises:
        ValueError if fg / bg / image are clearly not on a 0-1 scale (below -0.05 or above 1.05;
        catches [-1, 1] and 0-255 inputs). The check reads 6 numbers back from the device.
    """
    if eps <= 0:
        raise ValueError(f"composition_loss: eps must be > 0, got {eps}")
    _check_shapes("composition_loss", pred_alpha, fg=fg, bg=bg, image=image, unknown=unknown)
    if pred_alpha.shape[1] != 1 or not (fg.shape[1] == bg.shape[1] == image.shape[1] == 3):
        raise ValueError("composition_loss: pred_alpha must have 1 channel and fg / bg / image 3 channels")
    ranges = torch.stack([torch.stack(t.detach().aminmax()).float() for t in (fg, bg, image)]).tolist()
    for name, (lo, hi) in zip(("fg", "bg", "image"), ranges):
        if lo < -0.05 or hi > 1.05:
            raise ValueError(f"composition_loss: {name} spans [{lo:.3f}, {hi:.3f}]; colours must be in [0, 1]")
    composite = pred_alpha * fg + (1.0 - pred_alpha) * bg
    diff = torch.sqrt((composite - image) ** 2 + eps**2)
    return _masked_mean(diff, _as_mask(unknown, pred_alpha), channels=3)


def _gaussian_kernel(channels, like):
    """5x5 binomial Gaussian ([1, 4, 6, 4, 1] / 16 outer product), (C, 1, 5, 5) for grouped conv."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=like.dtype, device=like.device) / 16.0
    return torch.outer(k1, k1).expand(channels, 1, 5, 5).contiguous()


def _blur(x, kernel):
    """Gaussian blur with reflection padding (replicate where a side is shorter than 3)."""
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), kernel, groups=x.shape[1])


def _upsample(x, size, kernel):
    """x2 upsampling by zero insertion + blur with 4 * kernel, cropped to ``size`` (h, w)."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur(up[..., : size[0], : size[1]], 4.0 * kernel)


def laplacian_pyramid(x, levels):
    """Laplacian pyramid of (B, C, H, W): ``levels`` tensors, finest first.

    Level i < levels - 1 is the band-pass ``G_i - up(G_{i+1})`` at (H / 2^i, W / 2^i) (rounded up),
    with ``G_0 = x`` and ``G_{i+1} = blur(G_i)[::2, ::2]`` (5x5 binomial Gaussian); the last level is
    the low-pass residual ``G_{levels-1}``. The pyramid is linear in ``x`` and invertible.
    """
    kernel = _gaussian_kernel(x.shape[1], x)
    pyramid, current = [], x
    for _ in range(levels - 1):
        down = _blur(current, kernel)[..., ::2, ::2]
        pyramid.append(current - _upsample(down, current.shape[-2:], kernel))
        current = down
    pyramid.append(current)
    return pyramid


def _downsample_mask(mask):
    """(B, 1, h, w) -> (B, 1, ceil(h/2), ceil(w/2)): the mean of each 2x2 cell (edge cells: of
    the pixels that exist), matching the pyramid's ``[::2, ::2]`` sizes."""
    h, w = mask.shape[-2:]
    if h % 2 or w % 2:
        mask = F.pad(mask, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(mask, kernel_size=2, stride=2)


def laplacian_loss(pred, gt, unknown=None, levels=5):
    """Laplacian-pyramid L1 loss on alpha.

        L_lap = sum_{i=0}^{levels-1} 2^i * mean_{U_i} |L_i(a_p) - L_i(a_g)|

    ``L_i`` is level i of :func:`laplacian_pyramid` (finest i = 0; the coarsest level is the
    low-pass residual). Weight 2^i per level as in Hou & Liu and in GCA / FBA Matting's code,
    which compensates for the smaller magnitude of coarse coefficients; the weighted level means
    are summed, not averaged. Unlike GCA's code (band-pass levels only), the low-pass residual is
    the last level, so the loss is zero only when ``pred == gt``: a constant offset ``c`` costs
    ``2^(levels-1) * |c|`` (band-pass levels alone ignore it).

    Args:
        pred, gt: alpha (B, 1, H, W) in [0, 1] (any C works).
        unknown: optional (B, 1, H, W) bool / float mask. Level i is averaged with the mask
            average-pooled to that level's resolution (the fraction of each coefficient's
            pixels that are unknown); without it, a plain mean over all coefficients.
            Coefficients near the mask's edge also see nearby known pixels through the Gaussian.
        levels: number of pyramid levels (>= 1; 1 is plain L1).

    Returns:
        Scalar tensor >= 0; 0 for ``pred == gt`` or an empty mask (still differentiable).
    """
    if levels < 1:
        raise ValueError(f"laplacian_loss: levels must be >= 1, got {levels}")
    _check_shapes("laplacian_loss", pred, gt=gt)
    # The pyramid is linear: L(pred) - L(gt) == L(pred - gt), so one pyramid suffices.
    pyramid = laplacian_pyramid(pred - gt, levels)
    mask = None
    if unknown is not None:
        _check_shapes("laplacian_loss", pred, unknown=unknown)
        mask = _as_mask(unknown, pred)
    loss = pred.new_zeros(())
    for i, band in enumerate(pyramid):
        if mask is None:
            level_loss = band.abs().mean()
        else:
            if i > 0:
                mask = _downsample_mask(mask)
            level_loss = _masked_mean(band.abs(), mask, channels=band.shape[1])
        loss = loss + (2.0**i) * level_loss
    return loss


def sobel_magnitude(x, eps=1e-6):
    """Gradient magnitude ``sqrt(gx^2 + gy^2 + eps)`` of (B, C, H, W) with the 3x3 Sobel kernels
    normalised by their absolute sum (1/8), replicate padding: kornia's ``sobel``, which
    BackgroundMattingV2's training scripts use. Returns (B, C, H, W)."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device) / 8.0
    kernels = torch.stack([k, k.t()]).unsqueeze(1).repeat(x.shape[1], 1, 1, 1)     # (2C, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=x.shape[1])
    gx, gy = g[:, 0::2], g[:, 1::2]
    return torch.sqrt(gx * gx + gy * gy + eps)


def background_matting_losses(pha, fgr, gt_pha, gt_fgr, suffix=""):
    """BackgroundMattingV2's prediction losses at one resolution (``train_base.py``): name -> tensor.

        pha<suffix>   = L1(pha, gt_pha)
        sobel<suffix> = L1(sobel(pha), sobel(gt_pha))
        fgr<suffix>   = L1(fgr * [gt_pha > 0], gt_fgr * [gt_pha > 0])   (mean over all pixels)

    pha, gt_pha: (B, 1, H, W) in [0, 1]; fgr, gt_fgr: (B, 3, H, W) in [0, 1].
    """
    _check_shapes("background_matting_losses", pha, fgr=fgr, gt_pha=gt_pha, gt_fgr=gt_fgr)
    mask = (gt_pha > 0).to(fgr.dtype)
    return {f"pha{suffix}": F.l1_loss(pha, gt_pha),
            f"sobel{suffix}": F.l1_loss(sobel_magnitude(pha), sobel_magnitude(gt_pha)),
            f"fgr{suffix}": F.l1_loss(fgr * mask, gt_fgr * mask)}


def error_map_loss(err, pha, gt_pha):
    """MSE(err, |pha - gt_pha|) with ``pha`` detached: the error map learns to predict the alpha
    error without pushing alpha. err, pha, gt_pha: (B, 1, H, W). (The official refine script leaves
    the coarse alpha attached here; its base script, and this, detach it.)"""
    _check_shapes("error_map_loss", err, pha=pha, gt_pha=gt_pha)
    return F.mse_loss(err, (pha.detach() - gt_pha).abs())
