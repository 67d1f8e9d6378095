"""InstaGAN against CycleGAN on the built-in shapes data (A: warm discs -> B: cool squares).

Both models are trained from scratch at the same budget (epochs over the same images, same
``--ngf``, batch size and learning rate), then translate the A test images. Two figures per model,
judged from the output image alone (no model-specific masks, so both are judged alike):

- ``bg_change``: mean absolute difference (0-255 scale) between input and output over the
  background, i.e. outside every input instance's bounding box grown by ``--margin`` pixels (a
  square may legitimately cover a disc's bounding-box corners, nothing beyond);
- ``success``: fraction of input instances translated in shape *and* colour. Inside an instance's
  grown box, the output's saturated pixels (the shapes data has nearly gray backgrounds) form the
  translated instance; it succeeds when ``shape_score`` and ``colour_score`` of
  ``datasets/make_shapes_dataset.py`` are both >= 0.5 (square-like and cool-coloured). Also
  reported separately: ``shape_ok`` and ``colour_ok``.

Usage: ``python scripts/eval_translation.py --dataroot datasets/shapes --n_epochs 4 --name_prefix
eval`` (trains both, then prints a Markdown table and writes ``--json``).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from datasets.make_shapes_dataset import colour_score, make_shapes_dataset, shape_score  # noqa: E402
from util.util import atomic_write, tensor2im  # noqa: E402

SATURATION_MIN = 0.25   # output pixels more saturated than this count as instance pixels


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


def judge(real, fake, masks, margin=2):
    """Score one translated image.

    real, fake: (H, W, 3) uint8; masks: list of (H, W) bool, the input instances. Returns
    (bg_abs_diff_sum, bg_pixel_count, per-instance list of (shape_ok, colour_ok))."""
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
        results.append((shape_score(inst) >= 0.5, colour_score(fake, inst) >= 0.5))
    return float(diff[background].sum()), int(background.sum()), results


def instance_masks(batch):
    """The non-empty input instance masks of the first sample: list of (H, W) bool."""
    return [m.numpy() > 0 for m in batch['A_segs'][0] if (m > 0).any()]


def translate_test_set(model_name, opt_args, dataroot, n_test):
    """Load a trained run and translate testA: yields (real uint8, fake uint8, [instance masks])."""
    from data import create_dataset
    from models import create_model
    from options.test_options import TestOptions
    opt = TestOptions(['--dataroot', dataroot, '--model', model_name, '--dataset_mode', 'unaligned_seg',
                       '--num_test', str(n_test), *opt_args]).parse(save=False)
    opt.num_threads, opt.batch_size, opt.serial_batches, opt.no_flip = 0, 1, True, True
    model = create_model(opt)
    model.setup(opt)
    model.eval()
    for i, batch in enumerate(create_dataset(opt)):
        if i >= n_test:
            break
        real = batch['A']
        masks = instance_masks(batch)
        with torch.no_grad():
            if model_name == 'insta_gan':
                model.set_input(batch)
                model.test()
                fake = model.fake_B_img
            else:
                fake = model.netG_A(real.to(model.device))
        yield tensor2im(real), tensor2im(fake), masks


def evaluate(model_name, opt_args, dataroot, n_test, margin):
    bg_sum = bg_n = 0
    per_instance = []
    for real, fake, masks in translate_test_set(model_name, opt_args, dataroot, n_test):
        s, n, res = judge(real, fake, masks, margin)
        bg_sum, bg_n = bg_sum + s, bg_n + n
        per_instance += res
    shape_ok = np.array([r[0] for r in per_instance], bool)
    colour_ok = np.array([r[1] for r in per_instance], bool)
    return {'bg_change': bg_sum / max(bg_n, 1), 'success': float(np.mean(shape_ok & colour_ok)),
            'shape_ok': float(shape_ok.mean()), 'colour_ok': float(colour_ok.mean()),
            'n_instances': len(per_instance)}


def identity_baseline(dataroot, n_test, margin):
    """The do-nothing translation: zero background change, and the success rate of untouched inputs."""
    from options.test_options import TestOptions
    from data import create_dataset
    opt = TestOptions(['--dataroot', dataroot, '--model', 'insta_gan', '--dataset_mode', 'unaligned_seg',
                       '--gpu_ids', '-1', '--load_size', '64', '--crop_size', '64']).parse(save=False)
    opt.num_threads, opt.batch_size = 0, 1
    per_instance = []
    for i, batch in enumerate(create_dataset(opt)):
        if i >= n_test:
            break
        real = tensor2im(batch['A'])
        per_instance += judge(real, real, instance_masks(batch), margin)[2]
    ok = np.array(per_instance, bool)
    return {'bg_change': 0.0, 'success': float(np.mean(ok[:, 0] & ok[:, 1])), 'shape_ok': float(ok[:, 0].mean()),
            'colour_ok': float(ok[:, 1].mean()), 'n_instances': len(per_instance)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataroot', default='datasets/shapes', help='shapes data (made if missing)')
    p.add_argument('--size', type=int, default=64, help='image size (also for making the data)')
    p.add_argument('--ngf', type=int, default=16)
    p.add_argument('--n_blocks', type=int, default=3, help='InstaGAN: residual blocks per set encoder')
    p.add_argument('--cyclegan_netG', default='resnet_6blocks', help='CycleGAN generator (same depth: 2 x 3)')
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
    p.add_argument('--skip_train', action='store_true', help='evaluate existing runs only')
    p.add_argument('--json', default=None, help='write the results here')
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.dataroot, 'trainA')):
        make_shapes_dataset(args.dataroot, n_train=200, n_test=max(20, args.n_test), size=args.size, seed=0)
    import train as train_script
    common = ['--ngf', str(args.ngf), '--ndf', str(args.ngf), '--load_size', str(args.size), '--crop_size',
              str(args.size), '--checkpoints_dir', args.checkpoints_dir, '--seed', '0']
    if args.gpu_ids is not None:
        common += ['--gpu_ids', args.gpu_ids]
    runs = {
        'insta_gan': ['--name', f'{args.name_prefix}_insta_gan', '--n_blocks', str(args.n_blocks), '--ins_max',
                      str(args.ins_max), '--ins_per', str(args.ins_per)],
        'cycle_gan': ['--name', f'{args.name_prefix}_cycle_gan', '--netG', args.cyclegan_netG],
    }
    results = {'identity (no translation)': identity_baseline(args.dataroot, args.n_test, args.margin)}
    for model_name, extra in runs.items():
        seconds = None
        if not args.skip_train:
            t0 = time.time()
            rc = train_script.main(['--model', model_name, '--dataroot', args.dataroot, *common, *extra,
                                    '--n_epochs', str(args.n_epochs), '--n_epochs_decay', str(args.n_epochs_decay),
                                    '--batch_size', str(args.batch_size), '--display_id', '0',
                                    '--num_threads', '2', '--print_freq', '1000000', '--display_freq', '1000000'])
            if rc != 0:
                raise SystemExit(f'training {model_name} failed with status {rc}')
            seconds = time.time() - t0
        test_extra = [a for a in extra if a not in ('--ins_max', '--ins_per')] if model_name != 'insta_gan' else extra
        results[model_name] = evaluate(model_name, [*common, *test_extra], args.dataroot, args.n_test, args.margin)
        results[model_name]['train_seconds'] = seconds
    epochs = args.n_epochs + args.n_epochs_decay
    lines = [f'| model ({epochs} epochs, ngf {args.ngf}, {args.size} px) | background change (0-255) | '
             'translated (shape and colour) | shape | colour |', '|---|---|---|---|---|']
    for name, r in results.items():
        lines.append(f"| {name} | {r['bg_change']:.2f} | {100 * r['success']:.1f}% | {100 * r['shape_ok']:.1f}% | "
                     f"{100 * r['colour_ok']:.1f}% |")
    print('\n'.join(lines))
    if args.json:
        atomic_write(args.json, lambda f: json.dump({'options': vars(args), 'results': results}, f, indent=2),
                     mode='w')
    return results


if __name__ == '__main__':
    main()
