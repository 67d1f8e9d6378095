"""InstaGAN against CycleGAN on the built-in shapes data (A: warm discs <-> B: cool squares).

Both models are trained from scratch at the same budget (epochs over the same images, same
``--ngf``, batch size and learning rate), then translate the A test images to B (discs -> squares,
which must *add* pixels at the corners) and the B test images to A (squares -> discs, which must
*remove* them). Two figures per model and direction, judged from the output image alone (no
model-specific masks, so both are judged alike):

- ``bg_change``: mean absolute difference (0-255 scale) between input and output over the
  background, i.e. outside every input instance's bounding box grown by ``--margin`` pixels (a
  square may legitimately cover a disc's bounding-box corners, nothing beyond);
- ``success``: fraction of input instances translated in shape *and* colour. Inside an instance's
  grown box, the output's saturated pixels (the shapes data has nearly gray backgrounds) form the
  translated instance; it succeeds when ``shape_score`` and ``colour_score`` of
  ``datasets/make_shapes_dataset.py`` are both on the target domain's side of 0.5 (A -> B:
  square-like and cool, >= 0.5; B -> A: disc-like and warm, < 0.5). Also reported separately:
  ``shape_ok`` and ``colour_ok``.

Usage: ``python scripts/eval_translation.py --dataroot datasets/shapes --n_epochs 4 --name_prefix
eval`` (trains both, then prints a Markdown table and writes ``--json``).
"""
import argparse
import itertools
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from datasets.make_shapes_dataset import colour_score, make_shapes_dataset, shape_score  # noqa: E402
from util.util import atomic_write, tensor2im  # noqa: E402

SATURATION_MIN = 0.25   # output pixels more saturated than this count as instance pixels
DIRECTIONS = (('A', 'AtoB'), ('B', 'BtoA'))   # (input side, direction)
VARIANT_KEYS = {'insta_gan': 'insta_gan', 'insta_gan --blend matte': 'insta_gan_matte',   # row -> --models key
                'insta_gan --blend matte + matting losses': 'insta_gan_matte_losses',
                'insta_gan --upsample resize': 'insta_gan_resize',
                'insta_gan --blend matte --upsample resize': 'insta_gan_matte_resize',
                'insta_gan --blend matte --upsample resize --feather': 'insta_gan_matte_resize_feather',
                'cycle_gan': 'cycle_gan'}


def saturation(img):
    """(H, W, 3) uint8 -> (H, W) HSV saturation in [0, 1]."""
    x = img.astype(np.float32)
    mx, mn = x.max(2), x.min(2)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)


def grown_box(mask, margin):
    """Bool (H, W): the bounding box of ``mask`` grown by ``margin`` pixels, clipped to the image."""
    ys, xs = np.nonzero(mask)
    box = np.zeros_like(mask)
    H, W = mask.shape
    box[max(0, ys.min() - margin):min(H, ys.max() + margin + 1),
        max(0, xs.min() - margin):min(W, xs.max() + margin + 1)] = True
    return box


def judge(real, fake, masks, margin=2, target='B'):
    """Score one translated image.

    real, fake: (H, W, 3) uint8; masks: list of (H, W) bool, the input instances; target: the
    domain translated to ('B': squares, cool; 'A': discs, warm). Returns (bg_abs_diff_sum,
    bg_pixel_count, per-instance list of (shape_ok, colour_ok))."""
    if target not in ('A', 'B'):
        raise ValueError(f"target must be 'A' or 'B', got {target!r}")
    to_b = target == 'B'
    boxes = [grown_box(m, margin) for m in masks]
    background = ~np.any(boxes, axis=0) if boxes else np.ones(real.shape[:2], bool)
    diff = np.abs(real.astype(np.float32) - fake.astype(np.float32)).mean(2)
    sat = saturation(fake) > SATURATION_MIN
    results = []
    for box in boxes:
        inst = box & sat
        if inst.sum() < 4:
            results.append((False, False))
            continue
        results.append(((shape_score(inst) >= 0.5) == to_b, (colour_score(fake, inst) >= 0.5) == to_b))
    return float(diff[background].sum()), int(background.sum()), results


def instance_masks(batch, side='A'):
    """The non-empty input instance masks of the first sample of ``side``: list of (H, W) bool."""
    return [m.numpy() > 0 for m in batch[side + '_segs'][0] if (m > 0).any()]


