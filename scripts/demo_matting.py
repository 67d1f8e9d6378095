"""AlphaGAN demo on CPU in a few minutes: synthetic data, brief training, test page, evaluation.

Steps:

1. make the synthetic matting set ``datasets/matting_synth`` (``datasets/make_matting_dataset.py``)
   if it is not there;
2. train ``--model alphagan`` from scratch (no ImageNet weights: no internet needed) for ``--iters``
   iterations of batch size 1 on ``--crop_size`` crops;
3. run test.py on the held-out test layout (full resolution; HTML page with the metrics table);
4. score the saved ``<stem>_alpha.png`` mattes with ``scripts/eval_matting.py``'s ``evaluate_dirs``
   next to the trivial baseline (alpha 0.5 in the unknown region) and print both, plus the mean SAD
   of alpha 0 in the unknown region (a stronger trivial reference on this data, whose unknown band
   is mostly background).

With the defaults (240 iterations of 64 px crops, one thread) training took about 3 minutes on a
shared 2-core machine; the model beats the 0.5 baseline clearly but only reaches the level of the
all-zero reference at this budget (it learns the soft halo first, thin strands much later).

``--model dim`` runs Deep Image Matting's stage 1 (encoder-decoder, alpha + composition losses) under
the same protocol and budget, for a like-for-like comparison.

Usage: ``python scripts/demo_matting.py [--model alphagan|dim] [--iters 240] [--crop_size 64] [--lr 2e-4] [--eval]``.
Exit status 0 when it ran (whatever the scores), 2 on a user error.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import test as test_script  # noqa: E402
import train as train_script  # noqa: E402
from datasets.make_matting_dataset import make_matting_dataset  # noqa: E402
from scripts.eval_matting import evaluate_dirs, format_table, read_gray  # noqa: E402
from util.metrics import evaluate_matte, quantize_trimap  # noqa: E402
from util.errors import UserInputError  # noqa: E402

N_EPOCHS, N_EPOCHS_DECAY = 2, 2   # constant learning rate, then linear decay to zero


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataroot', default=str(ROOT / 'datasets' / 'matting_synth'),
                   help='synthetic matting set (made here when missing)')
    p.add_argument('--model', default='alphagan', choices=('alphagan', 'dim'),
                   help='dim: Deep Image Matting stage 1 (encoder-decoder, no ImageNet weights here)')
    p.add_argument('--name', default=None, help='run name (default <model>_demo)')
    p.add_argument('--checkpoints_dir', default=str(ROOT / 'checkpoints'))
    p.add_argument('--results_dir', default=str(ROOT / 'results'))
    p.add_argument('--iters', type=int, default=240, help='training iterations (batch size 1)')
    p.add_argument('--crop_size', type=int, default=64,
                   help='training crop side; windows of this size are cut from the images, not resized')
    p.add_argument('--lr', type=float, default=2e-4, help='Adam learning rate of G and D')
    p.add_argument('--lambda_lap', type=float, default=0.0, help='Laplacian loss weight (0 = paper)')
    p.add_argument('--eval', action='store_true',
                   help="test with batch norm's running statistics (test.py --eval) instead of the "
                        "image's own statistics, as in training at batch size 1")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (0: torch default, one per core). 1 by default: on a machine '
                        'shared with other jobs, threads that wait on each other made a training step 5-10x '
                        'slower with 2 threads than with 1; on an idle multi-core machine more are faster')
    return p


def iters_per_epoch(iters):
    """Iterations per epoch so that the ``N_EPOCHS + N_EPOCHS_DECAY`` epochs add up to about ``iters``."""
    return max(1, iters // (N_EPOCHS + N_EPOCHS_DECAY))


def train_args(a):
    per_epoch = iters_per_epoch(a.iters)
    return ['--model', a.model, '--dataroot', a.dataroot, '--name', a.name,
            '--checkpoints_dir', a.checkpoints_dir, '--gpu_ids', '-1', '--num_threads', '0',
            '--seed', str(a.seed), '--crop_size', str(a.crop_size), '--crop_sizes', str(a.crop_size),
            '--bg_per_fg', '100', '--max_iters_per_epoch', str(per_epoch),
            '--n_epochs', str(N_EPOCHS), '--n_epochs_decay', str(N_EPOCHS_DECAY),
            '--lr', str(a.lr), *(['--lambda_lap', str(a.lambda_lap)] if a.model == 'alphagan' else []),
            '--print_freq', str(max(1, per_epoch // 2)), '--display_freq', str(per_epoch),
            '--update_html_freq', str(per_epoch), '--save_epoch_freq', '0']


def test_args(a):
    return (['--model', a.model, '--dataroot', a.dataroot, '--name', a.name, '--phase', 'test',
             '--checkpoints_dir', a.checkpoints_dir, '--results_dir', a.results_dir, '--gpu_ids', '-1',
             '--num_test', '100000', '--results_per_page', '0']
            + (['--eval'] if a.eval else []))


def collect_alphas(image_dir, stems, out_dir):
    """Copy test.py's ``<stem>_alpha.png`` for each stem to ``out_dir/<stem>.png``; return the count."""
    n = 0
    for stem in stems:
        src = os.path.join(image_dir, f'{stem}_alpha.png')
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out_dir, f'{stem}.png'))
            n += 1
    return n


