"""Score alpha-matting predictions with the benchmark metrics (SAD, MSE, Grad, Conn).

Usage::

    python scripts/eval_matting.py --pred results/alphagan/alpha --gt data/test/alpha \
        --trimap data/test/trimap [--json scores.json] [--baseline half] \
        [--baseline zero] [--baseline cf --image data/test/image] [--allow-missing]

Files in the three folders are matched by file-name stem (``.png .jpg .jpeg .bmp .tif .tiff``,
any case), so ``pred/doll.png`` is scored against ``gt/doll.jpg`` and ``trimap/doll.bmp``.

Protocol (the Deep Image Matting benchmark's, see :mod:`util.metrics`):

* Mattes are read as 8-bit gray (16-bit files are scaled by 1/257; 3-channel files must have
  identical channels, i.e. be gray saved as colour).
* Trimap values outside {0, 128, 255} (JPEG, resizing) are snapped to the nearest of the three
  (:func:`util.metrics.quantize_trimap`); one warning reports how many pixels in which trimaps.
* Known trimap pixels of every prediction are taken from the trimap before scoring
  (trimap 0 -> alpha 0, 255 -> 255).
* A stem that lacks a counterpart in another folder is an error (a :class:`UserInputError` that
  names the files), because a mean over a silently smaller set is not comparable with published
  numbers. ``--allow-missing`` turns this into one counted warning and scores the complete triples;
  the names then appear under ``"missing"`` in the result.
* Baselines, scored on the same images so every report has a reference: ``zero`` predicts alpha
  0 in the unknown region, ``half`` alpha 0.5 (127.5 on the 0-255 scale); ``cf`` runs closed-form matting
  (Levin et al. 2008, ``pymatting.estimate_alpha_cf``) on the RGB images of ``--image`` and
  rounds its output to 8 bits as if it had been saved as PNG; ``nearest`` projects each unknown pixel's
  colour between the nearest known foreground and background colours
  (:func:`models.matting_guidance.known_colours`, the evidence ``--guidance known_colours`` gives
  AlphaGAN), also on ``--image`` and rounded to 8 bits.

The result (and ``--json``) is::

    {"per_image": {"<stem>": {"SAD": .., "MSE": .., "Grad": .., "Conn": ..}, ...},
     "mean": {"SAD": .., "MSE": .., "Grad": .., "Conn": ..},
     "count": N,
     "baselines": {"cf": {"per_image": {...}, "mean": {...}}, ...},   # only with --baseline
     "trimap_quantised": {"pixels": K, "images": [...]},
     "missing": {"gt": [...], "trimap": [...], "pred": [...], "image": [...]}}  # only with --allow-missing

Units: SAD, Grad and Conn are divided by 1000; MSE is a plain mean over unknown pixels of alphas
in [0, 1] (multiply by 1000 for the "MSE x 1e-3" convention some tables use).
"""

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from util.errors import UserInputError  # noqa: E402
from util.metrics import apply_trimap_known, evaluate_matte, quantize_trimap  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
METRICS = ("SAD", "MSE", "Grad", "Conn")
BASELINES = ("zero", "half", "cf", "nearest")
NEEDS_IMAGE = ("cf", "nearest")
_MAX_NAMES = 10


def _names(items):
    items = sorted(items)
    shown = ", ".join(items[:_MAX_NAMES])
    return shown + (f" and {len(items) - _MAX_NAMES} more" if len(items) > _MAX_NAMES else "")


