"""Standard alpha-matting metrics: SAD, MSE, Gradient and Connectivity error.

These reproduce the official Deep Image Matting evaluation (Xu et al., CVPR 2017; MATLAB files
``compute_sad_loss.m``, ``compute_mse_loss.m``, ``compute_gradient_loss.m``,
``compute_connectivity_error.m`` and the driver that divides Grad and Conn by 1000), which every
matting paper (AlphaGAN included) reports.

Conventions shared by all functions here:

* ``pred`` and ``gt`` are ``(H, W)`` arrays on a **0-255 scale** (uint8, or float holding 0..255).
* ``trimap`` is an ``(H, W)`` array with values in {0, 128, 255}: 0 background, 255 foreground,
  128 unknown. Only pixels with ``trimap == 128`` are scored.
* Values are returned in the units papers report:

  ===========  =====================================================================  ========
  metric       definition (sums/means over unknown pixels U)                          divisor
  ===========  =====================================================================  ========
  SAD          sum_U |p - g| / 255                                                     1000
  MSE          mean_U ((p - g) / 255)^2                                                 --
  Grad         sum_U (|grad G_s * p~| - |grad G_s * g~|)^2, p~ = mat2gray(p), s = 1.4  1000
  Conn         sum_U |phi(p) - phi(g)| (step 0.1, theta 0.15, p = 1)                   1000
  ===========  =====================================================================  ========

Only :func:`evaluate_matte` copies the known trimap pixels into the prediction first
(``pred[trimap == 0] = 0``, ``pred[trimap == 255] = 255``), which is what the benchmark
protocol does with a network's output; the ``compute_*`` functions score exactly what they are
given. Gradient and Connectivity look at the whole image (min-max normalisation, connected
components), so the copy changes them even though only unknown pixels are summed.
"""

import cv2
import numpy as np

UNKNOWN = 128
_TRIMAP_VALUES = (0, 128, 255)