def load_test_batches(dataroot, n_test, opt_args=()):
    """(opt, the first ``n_test`` test batches of ``unaligned_seg``, in file order, unflipped)."""
    from data import create_dataset
    from options.test_options import TestOptions
    opt = TestOptions(['--dataroot', dataroot, '--dataset_mode', 'unaligned_seg', '--num_test', str(n_test),
                       *opt_args]).parse(save=False)
    opt.num_threads, opt.batch_size, opt.serial_batches, opt.no_flip = 0, 1, True, True
    return opt, list(itertools.islice(create_dataset(opt), n_test))


def translate_test_set(model_name, opt_args, dataroot, n_test):
    """Load a trained run and translate testA to B and testB to A.

    Yields (direction 'AtoB' | 'BtoA', real uint8, fake uint8, [input instance masks], translated
    masks' union (H, W) bool or None for a model without masks)."""
    from models import create_model
    opt, batches = load_test_batches(dataroot, n_test, ['--model', model_name, *opt_args])
    model = create_model(opt)
    model.setup(opt)
    model.eval()
    for batch in batches:
        with torch.no_grad():
            if model_name == 'insta_gan':
                model.set_input(batch)
                model.test()
                fakes = {'A': model.fake_B_img, 'B': model.fake_A_img}
                fake_masks = {'A': model.fake_B_seg[0, 0].cpu().numpy() > 0, 'B': model.fake_A_seg[0, 0].cpu().numpy() > 0}
            else:
                fakes = {'A': model.netG_A(batch['A'].to(model.device)),
                         'B': model.netG_B(batch['B'].to(model.device))}
                fake_masks = {'A': None, 'B': None}
        for side, direction in DIRECTIONS:
            yield (direction, tensor2im(batch[side]), tensor2im(fakes[side]), instance_masks(batch, side),
                   fake_masks[side])


def outside_both(real, fake, masks, margin=2):
    """(abs-diff sum, pixel count) of the background outside both the input instances' grown boxes
    and the instances visible in the output (its saturated pixels grown by ``margin``): the pixels no
    translation of an instance may touch. real, fake (H, W, 3) uint8; masks as in :func:`judge`."""
    outside = ~np.any([grown_box(m, margin) for m in masks], axis=0) if masks else np.ones(real.shape[:2], bool)
    sat = saturation(fake) > SATURATION_MIN
    if sat.any():
        k = 2 * margin + 1
        outside &= cv2.dilate(sat.astype(np.uint8), np.ones((k, k), np.uint8)) == 0
    diff = np.abs(real.astype(np.float32) - fake.astype(np.float32)).mean(2)
    return float(diff[outside].sum()), int(outside.sum())


def mask_iou(fake, fake_mask):
    """IoU of a model's translated masks (their union, (H, W) bool) with the instances visible in its
    translated image (saturated pixels); 1.0 when both are empty."""
    sat = saturation(fake) > SATURATION_MIN
    union = (sat | fake_mask).sum()
    return float((sat & fake_mask).sum() / union) if union else 1.0