def list_images(folder, role, suffix=''):
    """Map file-name stem -> path for the images in ``folder``; with ``suffix`` (e.g. ``_alpha``,
    test.py's ``<stem>_alpha.png``) only files whose stem ends with it, keyed by the stem without it.

    Raises:
        UserInputError: the folder does not exist, or two files share a stem (``a.png``, ``a.jpg``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{role} folder {folder} does not exist or is not a folder; "
                             f"pass the folder that holds the {role} images")
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if suffix and not path.stem.endswith(suffix):
                continue
            stem = path.stem[:len(path.stem) - len(suffix)] if suffix else path.stem
            if stem in found:
                raise UserInputError(f"{role} folder has two files with the stem '{stem}': "
                                     f"{found[stem]} and {path}; keep one of them")
            found[stem] = path
    return found


def read_gray(path, role):
    """Read a matte or trimap as an ``(H, W)`` array on a 0-255 scale (uint8, or float64 for 16-bit).

    Raises:
        UserInputError: unreadable file, or a colour image whose channels differ.
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserInputError(f"cannot read {role} image {path}; is it a valid image file?")
    if img.ndim == 3:
        colour = img[..., : min(3, img.shape[2])]
        if np.any(colour != colour[..., :1]):
            raise UserInputError(f"{role} image {path} has colour channels that differ; save the "
                                 f"{role} as a single-channel grayscale PNG")
        img = img[..., 0]
    if img.dtype == np.uint16:
        img = img.astype(np.float64) / 257.0
    elif img.dtype != np.uint8:
        raise UserInputError(f"{role} image {path} has unsupported pixel type {img.dtype}; "
                             f"save it as an 8-bit grayscale PNG")
    return img