def constant_sad(test_root, stems, value):
    """Mean SAD of predicting ``value`` (0-255) in the unknown region of every test image."""
    sads = []
    for stem in stems:
        gt = read_gray(os.path.join(test_root, 'alpha', f'{stem}.png'), 'ground-truth')
        trimap, _ = quantize_trimap(read_gray(os.path.join(test_root, 'trimaps', f'{stem}.png'), 'trimap'))
        sads.append(evaluate_matte(np.full(gt.shape, float(value)), gt, trimap)['SAD'])
    return float(np.mean(sads))


def main(argv=None):
    a = build_parser().parse_args(argv)
    a.name = a.name or f'{a.model}_demo'
    if a.iters < 1 or a.crop_size < 32:
        print('error: --iters must be >= 1 and --crop_size >= 32', file=sys.stderr)
        return 2
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        if not (os.path.isdir(os.path.join(a.dataroot, 'train')) and os.path.isdir(os.path.join(a.dataroot, 'test'))):
            print(f'making the synthetic matting set in {a.dataroot}', flush=True)
            make_matting_dataset(a.dataroot)
        t0 = time.time()
        rc = train_script.main(train_args(a))
        if rc != 0:
            return rc
        train_s = time.time() - t0
        rc = test_script.main(test_args(a))
        if rc != 0:
            return rc
        web_dir = os.path.join(a.results_dir, a.name, 'test_latest')
        test_root = os.path.join(a.dataroot, 'test')
        with tempfile.TemporaryDirectory() as pred_dir:
            stems = [os.path.splitext(f)[0] for f in os.listdir(os.path.join(test_root, 'merged'))]
            if collect_alphas(os.path.join(web_dir, 'images'), stems, pred_dir) == 0:
                raise UserInputError(f'test.py wrote no *_alpha.png in {web_dir}/images')
            result = evaluate_dirs(pred_dir, os.path.join(test_root, 'alpha'), os.path.join(test_root, 'trimaps'),
                                   baselines=['half'])
            zero_sad = constant_sad(test_root, sorted(result['per_image']), 0)
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    iters = iters_per_epoch(a.iters) * (N_EPOCHS + N_EPOCHS_DECAY)
    print()
    print(format_table(result, a.model))
    model_sad, half_sad = result['mean']['SAD'], result['baselines']['half']['mean']['SAD']
    verdict = 'beats' if model_sad < half_sad else 'does NOT beat'
    m = a.model
    print(f'\ntraining: {iters} iterations in {train_s:.0f} s ({train_s / max(1, iters):.2f} s/iter, '
          f'including data loading and checkpoints)')
    print(f'mean SAD on {result["count"]} held-out images: {m} {model_sad:.4f} vs unknown=0.5 baseline '
          f'{half_sad:.4f} -> {m} {verdict} the baseline (alpha = 0 in the unknown region: {zero_sad:.4f})')
    print(f'results page: {os.path.join(web_dir, "index.html")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