def checkerboard(img):
    """Share (0-1) of an image's spectral energy (grey, mean removed) at the frequencies where the x2
    and x4 upsampling grids of transposed convolutions put their checkerboard: periods 2 and 4 along
    x, y and both. img: (H, W, 3) uint8, H and W multiples of 4. The input images' share is the
    natural level of the data (their textures have some energy there too)."""
    g = img.astype(np.float64).mean(2)
    power = np.abs(np.fft.fft2(g - g.mean())) ** 2
    H, W = g.shape
    ys, xs = {0, H // 4, H // 2, 3 * H // 4}, {0, W // 4, W // 2, 3 * W // 4}
    grid = [(y, x) for y in ys for x in xs if (y, x) != (0, 0)]
    total = power.sum()
    return float(sum(power[y, x] for y, x in grid) / total) if total else 0.0


def summarise(acc):
    """One direction's accumulated figures (see :func:`evaluate_pairs`) -> its table row's values."""
    ok = np.array(acc['per_instance'], bool).reshape(-1, 2)
    return {'bg_change': acc['bg_sum'] / max(acc['bg_n'], 1),
            'bg_change_outside_both': acc['both_sum'] / acc['both_n'] if acc['both_n'] else None,
            'outside_both_share': acc['both_n'] / max(acc['pixels'], 1),
            'success': float(np.mean(ok[:, 0] & ok[:, 1])), 'shape_ok': float(ok[:, 0].mean()),
            'colour_ok': float(ok[:, 1].mean()), 'n_instances': len(ok),
            'mask_iou': float(np.mean(acc['ious'])) if acc['ious'] else None,
            'checkerboard': float(np.mean(acc['boards']))}


def evaluate_pairs(pairs, margin):
    """pairs: iterable of (direction, real, fake, masks, translated masks or None) -> {direction: figures}."""
    acc = {}
    for direction, real, fake, masks, fake_mask in pairs:
        a = acc.setdefault(direction, {'bg_sum': 0.0, 'bg_n': 0, 'per_instance': [], 'both_sum': 0.0, 'both_n': 0,
                                       'pixels': 0, 'ious': [], 'boards': []})
        bg_sum, bg_n, per_instance = judge(real, fake, masks, margin, target=direction[-1])
        both_sum, both_n = outside_both(real, fake, masks, margin)
        a['bg_sum'] += bg_sum
        a['bg_n'] += bg_n
        a['per_instance'] += per_instance
        a['both_sum'] += both_sum
        a['both_n'] += both_n
        a['pixels'] += real.shape[0] * real.shape[1]
        a['boards'].append(checkerboard(fake))
        if fake_mask is not None:
            a['ious'].append(mask_iou(fake, fake_mask))
    return {d: summarise(a) for d, a in sorted(acc.items())}


def evaluate(model_name, opt_args, dataroot, n_test, margin):
    return evaluate_pairs(translate_test_set(model_name, opt_args, dataroot, n_test), margin)


def identity_baseline(dataroot, n_test, margin, size=64):
    """The do-nothing translation: zero background change, and the success rate of untouched inputs."""
    _, batches = load_test_batches(dataroot, n_test, ['--model', 'insta_gan', '--gpu_ids', '-1', '--load_size',
                                                 str(size), '--crop_size', str(size)])
    pairs = ((d, real, real, instance_masks(b, side), None)
             for b in batches for side, d in DIRECTIONS for real in [tensor2im(b[side])])
    return evaluate_pairs(pairs, margin)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataroot', default='datasets/shapes', help='shapes data (made if missing)')
    p.add_argument('--size', type=int, default=64, help='image size (also for making the data)')
    p.add_argument('--ngf', type=int, default=16)
    p.add_argument('--n_blocks', type=int, default=3, help='InstaGAN: residual blocks per set encoder')
    p.add_argument('--cyclegan_netG', default='resnet_6blocks', help='CycleGAN generator (same depth: 2 x 3)')
    p.add_argument('--models', nargs='+', default=list(VARIANT_KEYS.values()),
                   help='rows to train and evaluate: ' + ', '.join(f'{k} ({row})' for row, k in VARIANT_KEYS.items()))
    p.add_argument('--lambda_alpha', type=float, default=1.0, help='matting-loss row: --lambda_alpha')
    p.add_argument('--lambda_comp', type=float, default=1.0, help='matting-loss row: --lambda_comp')
    p.add_argument('--feather', type=int, default=1, help='feathered row: --feather')
    p.add_argument('--n_epochs', type=int, default=4)
    p.add_argument('--n_epochs_decay', type=int, default=2)
    p.add_argument('--batch_size', type=int, default=1)
    p.add_argument('--ins_max', type=int, default=4)
    p.add_argument('--ins_per', type=int, default=2)
    p.add_argument('--n_test', type=int, default=50)
    p.add_argument('--margin', type=int, default=2, help='pixels added around instance boxes')
    p.add_argument('--gpu_ids', default=None)
    p.add_argument('--checkpoints_dir', default='./checkpoints')
    p.add_argument('--name_prefix', default='eval_translation')
    p.add_argument('--seed', type=int, default=0,
                   help='training seed of every row (run names get _seedN when not 0); the test set stays seed 0')
    p.add_argument('--skip_train', action='store_true', help='evaluate existing runs only')
    p.add_argument('--json', default=None, help='write the results here')
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.dataroot, 'trainA')):
        make_shapes_dataset(args.dataroot, n_train=200, n_test=max(20, args.n_test), size=args.size, seed=0)
    import train as train_script
    common = ['--ngf', str(args.ngf), '--ndf', str(args.ngf), '--load_size', str(args.size), '--crop_size',
              str(args.size), '--checkpoints_dir', args.checkpoints_dir, '--seed', str(args.seed)]
    if args.gpu_ids is not None:
        common += ['--gpu_ids', args.gpu_ids]
    insta = ['--n_blocks', str(args.n_blocks), '--ins_max', str(args.ins_max), '--ins_per', str(args.ins_per)]
    matte = ['--blend', 'matte']
    losses = ['--lambda_alpha', str(args.lambda_alpha), '--lambda_comp', str(args.lambda_comp)]
    variants = {   # row name -> (model, its options, of which these are training-only)
        'insta_gan': ('insta_gan', insta, []),
        'insta_gan --blend matte': ('insta_gan', insta + matte, []),
        'insta_gan --blend matte + matting losses': ('insta_gan', insta + matte + losses, losses),
        'insta_gan --upsample resize': ('insta_gan', insta + ['--upsample', 'resize'], []),
        'insta_gan --blend matte --upsample resize': ('insta_gan', insta + matte + ['--upsample', 'resize'], []),
        'insta_gan --blend matte --upsample resize --feather': (
            'insta_gan', insta + matte + ['--upsample', 'resize', '--feather', str(args.feather)], []),
        'cycle_gan': ('cycle_gan', ['--netG', args.cyclegan_netG], []),
    }
    unknown = set(args.models) - {VARIANT_KEYS[v] for v in variants}
    if unknown:
        p.error(f'--models: unknown {sorted(unknown)}; choose from {sorted(VARIANT_KEYS.values())}')
    suffix = f'_seed{args.seed}' if args.seed else ''
    runs = {row: (model, ['--name', f'{args.name_prefix}_{VARIANT_KEYS[row]}{suffix}', *extra], train_only)
            for row, (model, extra, train_only) in variants.items() if VARIANT_KEYS[row] in args.models}
    results = {'identity (no translation)': identity_baseline(args.dataroot, args.n_test, args.margin, args.size)}
    for row, (model_name, extra, train_only) in runs.items():
        seconds = None
        if not args.skip_train:
            t0 = time.time()
            rc = train_script.main(['--model', model_name, '--dataroot', args.dataroot, *common, *extra,
                                    '--n_epochs', str(args.n_epochs), '--n_epochs_decay', str(args.n_epochs_decay),
                                    '--batch_size', str(args.batch_size), '--display_id', '0',
                                    '--num_threads', '2', '--print_freq', '1000000', '--display_freq', '1000000'])
            if rc != 0:
                raise SystemExit(f'training {row} failed with status {rc}')
            seconds = time.time() - t0
        test_extra = [a for a in extra if a not in train_only]
        results[row] = evaluate(model_name, [*common, *test_extra], args.dataroot, args.n_test, args.margin)
        results[row]['train_seconds'] = seconds
    epochs = args.n_epochs + args.n_epochs_decay
    lines = [f'| model ({epochs} epochs, ngf {args.ngf}, {args.size} px, seed {args.seed}) | direction | background change (0-255) | '
             'outside both (0-255) | translated (shape and colour) | shape | colour | mask IoU | checkerboard |',
             '|---|---|---|---|---|---|---|---|---|']
    for name, by_direction in results.items():
        for direction, r in by_direction.items():
            if direction == 'train_seconds':
                continue
            iou = '-' if r['mask_iou'] is None else f"{r['mask_iou']:.3f}"
            both = '-' if r['bg_change_outside_both'] is None else \
                f"{r['bg_change_outside_both']:.2f} ({100 * r['outside_both_share']:.0f}% of pixels)"
            lines.append(f"| {name} | {direction[0]} -> {direction[-1]} ({r['n_instances']} instances) | "
                         f"{r['bg_change']:.2f} | {both} | {100 * r['success']:.1f}% | "
                         f"{100 * r['shape_ok']:.1f}% | {100 * r['colour_ok']:.1f}% | {iou} | {100 * r['checkerboard']:.2f}% |")
    print('\n'.join(lines))
    if args.json:
        atomic_write(args.json, lambda f: json.dump({'options': vars(args), 'results': results}, f, indent=2),
                     mode='w')
    return results


if __name__ == '__main__':
    main()
