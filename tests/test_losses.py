"""Matting losses on hand-computed cases: only unknown pixels count, eps, 0-1 colours, batch
normalisation, empty masks, and the Laplacian loss's dependence on where pred and gt differ."""

import math

import pytest
import torch

from models.losses import alpha_prediction_loss, composition_loss, laplacian_loss


def _t(rows):
    """Nested list (H, W) -> (1, 1, H, W) float tensor."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


# ----------------------------------------------------------------------------- alpha prediction
def test_alpha_loss_averages_charbonnier_over_unknown_pixels_only():
    pred = _t([[0.2, 0.5], [0.9, 0.0]])
    gt = _t([[0.0, 0.5], [0.6, 1.0]])  # the known pixel (1, 1) is off by 1.0 and must not count
    unknown = _t([[1, 1], [1, 0]]).bool()
    eps = 1e-3
    expected = (math.sqrt(0.2**2 + eps**2) + eps + math.sqrt(0.3**2 + eps**2)) / 3
    assert alpha_prediction_loss(pred, gt, unknown, eps=eps).item() == pytest.approx(expected, rel=1e-5)


def test_alpha_loss_is_eps_at_zero_error_with_zero_gradient():
    pred = torch.full((1, 1, 3, 3), 0.5, requires_grad=True)
    loss = alpha_prediction_loss(pred, pred.detach().clone(), torch.ones(1, 1, 3, 3), eps=0.1)
    loss.backward()
    assert loss.item() == pytest.approx(0.1)
    assert torch.isfinite(pred.grad).all() and torch.count_nonzero(pred.grad) == 0
    with pytest.raises(ValueError, match="eps"):
        alpha_prediction_loss(pred, pred, torch.ones(1, 1, 3, 3), eps=0.0)


def test_alpha_loss_normalises_by_unknown_pixels_of_the_whole_batch():
    pred = torch.zeros(2, 1, 2, 2)
    gt = torch.zeros(2, 1, 2, 2)
    pred[0, 0, 0, 0] = 0.4  # sample 0: one unknown pixel, error 0.4
    unknown = torch.zeros(2, 1, 2, 2)
    unknown[0, 0, 0, 0] = 1
    unknown[1, 0, :, :1] = 1  # sample 1: two unknown pixels, error 0
    eps = 1e-6
    expected = (math.sqrt(0.4**2 + eps**2) + 2 * eps) / 3  # not the mean of per-sample means (0.2)
    assert alpha_prediction_loss(pred, gt, unknown, eps=eps).item() == pytest.approx(expected, rel=1e-5)
    assert alpha_prediction_loss(pred, gt, unknown.bool(), eps=eps).item() == pytest.approx(expected, rel=1e-5)


def test_alpha_loss_without_unknown_pixels_is_zero_and_backpropagates():
    pred = torch.rand(2, 1, 4, 4, requires_grad=True)
    loss = alpha_prediction_loss(pred, torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


def test_alpha_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="gt"):
        alpha_prediction_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), torch.ones(1, 1, 4, 4))


# ----------------------------------------------------------------------------- composition
def _red_over_blue(height=2, width=2):
    fg = torch.zeros(1, 3, height, width)
    fg[:, 0] = 1.0  # red
    bg = torch.zeros(1, 3, height, width)
    bg[:, 2] = 1.0  # blue
    return fg, bg


def test_composition_loss_compares_composite_on_unit_colour_scale():
    fg, bg = _red_over_blue()
    image = 0.5 * fg + 0.5 * bg  # ground-truth alpha 0.5: (0.5, 0, 0.5)
    pred = torch.full((1, 1, 2, 2), 0.25)  # composite (0.25, 0, 0.75): errors 0.25, 0, 0.25
    eps = 1e-6
    expected = (2 * math.sqrt(0.25**2 + eps**2) + eps) / 3  # mean over the 3 channels of each pixel
    loss = composition_loss(pred, fg, bg, image, torch.ones(1, 1, 2, 2), eps=eps)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_composition_loss_ignores_known_pixels_and_is_eps_for_the_true_alpha():
    fg, bg = _red_over_blue()
    gt = _t([[0.5, 1.0], [0.0, 0.3]])
    image = gt * fg + (1 - gt) * bg
    pred = _t([[0.5, 0.0], [1.0, 0.3]])  # right on the unknown pixels (0,0), (1,1); wrong elsewhere
    unknown = _t([[1, 0], [0, 1]]).bool()
    loss = composition_loss(pred, fg, bg, image, unknown, eps=0.01)
    assert loss.item() == pytest.approx(0.01, rel=1e-4)
    everywhere = composition_loss(pred, fg, bg, image, torch.ones(1, 1, 2, 2), eps=0.01)
    assert everywhere.item() > 0.3


@pytest.mark.parametrize("scale, shift", [(255.0, 0.0), (2.0, -1.0)])
def test_composition_loss_rejects_colours_not_on_unit_scale(scale, shift):
    fg, bg = _red_over_blue()
    image = 0.5 * fg + 0.5 * bg
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        composition_loss(torch.full((1, 1, 2, 2), 0.5), fg * scale + shift, bg * scale + shift,
                         image * scale + shift, torch.ones(1, 1, 2, 2))


def test_composition_loss_without_unknown_pixels_is_zero_and_backpropagates():
    fg, bg = _red_over_blue()
    pred = torch.rand(1, 1, 2, 2, requires_grad=True)
    loss = composition_loss(pred, fg, bg, 0.5 * fg + 0.5 * bg, torch.zeros(1, 1, 2, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


# ----------------------------------------------------------------------------- laplacian
def test_laplacian_loss_is_zero_for_equal_inputs_and_positive_otherwise():
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 37, 50)  # odd sizes exercise the pyramid's rounding
    assert laplacian_loss(gt.clone(), gt).item() == 0.0
    assert laplacian_loss(torch.rand(2, 1, 37, 50), gt).item() > 0


def test_laplacian_loss_sees_a_constant_offset_only_in_the_weighted_residual_level():
    torch.manual_seed(0)
    gt = 0.8 * torch.rand(1, 1, 37, 50)
    # band-pass levels of a constant are zero (the Gaussian keeps constants); the residual level
    # (i = levels - 1, weight 2^(levels-1)) holds the offset itself
    assert laplacian_loss(gt + 0.1, gt, levels=5).item() == pytest.approx(16 * 0.1, rel=1e-4)
    assert laplacian_loss(gt + 0.1, gt, levels=3).item() == pytest.approx(4 * 0.1, rel=1e-4)


def test_laplacian_loss_with_one_level_is_plain_l1():
    torch.manual_seed(0)
    pred, gt = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert laplacian_loss(pred, gt, levels=1).item() == pytest.approx((pred - gt).abs().mean().item(), rel=1e-6)


def test_laplacian_loss_depends_only_on_the_difference():
    torch.manual_seed(0)
    pred, gt, common = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    base = laplacian_loss(pred, gt).item()
    assert laplacian_loss(pred + common, gt + common).item() == pytest.approx(base, rel=1e-5)


def test_laplacian_loss_gradient_is_confined_near_where_inputs_differ():
    gt = torch.zeros(1, 1, 64, 64)
    pred = gt.clone()
    pred[..., 48:, 48:] = 0.7
    pred.requires_grad_(True)
    laplacian_loss(pred, gt, levels=3).backward()
    assert torch.count_nonzero(pred.grad[..., :16, :16]) == 0  # far from the difference
    assert torch.count_nonzero(pred.grad[..., 48:, 48:]) > 0


def test_laplacian_loss_with_mask_ignores_differences_far_from_unknown_region():
    gt = torch.zeros(1, 1, 64, 64)
    unknown = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    unknown[..., :16, :16] = True
    far = gt.clone()
    far[..., 48:, 48:] = 0.7
    near = gt.clone()
    near[..., 4:8, 4:8] = 0.7
    assert laplacian_loss(far, gt, unknown, levels=3).item() == 0.0
    assert laplacian_loss(near, gt, unknown, levels=3).item() > 0
    assert laplacian_loss(near, gt, unknown.float(), levels=3).item() == pytest.approx(
        laplacian_loss(near, gt, unknown, levels=3).item()
    )


def test_laplacian_loss_with_empty_mask_is_zero_and_backpropagates():
    pred = torch.rand(1, 1, 20, 20, requires_grad=True)
    loss = laplacian_loss(pred, torch.rand(1, 1, 20, 20), torch.zeros(1, 1, 20, 20))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and torch.count_nonzero(pred.grad) == 0
