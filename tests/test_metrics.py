"""util.metrics: hand-computed cases and agreement with mmeval's ports of the DIM MATLAB code."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from util.metrics import (apply_trimap_known, compute_connectivity, compute_gradient, compute_mse,
                          compute_sad, evaluate_matte, gauss_gradient_kernels, quantize_trimap)

REPO = Path(__file__).resolve().parents[1]


def disc_case(size=48, seed=0, kind="smooth"):
    """A soft-edged disc ``gt`` (uint8), trimap consistent with it, and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.3, xx - size / 2 - 0.2)
    gt = np.clip((0.3 * size - r) * 255.0 / (0.15 * size), 0, 255).round().astype(np.uint8)
    trimap = np.full(gt.shape, 128, np.uint8)
    trimap[gt == 0] = 0
    trimap[gt == 255] = 255
    if kind == "noise":
        pred = rng.integers(0, 256, gt.shape).astype(np.uint8)
    else:
        noise = cv2.GaussianBlur(rng.normal(0, 60, gt.shape), (0, 0), 2)
        pred = np.clip(gt + noise, 0, 255).round().astype(np.uint8)
    return pred, gt, trimap


# ------------------------------------------------------------------------------ SAD / MSE

def test_sad_and_mse_of_constant_offset_count_only_unknown_pixels():
    gt = np.full((10, 12), 100, np.uint8)
    pred = gt + np.uint8(10)
    trimap = np.zeros((10, 12), np.uint8)
    trimap[2:5, 3:9] = 128  # 18 unknown pixels
    trimap[6:, :] = 255     # known pixels with the same error must not count
    assert compute_sad(pred, gt, trimap) == pytest.approx(18 * 10 / 255 / 1000, rel=1e-12)
    assert compute_mse(pred, gt, trimap) == pytest.approx((10 / 255) ** 2, rel=1e-12)


def test_changing_known_pixels_leaves_sad_and_mse_unchanged():
    pred, gt, trimap = disc_case(kind="noise")
    altered = pred.copy()
    altered[trimap != 128] = 255 - altered[trimap != 128]
    assert compute_sad(altered, gt, trimap) == compute_sad(pred, gt, trimap)
    assert compute_mse(altered, gt, trimap) == compute_mse(pred, gt, trimap)


def test_uint8_inputs_do_not_wrap_around():
    gt = np.full((4, 4), 250, np.uint8)
    pred = np.full((4, 4), 5, np.uint8)  # pred - gt would wrap to 11 in uint8
    trimap = np.full((4, 4), 128, np.uint8)
    assert compute_sad(pred, gt, trimap) == pytest.approx(16 * 245 / 255 / 1000)


def test_mse_without_unknown_pixels_is_zero_not_nan():
    pred, gt, _ = disc_case()
    assert compute_mse(pred, gt, np.zeros(gt.shape, np.uint8)) == 0.0


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same"):
        compute_sad(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((4, 4)))


# ------------------------------------------------------------------------------ Gradient

def test_gradient_filter_matches_gaussgradient_definition():
    g, dg = gauss_gradient_kernels(1.4)
    # halfsize = ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(3.62) = 4 -> 9 taps
    assert g.shape == dg.shape == (9,)
    hx = np.outer(g, dg)
    assert np.sum(hx ** 2) == pytest.approx(1.0)
    assert np.allclose(g, g[::-1]) and np.allclose(dg, -dg[::-1])


def test_gradient_is_zero_for_identical_or_constant_mattes():
    pred, gt, trimap = disc_case()
    assert compute_gradient(gt, gt, trimap) == 0.0
    assert compute_gradient(np.full(gt.shape, 7.0), np.full(gt.shape, 200.0), trimap) == 0.0


def test_gradient_is_invariant_to_affine_rescaling_of_a_matte():
    # mat2gray normalises each matte by its own min and max before filtering.
    pred, gt, trimap = disc_case()
    rescaled = pred.astype(np.float64) * 0.5 + 20.0
    assert compute_gradient(rescaled, gt, trimap) == pytest.approx(compute_gradient(pred, gt, trimap),
                                                                   rel=1e-9)