def _matte(x, name):
    """Return ``x`` as a float64 ``(H, W)`` array on its original (0-255) scale."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def _check_shapes(pred, gt, trimap):
    if not (pred.shape == gt.shape == np.shape(trimap)):
        raise ValueError(
            f"pred {pred.shape}, gt {gt.shape} and trimap {np.shape(trimap)} must have the same (H, W)")


def _unknown_mask(trimap):
    """``(H, W)`` bool, True where ``trimap == 128``."""
    return np.asarray(trimap) == UNKNOWN


# ----------------------------------------------------------------------------------------------
# SAD / MSE
# ----------------------------------------------------------------------------------------------

def _sad(p, g, unknown):
    return float(np.abs(p[unknown] - g[unknown]).sum() / 255.0 / 1000.0)


def _mse(p, g, unknown):
    n = int(np.count_nonzero(unknown))
    if n == 0:
        return 0.0
    d = (p[unknown] - g[unknown]) / 255.0
    return float(np.dot(d, d) / n)


def compute_sad(pred, gt, trimap):
    """Sum of absolute differences over the unknown region, in thousands.

    ``SAD = sum_{trimap==128} |pred - gt| / 255 / 1000`` (``compute_sad_loss.m``).

    Args:
        pred, gt: ``(H, W)`` alpha mattes on a 0-255 scale (uint8 or float).
        trimap: ``(H, W)`` with values {0, 128, 255}; only 128 pixels count.

    Returns:
        float, the SAD as papers report it (already divided by 1000).
    """
    p, g = _matte(pred, "pred"), _matte(gt, "gt")
    _check_shapes(p, g, trimap)
    return _sad(p, g, _unknown_mask(trimap))


def compute_mse(pred, gt, trimap):
    """Mean squared error over the unknown region, alphas scaled to [0, 1].

    ``MSE = mean_{trimap==128} ((pred - gt) / 255)^2`` (``compute_mse_loss.m``); a plain mean,
    not multiplied by any power of ten. With no unknown pixel MATLAB gives 0/0 = NaN; this returns
    0.0 (as mmeval does) so that means over a data set stay finite.

    Args:
        pred, gt: ``(H, W)`` alpha mattes on a 0-255 scale.
        trimap: ``(H, W)`` with values {0, 128, 255}.

    Returns:
        float in [0, 1].
    """
    p, g = _matte(pred, "pred"), _matte(gt, "gt")
    _check_shapes(p, g, trimap)
    return _mse(p, g, _unknown_mask(trimap))


# ----------------------------------------------------------------------------------------------
# Gradient
# ----------------------------------------------------------------------------------------------

def gauss_gradient_kernels(sigma=1.4, epsilon=1e-2):
    """Separable factors of the normalised Gaussian-derivative filter of ``gaussgradient.m``.

    MATLAB builds ``hx(i, j) = G(u_i) * dG(u_j)`` on ``u = -h..h`` with
    ``h = ceil(sigma * sqrt(-2 * log(sqrt(2 pi) * sigma * epsilon)))`` (h = 4, a 9x9 filter for
    sigma 1.4) and divides by its Frobenius norm. ``hx`` is the outer product of ``G`` (along y)
    and ``dG`` (along x), so ``hx / ||hx|| = outer(G / ||G||, dG / ||dG||)``.

    Returns:
        ``(g, dg)``: 1-D float64 arrays of length ``2h + 1``, each of unit L2 norm.
    """
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * epsilon))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-u ** 2 / (2.0 * sigma ** 2)) / (sigma * np.sqrt(2.0 * np.pi))
    dg = -u * g / sigma ** 2
    return g / np.linalg.norm(g), dg / np.linalg.norm(dg)


def _mat2gray(a):
    """MATLAB ``mat2gray``: min-max scale to [0, 1]; a constant image is returned clipped."""
    lo, hi = float(a.min()), float(a.max())
    if hi == lo:
        return np.clip(a, 0.0, 1.0)
    return (a - lo) * (1.0 / (hi - lo))


def _gradient_magnitude(img, g, dg):
    """``|grad img|`` with replicate borders; ``(H, W)`` float64 in, ``(H, W)`` float64 out.

    MATLAB filters with ``imfilter(..., 'replicate', 'conv')``; convolution instead of
    correlation only flips the sign of the (odd) derivative response, so the magnitude is equal.
    """
    gx = cv2.sepFilter2D(img, cv2.CV_64F, dg, g, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(img, cv2.CV_64F, g, dg, borderType=cv2.BORDER_REPLICATE)
    return cv2.magnitude(gx, gy)  # sqrt(gx^2 + gy^2) in one pass


def _gradient(p, g, unknown, sigma):
    kg, kdg = gauss_gradient_kernels(sigma)
    pa = _gradient_magnitude(_mat2gray(p), kg, kdg)
    ga = _gradient_magnitude(_mat2gray(g), kg, kdg)
    d = pa[unknown] - ga[unknown]
    return float(np.dot(d, d) / 1000.0)


def compute_gradient(pred, gt, trimap, sigma=1.4):
    """Gradient error over the unknown region, in thousands (``compute_gradient_loss.m`` / 1000).

    Both mattes are min-max normalised to [0, 1] over the whole image (MATLAB ``mat2gray``;
    dividing by 255 first changes nothing), filtered with the unit-norm first-derivative-of-
    Gaussian filters (sigma 1.4, replicate borders) in x and y, and the squared difference of the
    gradient magnitudes is summed over ``trimap == 128`` and divided by 1000.

    Args:
        pred, gt: ``(H, W)`` alpha mattes on a 0-255 scale.
        trimap: ``(H, W)`` with values {0, 128, 255}.
        sigma: Gaussian standard deviation in pixels.

    Returns:
        float >= 0.
    """
    p, g = _matte(pred, "pred"), _matte(gt, "gt")
    _check_shapes(p, g, trimap)
    return _gradient(p, g, _unknown_mask(trimap), sigma)


# ----------------------------------------------------------------------------------------------
# Connectivity
# ----------------------------------------------------------------------------------------------

def _largest_component(mask):
    """Largest 4-connected component of ``mask`` as an ``(H, W)`` bool array (all False if empty).

    Ties in size are broken like MATLAB's ``[~, id] = max(cellfun(@numel, bwconncomp(..., 4)
    .PixelIdxList))``: bwconncomp numbers components in column-major scan order (by leftmost
    column, then topmost pixel in it) and ``max`` returns the first, so the tied component whose
    first pixel comes first in column-major order wins (independent of OpenCV's label order).
    """
    # Labels without stats + bincount is several times faster than connectedComponentsWithStats.
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    if n <= 2:  # no component, or the mask is one component
        return mask
    area = np.bincount(labels.ravel(), minlength=n)[1:]
    cand = np.flatnonzero(area == area.max()) + 1
    if cand.size > 1:  # tie: the first tied pixel in column-major order decides
        tied = np.isin(labels, cand)
        col = int(np.argmax(tied.any(axis=0)))
        row = int(np.argmax(tied[:, col]))
        cand = labels[row:row + 1, col]
    return labels == cand[0]


def _connectivity(p, g, unknown, step, theta=0.15):
    n_steps = int(round(1.0 / step))
    if n_steps < 1 or abs(n_steps * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 (e.g. 0.1), got {step}")
    # Threshold i is t_i = i / n_steps; alpha/255 >= t_i  <=>  alpha * n_steps >= 255 * i, which is
    # exact for 8-bit values (MATLAB's single-precision comparison gives the same answers; an
    # np.arange threshold list would make 0.6 -> 0.6000000000000001 and drop alpha = 153).
    # A pixel's l is t_{i-1} for the first i with the pixel outside Omega_i, i.e. l * n_steps is
    # the number of leading thresholds whose Omega holds it (n_steps, l = 1, if all do).
    both = np.minimum(p, g) * n_steps
    level = np.zeros(p.shape, dtype=np.int16)
    kept = np.ones(p.shape, dtype=bool)  # in every Omega so far
    for i in range(1, n_steps + 1):
        kept &= _largest_component(both >= 255.0 * i)
        if not kept.any():
            break
        level += kept
    l_map = level[unknown] / n_steps
    p_d = p[unknown] / 255.0 - l_map
    g_d = g[unknown] / 255.0 - l_map
    p_phi = 1.0 - p_d * (p_d >= theta)
    g_phi = 1.0 - g_d * (g_d >= theta)
    return float(np.abs(p_phi - g_phi).sum() / 1000.0)


def compute_connectivity(pred, gt, trimap, step=0.1):
    """Connectivity error over the unknown region, in thousands
    (``compute_connectivity_error.m`` with step 0.1, divided by 1000 as the DIM driver does).

    For thresholds ``t_i = i * step`` (i = 1..1/step) let ``Omega_i`` be the largest
    4-connected component of ``{pred/255 >= t_i} & {gt/255 >= t_i}`` over the whole image. Each
    pixel's ``l`` is ``t_{i-1}`` for the first ``i`` with the pixel outside ``Omega_i`` (1 if
    never). With ``d = alpha/255 - l``, ``phi = 1 - d * [d >= 0.15]`` (theta 0.15, p-norm 1), and
    ``Conn = sum_{trimap==128} |phi(pred) - phi(gt)| / 1000``. When an intersection is empty its
    ``Omega`` is empty (mmeval's choice; the MATLAB code does not handle that case). Thresholds
    are compared exactly (alpha = 153 passes t = 0.6, as in MATLAB); size ties between components
    go to the first in column-major order (see :func:`_largest_component`).

    Args:
        pred, gt: ``(H, W)`` alpha mattes on a 0-255 scale.
        trimap: ``(H, W)`` with values {0, 128, 255}.
        step: threshold step; must divide 1.

    Returns:
        float >= 0.
    """
    p, g = _matte(pred, "pred"), _matte(gt, "gt")
    _check_shapes(p, g, trimap)
    return _connectivity(p, g, _unknown_mask(trimap), step)


# ----------------------------------------------------------------------------------------------
# Trimap helpers and the all-in-one entry point
# ----------------------------------------------------------------------------------------------

def quantize_trimap(trimap):
    """Snap every trimap value to the nearest of 0, 128, 255.

    Values < 64 -> 0, 64..191 -> 128 (unknown; the tie at exactly 64 goes to unknown, so a
    doubtful pixel is scored rather than dropped), >= 192 -> 255. Use it for trimaps with stray
    values, e.g. ones that went through JPEG compression or resampling.

    Args:
        trimap: ``(H, W)`` numeric array on a 0-255 scale.

    Returns:
        ``(trimap_uint8, n_changed)``: the ``(H, W)`` uint8 trimap with values in {0, 128, 255}
        and the number of pixels whose value changed.
    """
    t = np.asarray(trimap)
    q = np.where(t < 64, 0, np.where(t < 192, 128, 255)).astype(np.uint8)
    return q, int(np.count_nonzero(q != t))


def apply_trimap_known(pred, trimap):
    """Copy the trimap's known pixels into a prediction, as the benchmark protocol does.

    Args:
        pred: ``(H, W)`` matte on a 0-255 scale.
        trimap: ``(H, W)`` with values {0, 128, 255}.

    Returns:
        ``(H, W)`` float64 copy of ``pred`` with 0 where ``trimap == 0`` and 255 where
        ``trimap == 255``.
    """
    p = np.array(pred, dtype=np.float64)
    t = np.asarray(trimap)
    p[t == 0] = 0.0
    p[t == 255] = 255.0
    return p


def _check_scale(a, name):
    """Refuse float mattes that are evidently on a 0-1 scale (a silent 255x error otherwise)."""
    if np.issubdtype(a.dtype, np.floating) and a.size and a.max() <= 1.0:
        if np.any((a > 0) & (a < 1)):
            raise ValueError(
                f"{name} looks like a 0-1 matte (all values <= 1 with fractions); these metrics "
                f"take alpha on a 0-255 scale: pass {name} * 255")


def evaluate_matte(pred, gt, trimap, copy_known=True):
    """All four benchmark metrics of one prediction.

    Args:
        pred: ``(H, W)`` predicted alpha on a 0-255 scale (uint8 or float).
        gt: ``(H, W)`` ground-truth alpha on a 0-255 scale.
        trimap: ``(H, W)`` with values {0, 128, 255} (use :func:`quantize_trimap` first if not).
        copy_known: copy the trimap's known pixels into ``pred`` first
            (:func:`apply_trimap_known`), as the benchmark does; False scores ``pred`` as given.

    Returns:
        ``dict(SAD=float, MSE=float, Grad=float, Conn=float)`` in paper units: SAD, Grad and Conn
        divided by 1000, MSE a plain mean over unknown pixels of alphas in [0, 1].

    Raises:
        ValueError: shapes differ, arrays are not 2-D, or a float matte is on a 0-1 scale.
    """
    p0, g = np.asarray(pred), np.asarray(gt)
    _check_scale(p0, "pred")
    _check_scale(g, "gt")
    p, g = _matte(p0, "pred"), _matte(g, "gt")
    _check_shapes(p, g, trimap)
    if copy_known:
        p = apply_trimap_known(p, trimap)
    unknown = _unknown_mask(trimap)
    return {
        "SAD": _sad(p, g, unknown),
        "MSE": _mse(p, g, unknown),
        "Grad": _gradient(p, g, unknown, 1.4),
        "Conn": _connectivity(p, g, unknown, 0.1),
    }
