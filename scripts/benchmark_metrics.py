"""Time the matting metrics of :mod:`util.metrics` on a synthetic matte and print one JSON line.

Usage::

    python scripts/benchmark_metrics.py [--size 1000] [--runs 7] [--seed 0]

The matte is a soft-edged disc (gt) with a smoothly perturbed prediction and a trimap whose
unknown band is the soft edge, so the connectivity loop sees realistic components. Output, one
line: ``{"size": [H, W], "runs": R, "unknown_pixels": N, "seconds": {"SAD": .., "MSE": ..,
"Grad": .., "Conn": ..}, "sum_of_metrics": .., "evaluate_matte": ..}``, each the median over
``runs`` calls (``evaluate_matte`` includes the known-pixel copy).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from util.metrics import (compute_connectivity, compute_gradient, compute_mse,  # noqa: E402
                          compute_sad, evaluate_matte)


def synthetic_matte(size, seed=0):
    """Return ``(pred, gt, trimap)``, each ``(size, size)`` uint8 on a 0-255 scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    gt = np.clip((0.3 * size - r) * 255.0 / (0.1 * size), 0, 255).round().astype(np.uint8)
    noise = cv2.GaussianBlur(rng.normal(0, 60, (size, size)), (0, 0), 3)
    pred = np.clip(gt + noise, 0, 255).round().astype(np.uint8)
    trimap = np.full((size, size), 128, np.uint8)
    trimap[gt == 0] = 0
    trimap[gt == 255] = 255
    return pred, gt, trimap


def median_seconds(fn, args, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1000, help="matte height and width in pixels")
    p.add_argument("--runs", type=int, default=7, help="timed calls per metric (median reported)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.size < 8 or args.runs < 1:
        p.error("--size must be >= 8 and --runs >= 1")
    pred, gt, trimap = synthetic_matte(args.size, args.seed)
    data = (pred, gt, trimap)
    evaluate_matte(*data)  # warm-up (imports, allocator)
    seconds = {name: median_seconds(fn, data, args.runs)
               for name, fn in (("SAD", compute_sad), ("MSE", compute_mse),
                                ("Grad", compute_gradient), ("Conn", compute_connectivity))}
    out = {"size": [args.size, args.size], "runs": args.runs,
           "unknown_pixels": int(np.count_nonzero(trimap == 128)),
           "seconds": {k: round(v, 5) for k, v in seconds.items()},
           "sum_of_metrics": round(sum(seconds.values()), 5),
           "evaluate_matte": round(median_seconds(evaluate_matte, data, args.runs), 5)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
