"""BackgroundMattingV2 inference benchmark: ``python scripts/benchmark.py --model bgmv2 [options]``.

One JSON line per configuration (size x precision x refine mode), then a markdown table::

    python scripts/benchmark.py --model bgmv2 --sizes hd,4k --modes full,sampling,thresholding \\
        --amp_modes none,bf16 [--weights latest_net_G.pth] [--quality 8] [--iters 3 --warmup 1]

* Sizes: ``hd`` 1920x1080 at backbone scale 1/4 with 80,000 sampled pixels, ``4k`` 3840x2160 at 1/8
  with 320,000 (the paper's recommended settings); ``WxH`` for others (scale 1/4, 80,000).
* ``full`` is the official structure's full-resolution refinement (every pixel, plain convolutions):
  the baseline; ``x_full`` is each row's frames/s over the ``full`` row of the same size and
  precision, measured in the same process minutes apart.
* Input: the first image of the synthetic matting test set (built in; ``--dataroot`` for another
  with ``test/merged`` or ``test/src`` and ``test/bgr``) resized bilinearly to the size. Without
  ``--weights`` the network is randomly initialised and 'sampling' refines exactly its k patches
  (``refine_prevent_oversampling`` off, as the official speed test); 'thresholding' then refines
  whatever the random error map exceeds, reported as ``refined``.
* Time: median wall time of ``--iters`` forward passes after ``--warmup`` (no gradients; CUDA
  synchronised). Memory: CUDA ``max_memory_allocated`` above the weights; on CPU the peak of live
  tensor memory of one more pass (the profiler's allocation records; ``peak_live_mb``).
* ``--sample_pixels K1,K2,...``: one 'sampling' row per k (default: the size's preset), to see how
  many refined pixels SAD within a margin of full refinement costs, and at what speed.
* ``--oracle`` (with ``--quality``): per k, the SAD when the k / 16 patches where the upsampled
  coarse alpha's *true* error is largest take full refinement's output, the upsampled coarse alpha
  elsewhere: what sampling would give with a perfect error map, to tell the error map's share of a
  gap from the data's.
* ``--quality N``: SAD (whole image, / 1000, on 8-bit mattes) of every mode over the first N test
  images resized to the size (src, plate and ground truth bilinearly), float32; ``sad_vs_full`` is
  the mean SAD over the full mode's. Meaningful with trained ``--weights`` only.
"""
import argparse
import json
import os
import platform
import statistics
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.base_model import load_weights_file
from models.bgmv2_networks import MattingRefine, REFINE_MODES
from util import train_step
from util.metrics import UNKNOWN, compute_sad

PRESETS = {'hd': (1920, 1080, 0.25, 80_000), '4k': (3840, 2160, 0.125, 320_000)}


def build_parser():
    p = argparse.ArgumentParser(prog='benchmark.py --model bgmv2', description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='hd,4k', help='hd, 4k or WxH, comma-separated')
    p.add_argument('--modes', default='full,sampling,thresholding', help='refine modes, comma-separated')
    p.add_argument('--amp_modes', default=None,
                   help='precisions, comma-separated (none, bf16, fp16); default none plus --amp, or none,bf16 on '
                        'CPU and none,fp16 on CUDA when --amp is none')
    p.add_argument('--backbone', default='mobilenetv2')
    p.add_argument('--weights', default=None, help='MattingRefine state dict (ours or official)')
    p.add_argument('--refine_threshold', type=float, default=0.1)
    p.add_argument('--dataroot', default=None, help='a matting test set (default: the built-in synthetic one)')
    p.add_argument('--quality', type=int, default=0, help='images of the test set to score per mode (0: none)')
    p.add_argument('--sample_pixels', default=None,
                   help="'sampling' rows' refined pixels, comma-separated (default: the size's preset); e.g. "
                        '320000,1000000,2000000 to see what SAD within a margin of full costs')
    p.add_argument('--oracle', action='store_true',
                   help="with --quality and the full mode: an 'oracle' row per sampled-pixel count, the SAD of "
                        'sampling had its error map been the true error (no timing)')
    return p


def parse_size(text):
    if text.lower() in PRESETS:
        return (text.lower(),) + PRESETS[text.lower()]
    w, h = (int(v) for v in text.lower().split('x'))
    return text, w, h, 0.25, 80_000