def test_gradient_matches_direct_2d_filtering_with_replicate_border():
    pred, gt, trimap = disc_case(size=24, kind="noise")
    g, dg = gauss_gradient_kernels(1.4)
    hx = np.outer(g, dg)

    def amp(img):
        img = (img - img.min()) / (img.max() - img.min())
        pad = np.pad(img, 4, mode="edge")
        win = np.lib.stride_tricks.sliding_window_view(pad, (9, 9))
        return np.hypot(np.einsum("ijkl,kl->ij", win, hx), np.einsum("ijkl,kl->ij", win, hx.T))

    d = amp(pred.astype(float)) - amp(gt.astype(float))
    expected = np.sum(d[trimap == 128] ** 2) / 1000
    assert compute_gradient(pred, gt, trimap) == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------------------ Connectivity

def _blobs_case():
    """12x12, all unknown. A: 4x4 block, gt = pred = 255 (the largest component at every threshold).
    B: 2 pixels far away and C: 1 pixel touching A's corner diagonally; both gt 255, pred 115."""
    gt = np.zeros((12, 12), np.uint8)
    gt[2:6, 2:6] = 255          # A
    gt[9:11, 9] = 255           # B
    gt[6, 6] = 255              # C, 8-connected (not 4-connected) to A's corner (5, 5)
    pred = gt.copy()
    pred[9:11, 9] = 115
    pred[6, 6] = 115
    return pred, gt, np.full(gt.shape, 128, np.uint8)


def test_connectivity_uses_largest_4_connected_component_only():
    pred, gt, trimap = _blobs_case()
    # B and C leave Omega at the first threshold -> l = 0, phi(pred) = 1 - 115/255, phi(gt) = 0.
    correct = 3 * (1 - 115 / 255) / 1000
    # Had B and C stayed in Omega up to t = 0.4 (all components, or C with 8-connectivity), their
    # l would be 0.4: pred_d = 0.051 < 0.15 -> phi(pred) = 1, phi(gt) = 1 - 0.6 -> error 0.6 each.
    all_components = 3 * 0.6 / 1000
    eight_connected = (2 * (1 - 115 / 255) + 0.6) / 1000
    result = compute_connectivity(pred, gt, trimap)
    assert result == pytest.approx(correct, rel=1e-12)
    assert abs(result - all_components) > 1e-5 and abs(result - eight_connected) > 1e-5


def test_connectivity_ties_go_to_first_component_in_column_major_order():
    # D (top right) and E (bottom left) are equal 2x2 blobs, both above threshold up to t = 0.4.
    gt = np.zeros((10, 10), np.uint8)
    gt[0:2, 7:9] = 255   # D: first in row-major order
    gt[7:9, 0:2] = 255   # E: first in column-major order (MATLAB's bwconncomp order)
    pred = gt.copy()
    pred[0:2, 7:9] = 115
    trimap = np.full(gt.shape, 128, np.uint8)
    # MATLAB keeps E at t = 0.1, so D gets l = 0 and error 1 - 115/255 per pixel; E stays in Omega
    # to the end (l = 1, error 0). Picking D instead would give D l = 0.4 (error 0.6) and E 0.
    assert compute_connectivity(pred, gt, trimap) == pytest.approx(4 * (1 - 115 / 255) / 1000)


def test_connectivity_alpha_153_passes_threshold_0_6_exactly():
    gt = np.full((5, 5), 255, np.uint8)
    pred = gt.copy()
    pred[2, 2] = 153  # 153 / 255 == 0.6
    trimap = np.full(gt.shape, 128, np.uint8)
    # The pixel is in Omega up to t = 0.6, leaves at 0.7 -> l = 0.6: phi(pred) = 1, phi(gt) = 0.6.
    # (np.arange(0, 1.1, 0.1)[6] == 0.6000000000000001 would give l = 0.5 and 0.5 / 1000.)
    assert compute_connectivity(pred, gt, trimap) == pytest.approx(0.4 / 1000, rel=1e-9)