def read_rgb(path):
    """Read an RGB image as ``(H, W, 3)`` float64 in [0, 1] (for the closed-form baseline)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserInputError(f"cannot read image {path}; is it a valid image file?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0


def constant_baseline(trimap, value):
    """A trivial baseline: ``(H, W)`` float64, ``value`` (0-255) in the unknown region."""
    return apply_trimap_known(np.full(trimap.shape, float(value)), trimap)


def half_baseline(trimap):
    """The trivial baseline: ``(H, W)`` float64, 127.5 (alpha 0.5) in the unknown region."""
    return constant_baseline(trimap, 127.5)


def closed_form_baseline(image, trimap, image_path="image"):
    """Closed-form matting (``pymatting.estimate_alpha_cf``) rounded to 8 bits.

    Args:
        image: ``(H, W, 3)`` float64 RGB in [0, 1].
        trimap: ``(H, W)`` uint8 in {0, 128, 255}.

    Returns:
        ``(H, W)`` uint8 alpha on a 0-255 scale.
    """
    unknown = trimap == 128
    if not unknown.any():
        return trimap.copy()
    if unknown.all():
        raise UserInputError(f"the trimap of {image_path} has no known pixel, so the closed-form "
                             f"baseline is undefined; give it foreground/background regions")
    from pymatting import estimate_alpha_cf  # heavy import (numba), only when asked for

    tri = np.where(trimap == 0, 0.0, np.where(trimap == 255, 1.0, 0.5))
    alpha = estimate_alpha_cf(image, tri)
    return np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)


def nearest_colour_baseline(image, trimap):
    """Alpha projected between the nearest known colours (``models.matting_guidance.known_colours``),
    rounded to 8 bits: ``(H, W, 3)`` float RGB in [0, 1], ``(H, W)`` uint8 trimap in {0, 128, 255} ->
    ``(H, W)`` uint8 on a 0-255 scale."""
    import torch
    from models.matting_guidance import known_colours

    rgb = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    tri = torch.from_numpy(np.where(trimap == 128, 0.5, trimap / 255.0).astype(np.float32))[None, None]
    alpha = known_colours(rgb, tri)[2][0, 0].numpy()
    return np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)


def _mean(per_image):
    return {m: float(np.mean([v[m] for v in per_image.values()])) for m in METRICS}


def evaluate_dirs(pred_dir, gt_dir, trimap_dir, baselines=(), image_dir=None, allow_missing=False,
                  pred_suffix=''):
    """Score every prediction in ``pred_dir`` against ``gt_dir`` / ``trimap_dir`` (matched by stem).

    Args:
        pred_dir, gt_dir, trimap_dir: folders of 8-bit gray mattes / trimaps (0-255).
        baselines: any of ``"zero"``, ``"half"``, ``"cf"``, scored on the same images.
        image_dir: folder of the RGB images, needed for ``"cf"``.
        pred_suffix: predictions are ``<stem><pred_suffix>.<ext>`` (``_alpha`` for test.py's images/).
        allow_missing: score only complete (pred, gt, trimap[, image]) sets and warn once about the
            rest instead of raising.

    Returns:
        dict, see the module docstring (``per_image``, ``mean``, ``count``, ``baselines``,
        ``trimap_quantised`` and, with ``allow_missing``, ``missing``).

    Raises:
        UserInputError: missing folders or counterparts, size mismatches, unreadable files,
            unknown baseline, ``cf`` without ``image_dir``, no image to score.
    """
    baselines = list(dict.fromkeys(baselines))
    for b in baselines:
        if b not in BASELINES:
            raise UserInputError(f"unknown baseline '{b}'; choose from {', '.join(BASELINES)}")
    for b in NEEDS_IMAGE:
        if b in baselines and image_dir is None:
            raise UserInputError(f"--baseline {b} needs --image DIR, the folder of the RGB images the "
                                 "mattes belong to")

    folders = {"pred": list_images(pred_dir, "prediction", pred_suffix),
               "gt": list_images(gt_dir, "ground-truth"),
               "trimap": list_images(trimap_dir, "trimap")}
    if any(b in baselines for b in NEEDS_IMAGE):
        folders["image"] = list_images(image_dir, "RGB image")
    dirs = {"pred": pred_dir, "gt": gt_dir, "trimap": trimap_dir, "image": image_dir}

    stems = set(folders["pred"])
    missing = {role: sorted(stems - set(files)) for role, files in folders.items() if role != "pred"}
    reference = set(folders["gt"]) & set(folders["trimap"])
    missing["pred"] = sorted(reference - stems)
    missing = {role: names for role, names in missing.items() if names}
    if missing:
        lines = []
        for role, names in missing.items():
            if role == "pred":
                lines.append(f"{len(names)} image(s) with ground truth and trimap have no "
                             f"prediction in {pred_dir}: {_names(names)}")
            else:
                lines.append(f"{len(names)} prediction(s) have no {role} file in {dirs[role]}: "
                             f"{_names(names)}")
        if not allow_missing:
            raise UserInputError("files do not match up by name:\n  " + "\n  ".join(lines)
                                 + "\nadd or remove the files, or pass --allow-missing to score "
                                   "only the complete sets")
        warnings.warn("scoring only complete sets; skipped " + "; ".join(lines), UserWarning,
                      stacklevel=2)
    todo = sorted(set.intersection(*(set(files) for files in folders.values())))
    if not todo:
        raise UserInputError(f"no image to score: no file name stem is present in all of "
                             f"{', '.join(str(dirs[r]) for r in folders)}")

    per_image = {}
    per_baseline = {b: {} for b in baselines}
    quantised = {}
    for stem in todo:
        paths = {role: files[stem] for role, files in folders.items()}
        pred = read_gray(paths["pred"], "prediction")
        gt = read_gray(paths["gt"], "ground-truth")
        trimap, n_changed = quantize_trimap(read_gray(paths["trimap"], "trimap"))
        if n_changed:
            quantised[stem] = n_changed
        for role, arr in (("pred", pred), ("trimap", trimap)):
            if arr.shape != gt.shape:
                raise UserInputError(
                    f"size mismatch: {paths[role]} is {arr.shape[1]}x{arr.shape[0]} but "
                    f"{paths['gt']} is {gt.shape[1]}x{gt.shape[0]} (width x height); "
                    f"the prediction, ground truth and trimap must have the same size")
        try:
            per_image[stem] = evaluate_matte(pred, gt, trimap, copy_known=True)
        except ValueError as e:
            raise UserInputError(f"cannot score {paths['pred']} against {paths['gt']}: {e}") from e
        if "zero" in baselines:
            per_baseline["zero"][stem] = evaluate_matte(constant_baseline(trimap, 0), gt, trimap)
        if "half" in baselines:
            per_baseline["half"][stem] = evaluate_matte(half_baseline(trimap), gt, trimap)
        if any(b in baselines for b in NEEDS_IMAGE):
            image = read_rgb(paths["image"])
            if image.shape[:2] != trimap.shape:
                raise UserInputError(
                    f"size mismatch: {paths['image']} is {image.shape[1]}x{image.shape[0]} but "
                    f"{paths['trimap']} is {trimap.shape[1]}x{trimap.shape[0]} (width x height)")
            if "cf" in baselines:
                per_baseline["cf"][stem] = evaluate_matte(closed_form_baseline(image, trimap, paths["image"]),
                                                          gt, trimap)
            if "nearest" in baselines:
                per_baseline["nearest"][stem] = evaluate_matte(nearest_colour_baseline(image, trimap), gt, trimap)

    if quantised:
        warnings.warn(
            f"{sum(quantised.values())} trimap pixels in {len(quantised)} of {len(todo)} trimaps were "
            f"not 0, 128 or 255 (e.g. saved as JPEG) and were snapped to the nearest of the three: "
            f"{_names(quantised)}", UserWarning, stacklevel=2)

    result = {"per_image": per_image, "mean": _mean(per_image), "count": len(per_image),
              "trimap_quantised": {"pixels": int(sum(quantised.values())),
                                   "images": sorted(quantised)}}
    if baselines:
        result["baselines"] = {b: {"per_image": s, "mean": _mean(s)} for b, s in per_baseline.items()}
    if allow_missing:
        result["missing"] = missing
    return result


def format_table(result, method="method"):
    """The per-image and mean metrics as a fixed-width text table (baselines side by side)."""
    groups = [(method, result["per_image"], result["mean"])]
    for b, scores in result.get("baselines", {}).items():
        groups.append((b, scores["per_image"], scores["mean"]))
    width = max([len("mean")] + [len(s) for s in result["per_image"]])
    cols = [f"{g}:{m}" for g, _, _ in groups for m in METRICS]
    cw = max(10, max(len(c) for c in cols))
    lines = ["name".ljust(width) + "".join(c.rjust(cw + 1) for c in cols)]

    def row(name, getter):
        return name.ljust(width) + "".join(f"{getter(g)[m]:>{cw + 1}.5f}"
                                           for g in groups for m in METRICS)

    for stem in result["per_image"]:
        lines.append(row(stem, lambda g, s=stem: g[1][s]))
    lines.append("-" * len(lines[0]))
    lines.append(row("mean", lambda g: g[2]))
    lines.append(f"{result['count']} images; SAD, Grad, Conn / 1000; MSE plain mean over unknown pixels")
    return "\n".join(lines)


def write_json_atomic(obj, path):
    """Write ``obj`` as JSON to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, help="folder of predicted alpha mattes (8-bit gray)")
    p.add_argument("--gt", required=True, help="folder of ground-truth alpha mattes")
    p.add_argument("--trimap", required=True, help="folder of trimaps (0 / 128 / 255)")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.add_argument("--baseline", action="append", default=[], choices=BASELINES,
                   help="also score a baseline: 'zero' / 'half' (alpha 0 / 0.5 in the unknown region), 'cf' "
                        "(closed-form matting, needs --image) or 'nearest' (alpha projected between the nearest "
                        "known colours, needs --image); repeatable")
    p.add_argument("--image", help="folder of the RGB images (for --baseline cf / nearest)")
    p.add_argument("--pred_suffix", default="",
                   help="predictions are <stem><suffix>.png, e.g. _alpha for test.py's results/<name>/.../images")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only complete sets and warn about unmatched files instead of failing")
    p.add_argument("--name", default="method", help="column label of the scored method")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = evaluate_dirs(args.pred, args.gt, args.trimap, baselines=args.baseline,
                                   image_dir=args.image, allow_missing=args.allow_missing,
                                   pred_suffix=args.pred_suffix)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(format_table(result, args.name))
    if args.json:
        write_json_atomic(result, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