def test_pairs(dataroot, n):
    """[(src, bgr, pha)] float32 tensors (1, C, H, W) in [0, 1] of the first ``n`` test images."""
    if dataroot is None:
        from datasets.builtin import ensure_builtin
        dataroot = ensure_builtin('matting', reason='benchmark --model bgmv2', echo=False)
    test = os.path.join(dataroot, 'test') if os.path.isdir(os.path.join(dataroot, 'test')) else dataroot
    src_dir = os.path.join(test, 'src') if os.path.isdir(os.path.join(test, 'src')) else os.path.join(test, 'merged')
    pha_dir = os.path.join(test, 'pha') if os.path.isdir(os.path.join(test, 'pha')) else os.path.join(test, 'alpha')
    out = []
    for name in sorted(os.listdir(src_dir))[:max(1, n)]:
        def read(folder, gray=False):
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
            img = img[..., None] if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        out.append((read(src_dir), read(os.path.join(test, 'bgr')), read(pha_dir, gray=True)))
    return out


def resized(t, w, h):
    return F.interpolate(t, (h, w), mode='bilinear', align_corners=False).clamp(0, 1)


def build(args, mode, scale, pixels, device):
    net = MattingRefine(args.backbone, scale, mode, pixels, args.refine_threshold,
                        refine_prevent_oversampling=args.weights is not None)
    if args.weights:
        net.load_state_dict(load_weights_file(args.weights), strict=True)
    return net.to(device).eval()