def test_connectivity_is_zero_for_identical_mattes_and_rejects_bad_step():
    pred, gt, trimap = disc_case()
    assert compute_connectivity(gt, gt, trimap) == 0.0
    with pytest.raises(ValueError, match="step"):
        compute_connectivity(pred, gt, trimap, step=0.3)


# ------------------------------------------------------------------------------ helpers

def test_quantize_trimap_snaps_to_nearest_and_counts_changes():
    t = np.array([[0, 10, 63, 64, 128, 191, 192, 250, 255]], np.uint8)
    q, n = quantize_trimap(t)
    assert q.dtype == np.uint8
    assert q.tolist() == [[0, 0, 0, 128, 128, 128, 255, 255, 255]]
    assert n == 6


def test_evaluate_matte_copies_known_pixels_before_scoring():
    pred, gt, trimap = disc_case()
    garbage = pred.copy()
    garbage[trimap == 0] = 200
    garbage[trimap == 255] = 3
    clean = apply_trimap_known(pred, trimap)
    assert evaluate_matte(garbage, gt, trimap) == evaluate_matte(clean, gt, trimap, copy_known=False)
    assert evaluate_matte(garbage, gt, trimap, copy_known=False)["Grad"] != evaluate_matte(
        clean, gt, trimap, copy_known=False)["Grad"]


def test_evaluate_matte_rejects_0_1_scale_floats():
    pred, gt, trimap = disc_case()
    with pytest.raises(ValueError, match="0-255"):
        evaluate_matte(pred / 255.0, gt, trimap)
    with pytest.raises(ValueError, match="0-255"):
        evaluate_matte(pred, gt / 255.0, trimap)


# ------------------------------------------------------------------------------ vs mmeval

def _mmeval_scores(pred, gt, trimap):
    """mmeval's matting metrics, fed as mmagic feeds them: alphas / 255 (float), the prediction's
    known pixels already copied (mmeval's SAD/MSE sum over the whole image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mmeval import SAD, ConnectivityError, GradientError, MattingMSE
    p = apply_trimap_known(pred, trimap) / 255.0
    g = gt.astype(np.float64) / 255.0
    return {"SAD": SAD()([p], [g])["sad"],
            "MSE": MattingMSE()([p], [g], [trimap])["matting_mse"],
            "Grad": GradientError()([p], [g], [trimap])["gradient_error"],
            "Conn": ConnectivityError()([p], [g], [trimap])["connectivity_error"]}


@pytest.mark.parametrize("kind", ["smooth", "noise"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_mmeval(kind, seed):
    pred, gt, trimap = disc_case(size=64, seed=seed, kind=kind)
    # mmeval's np.arange thresholds drop alpha = 153 at t = 0.6 (see the 153 test above).
    pred[pred == 153] = 152
    gt[gt == 153] = 152
    ours = evaluate_matte(pred, gt, trimap)
    ref = _mmeval_scores(pred, gt, trimap)
    assert ours["SAD"] > 0 and ours["Grad"] > 0 and ours["Conn"] > 0
    for m in ("SAD", "MSE", "Grad", "Conn"):
        assert ours[m] == pytest.approx(ref[m], rel=1e-9, abs=1e-12), m


def test_blob_case_agrees_with_mmeval():
    pred, gt, trimap = _blobs_case()
    assert compute_connectivity(pred, gt, trimap) == pytest.approx(
        _mmeval_scores(pred, gt, trimap)["Conn"], rel=1e-12)


# ------------------------------------------------------------------------------ benchmark script

def test_benchmark_script_prints_one_json_line_with_all_timings():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_metrics.py"),
                          "--size", "64", "--runs", "2"], capture_output=True, text=True,
                         check=True, cwd=str(REPO.parent)).stdout.strip().splitlines()
    assert len(out) == 1
    rec = json.loads(out[0])
    assert rec["size"] == [64, 64] and rec["runs"] == 2
    assert set(rec["seconds"]) == {"SAD", "MSE", "Grad", "Conn"}
    assert all(v >= 0 for v in rec["seconds"].values()) and rec["evaluate_matte"] > 0