def run_bgmv2(common):
    """``common``: benchmark.py's parsed arguments (``--iters``, ``--warmup``, ``--device``, ``--threads``,
    ``--amp``, ``--seed``); the rest of the command line (``common.train_options``) is parsed here."""
    args = build_parser().parse_args(common.train_options)
    device = torch.device(common.device)
    torch.manual_seed(common.seed)
    if common.threads:
        torch.set_num_threads(common.threads)
    modes = [m for m in args.modes.split(',') if m]
    bad = [m for m in modes if m not in REFINE_MODES]
    if bad:
        raise SystemExit(f'--modes: unknown {bad}; choose from {REFINE_MODES}')
    if args.amp_modes:
        precisions = args.amp_modes.split(',')
    else:
        precisions = ['none', common.amp if common.amp != 'none' else ('fp16' if device.type == 'cuda' else 'bf16')]
    pairs = test_pairs(args.dataroot, max(1, args.quality))
    cuda = device.type == 'cuda'

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    rows = []
    for size_name, w, h, scale, pixels in (parse_size(s) for s in args.sizes.split(',') if s):
        src, bgr = (resized(t, w, h).to(device) for t in pairs[0][:2])
        for amp in precisions:
            full_fps = full_sad = None
            ks = [int(k) for k in args.sample_pixels.split(',')] if args.sample_pixels else [pixels]
            configs = [(m, k) for m in sorted(modes, key=lambda m: m != 'full')        # the baseline first
                       for k in (ks if m == 'sampling' else [pixels])]
            for mode, pixels in configs:
                torch.manual_seed(common.seed)
                net = build(args, mode, scale, pixels, device)
                out = {}

                def call():
                    with torch.no_grad(), train_step.autocast(amp, device):
                        out['ref'] = net(src, bgr)[-1]
                if cuda:
                    sync()
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                for _ in range(common.warmup):
                    call()
                sync()
                times = []
                for _ in range(common.iters):
                    t0 = time.perf_counter()
                    call()
                    sync()
                    times.append(time.perf_counter() - t0)
                if cuda:
                    peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
                else:
                    from scripts.benchmark import live_peak_mb
                    peak = live_peak_mb(call)
                s = statistics.median(times)
                rec = {'model': 'bgmv2', 'size': size_name, 'width': w, 'height': h, 'mode': mode, 'amp': amp,
                       'backbone': args.backbone, 'backbone_scale': scale, 'sample_pixels': pixels,
                       'weights': args.weights or 'random', 'device': str(device),
                       'device_name': torch.cuda.get_device_name(device) if cuda else platform.processor() or
                       platform.machine(), 'threads': torch.get_num_threads(), 's_per_frame': s, 'fps': 1 / s,
                       'peak_mem_mb': peak, 'refined': float(out['ref'].float().mean()),
                       'loadavg_1_5_15': list(os.getloadavg())}
                if mode == 'full':
                    full_fps = rec['fps']
                rec['x_full'] = rec['fps'] / full_fps if full_fps else None
                oracle = []
                if args.quality and amp == 'none':
                    if mode == 'full' and args.oracle:     # full's SAD and the oracle's from the same passes
                        rec['sad'], oracle = oracle_sads(net, pairs, w, h, ks, device)
                    else:
                        rec['sad'] = mean_sad(net, pairs, w, h, device)
                    full_sad = rec['sad'] if mode == 'full' else full_sad
                    rec['sad_vs_full'] = rec['sad'] / full_sad if full_sad else None
                rows.append(rec)
                print(json.dumps(rec), flush=True)
                for k, sad in zip(ks, oracle):
                    rows.append({**rec, 'mode': 'oracle', 'sample_pixels': k, 'sad': sad, 'sad_vs_full': sad / full_sad,
                                 's_per_frame': None, 'fps': None, 'x_full': None, 'peak_mem_mb': None,
                                 'refined': min(1.0, k / 16 / (w // 4 * (h // 4)))})
                    print(json.dumps(rows[-1]), flush=True)
                del net
    print(markdown_table(rows), flush=True)
    return rows


def sad8(pred, gt):
    """SAD / 1000 (whole image) of ``pred`` as an 8-bit matte against ``gt``; both (1, 1, H, W) in [0, 1]."""
    pred8 = (pred[0, 0].float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    gt = np.round(gt[0, 0].double().numpy() * 255, 3)
    return compute_sad(pred8, gt, np.full(gt.shape, UNKNOWN, np.uint8))


def mean_sad(net, pairs, w, h, device):
    """Mean SAD / 1000 (whole image, 8-bit mattes) of ``net`` over ``pairs`` resized to (w, h)."""
    sads = []
    for src, bgr, pha in pairs:
        with torch.no_grad():
            pred = net(resized(src, w, h).to(device), resized(bgr, w, h).to(device))[0]
        sads.append(sad8(pred, resized(pha, w, h)))
    return float(np.mean(sads))


def oracle_sads(net, pairs, w, h, ks, device):
    """(mean SAD / 1000 of ``net``, a 'full' MattingRefine, [the same of sampling with a perfect error
    map, one per k of ``ks``]): full refinement's alpha on the ``k // 16`` 4x4 patches where the
    bilinearly upsampled coarse alpha is furthest from the truth, the upsampled coarse alpha elsewhere
    (as the sampling mode does). One forward pass per image for all of it."""
    full_sads, sads = np.zeros(len(pairs)), np.zeros((len(pairs), len(ks)))
    for i, (src, bgr, pha) in enumerate(pairs):
        gt = resized(pha, w, h)
        with torch.no_grad():
            out = net(resized(src, w, h).to(device), resized(bgr, w, h).to(device))
        full, pha_sm = out[0].float().cpu(), out[2].float().cpu()
        full_sads[i] = sad8(full, gt)
        up = F.interpolate(pha_sm, (h, w), mode='bilinear', align_corners=False)
        error = F.avg_pool2d((up - gt).abs(), 4)
        order = error.flatten().argsort(descending=True)
        for j, k in enumerate(ks):
            keep = torch.zeros(error.numel())
            keep[order[:k // 16]] = 1
            keep = F.interpolate(keep.view_as(error), scale_factor=4, mode='nearest')
            sads[i, j] = sad8(keep * full + (1 - keep) * up, gt)
    return float(full_sads.mean()), sads.mean(0).tolist()


def markdown_table(rows):
    def f(v, spec):
        return '-' if v is None else format(v, spec)
    lines = ['| size | precision | mode | sampled pixels | frames/s | x full | peak MB | refined | SAD | SAD / full |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['size']} ({r['width']}x{r['height']}, scale {r['backbone_scale']:g}) | {r['amp']} | "
                     f"{r['mode']} | {r['sample_pixels'] if r['mode'] in ('sampling', 'oracle') else '-'} | "
                     f"{f(r['fps'], '.3f')} | {f(r['x_full'], '.2f')} | {f(r['peak_mem_mb'], '.0f')} | "
                     f"{r['refined']:.3f} | {f(r.get('sad'), '.3f')} | {f(r.get('sad_vs_full'), '.3f')} |")
    return '\n'.join(lines)
