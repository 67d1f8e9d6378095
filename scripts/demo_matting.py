"""Matting demo on CPU within 15 minutes: synthetic training data, a short training run, then mattes of
held-out synthetic composites and, where they are present, of real photographs, each next to the
trivial and classical baselines.

Steps:

1. make the synthetic matting set ``datasets/matting_synth`` (``datasets/make_matting_dataset.py``)
   if it is not there;
2. train ``--model alphagan`` from scratch (no ImageNet weights: no internet needed) with the CPU
   recipe below;
3. run test.py on the held-out synthetic test layout (full resolution; HTML page with the metrics);
4. with real photographs (``--real``, default ``../shared/samples/matting_real`` beside the checkout:
   ``RGB/<n>.png`` and ``alpha/<n>.png``): make their test layout once
   (``datasets/make_real_matting_test.py``: trimaps by erosion / dilation of the alpha, seed 0), matte
   them with test.py (a second HTML page: photograph, trimap, matte, ground truth) and score them;
5. print, for each test set, the mean SAD / MSE of the model next to alpha = 0 and alpha = 0.5 in the
   unknown region, the nearest-known-colour projection (``--baseline nearest``, the evidence the
   guidance gives the network) and, on the real photographs, closed-form matting (Levin et al. 2008,
   ``--baseline cf``; computed in a second process while the model trains; images where pymatting
   fails are named, not hidden).

The CPU recipe (issue 15; README "Matting on real photographs"): ``--ngf 8`` (the ResNet-50 layout at
1/8 width), batch 4 of 128 px crops from 128-256 px windows centred on the unknown band, learning
rate 1e-3 (2 epochs constant, 2 decaying), no adversarial term (``--lambda_gan 0``: at this budget the
GAN term did not help), trimaps drawn as the real ones are (``--trimap_mode dilate_erode``: unknown on
both sides of the edge) and ``--guidance known_colours`` (G also sees the nearest known foreground /
background colours and the alpha projected between them). Batch norm in eval mode at test time.

Usage: ``python scripts/demo_matting.py [--model alphagan|dim] [--iters 1200] [--real DIR | --real none]
[--no_cf]``. Exit status 0 when it ran (whatever the scores), 2 on a user error.
"""
import argparse
import functools
import os
import multiprocessing
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
from datasets.make_real_matting_test import make_real_matting_test  # noqa: E402
from scripts.eval_matting import evaluate_dirs, format_table  # noqa: E402
from util.errors import UserInputError  # noqa: E402

N_EPOCHS, N_EPOCHS_DECAY = 2, 2   # constant learning rate, then linear decay to zero
REAL_DEFAULT = ROOT.parent / 'shared' / 'samples' / 'matting_real'
# Each model's part of the CPU recipe (see the module docstring): its architecture options (train and
# test time) and its training-only options.
ARCH = {'alphagan': ['--ngf', '8', '--guidance', 'known_colours'],
        'dim': ['--guidance', 'known_colours', '--dim_skip']}
TRAIN_ONLY = {'alphagan': ['--lambda_gan', '0'], 'dim': []}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataroot', default=str(ROOT / 'datasets' / 'matting_synth'),
                   help='synthetic matting set (made here when missing)')
    p.add_argument('--model', default='alphagan', choices=('alphagan', 'dim'),
                   help='dim: Deep Image Matting stage 1 (the VGG-16 encoder-decoder at full width, no ImageNet '
                        'weights here) with --guidance known_colours and the encoder skips (--dim_skip)')
    p.add_argument('--name', default=None, help='run name (default <model>_demo)')
    p.add_argument('--checkpoints_dir', default=str(ROOT / 'checkpoints'))
    p.add_argument('--results_dir', default=str(ROOT / 'results'))
    p.add_argument('--real', default=str(REAL_DEFAULT),
                   help='folder of real photographs with ground truth (RGB/<n>.png, alpha/<n>.png) to matte too; '
                        "'none' to skip. Default: ../shared/samples/matting_real beside the checkout, where present")
    p.add_argument('--real_test', default=str(ROOT / 'datasets' / 'matting_real_test'),
                   help='where the test layout of --real is made (once)')
    p.add_argument('--no_cf', action='store_true', help='skip the closed-form baseline on the real photographs')
    p.add_argument('--cf_wait', type=float, default=60.0,
                   help='seconds to wait, after the model is scored, for closed-form images still running '
                        '(pymatting took from 3 s to over 10 min per photograph here); those are named as '
                        'not finished')
    p.add_argument('--iters', type=int, default=1200, help='training iterations of --batch_size crops')
    p.add_argument('--batch_size', type=int, default=4)
    p.add_argument('--crop_size', type=int, default=128, help='training crop side (windows resized to it)')
    p.add_argument('--crop_sizes', default='128,192,256', help='window sides drawn at random around the unknown band')
    p.add_argument('--lr', type=float, default=1e-3, help='Adam learning rate')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (0: torch default, one per core). 1 by default: on a machine '
                        'shared with other jobs, threads that wait on each other made a training step 5-10x '
                        'slower with 2 threads than with 1 (and the closed-form baseline runs beside it)')
    return p


def iters_per_epoch(iters):
    """Iterations per epoch so that the ``N_EPOCHS + N_EPOCHS_DECAY`` epochs add up to about ``iters``."""
    return max(1, iters // (N_EPOCHS + N_EPOCHS_DECAY))


def model_args(a):
    """Architecture options the model needs at train and test time alike."""
    return ARCH[a.model]


def train_args(a):
    per_epoch = iters_per_epoch(a.iters)
    return ['--model', a.model, '--dataroot', a.dataroot, '--name', a.name,
            '--checkpoints_dir', a.checkpoints_dir, '--gpu_ids', '-1', '--num_threads', '0',
            '--seed', str(a.seed), '--batch_size', str(a.batch_size), '--crop_size', str(a.crop_size),
            '--crop_sizes', a.crop_sizes, '--trimap_mode', 'dilate_erode', '--bg_per_fg', '100',
            '--max_iters_per_epoch', str(per_epoch), '--n_epochs', str(N_EPOCHS),
            '--n_epochs_decay', str(N_EPOCHS_DECAY), '--lr', str(a.lr), *model_args(a), *TRAIN_ONLY[a.model],
            '--print_freq', str(max(1, per_epoch // 2)), '--display_freq', str(per_epoch),
            '--update_html_freq', str(per_epoch), '--save_epoch_freq', '0']


def test_args(a, dataroot, results_dir):
    return ['--model', a.model, '--dataroot', dataroot, '--name', a.name, '--phase', 'test',
            '--checkpoints_dir', a.checkpoints_dir, '--results_dir', results_dir, '--gpu_ids', '-1',
            '--num_test', '100000', '--results_per_page', '0', '--eval', *model_args(a)]


def closed_form_one(test_root, f):
    """Closed-form matting on ``test_root/merged/f``: ``(stem, metrics or None, error or None)``.
    Runs in a child process (one thread) while the model trains."""
    os.environ['NUMBA_NUM_THREADS'] = '1'
    from scripts.eval_matting import closed_form_baseline, read_gray, read_rgb
    from util.metrics import evaluate_matte
    stem = os.path.splitext(f)[0]
    gt = read_gray(os.path.join(test_root, 'alpha', f), 'ground truth')
    trimap = read_gray(os.path.join(test_root, 'trimaps', f), 'trimap')
    try:
        alpha = closed_form_baseline(read_rgb(os.path.join(test_root, 'merged', f)), trimap)
        return stem, evaluate_matte(alpha, gt, trimap), None
    except Exception as e:   # pymatting's solver: report, do not hide
        return stem, None, f'{type(e).__name__}: {e}'.splitlines()[0][:120]


def collect_closed_form(jobs, files, wait_s):
    """``({stem: metrics}, {stem: why not})`` from the ``imap`` iterator ``jobs`` over ``files``,
    waiting at most ``wait_s`` seconds from now for those not done yet."""
    scores, failed = {}, {}
    deadline = time.time() + wait_s
    for i, f in enumerate(files):
        try:
            stem, metrics, error = jobs.next(timeout=max(0.1, deadline - time.time()))
        except multiprocessing.TimeoutError:
            for g in files[i:]:
                failed[os.path.splitext(g)[0]] = f'not finished within --cf_wait {wait_s:g} s'
            break
        if metrics is None:
            failed[stem] = error
        else:
            scores[stem] = metrics
    return scores, failed


def real_test_root(a):
    """The test layout of ``--real`` (made once), or None without real photographs."""
    if a.real == 'none' or not os.path.isdir(os.path.join(a.real, 'RGB')):
        return None
    if not os.path.isdir(os.path.join(a.real_test, 'merged')):
        print(f'making the test layout of the real photographs {a.real} in {a.real_test}', flush=True)
        make_real_matting_test(a.real, a.real_test)
    return a.real_test


def score(a, test_root, results_dir, cf=None):
    """Run test.py on ``test_root``; print and return the scores with the baselines."""
    rc = test_script.main(test_args(a, test_root, results_dir))
    if rc != 0:
        raise SystemExit(rc)
    web_dir = os.path.join(results_dir, a.name, 'test_latest')
    with tempfile.TemporaryDirectory() as pred_dir:
        # test.py's images/ holds <stem>_alpha.png and <stem>_gt_alpha.png: take the predictions only.
        for f in os.listdir(os.path.join(test_root, 'merged')):
            stem = os.path.splitext(f)[0]
            src = os.path.join(web_dir, 'images', f'{stem}_alpha.png')
            if not os.path.isfile(src):
                raise UserInputError(f'test.py wrote no {src}')
            shutil.copyfile(src, os.path.join(pred_dir, f'{stem}.png'))
        result = evaluate_dirs(pred_dir, os.path.join(test_root, 'alpha'), os.path.join(test_root, 'trimaps'),
                               baselines=['zero', 'half', 'nearest'], image_dir=os.path.join(test_root, 'merged'))
    if cf is not None:
        per_image, failed = cf
        result['baselines']['cf'] = {'per_image': per_image, 'failed': failed}
    print()
    print(format_table({k: v for k, v in result.items() if k != 'baselines'}, a.model))
    return result, os.path.join(web_dir, 'index.html')


def summary(label, result, m):
    """One printed line per test set: the model's mean SAD and MSE beside the baselines'."""
    def mean(per_image, metric):
        return float(np.mean([v[metric] for v in per_image.values()]))
    model_sad = result['mean']['SAD']
    parts = [f'{m} SAD {model_sad:.2f} (MSE {result["mean"]["MSE"]:.4f})']
    for b, title in (('zero', 'alpha 0'), ('half', 'alpha 0.5'), ('nearest', 'nearest-colour projection'),
                     ('cf', 'closed-form')):
        if b not in result['baselines']:
            continue
        per_image = {k: v for k, v in result['baselines'][b]['per_image'].items() if k in result['per_image']}
        if not per_image:
            parts.append(f'{title}: failed on every image')
            continue
        line = f'{title} {mean(per_image, "SAD"):.2f}'
        failed = result['baselines'][b].get('failed') or {}
        if failed:
            line += f' (on {len(per_image)} images; ' + '; '.join(f'{k}: {v}' for k, v in sorted(failed.items())) + ')'
        parts.append(line)
    best_constant = min(mean(result['baselines'][b]['per_image'], 'SAD') for b in ('zero', 'half'))
    print(f'{label}, {result["count"]} images, mean SAD (/1000, unknown region): ' + '; '.join(parts))
    print(f'  -> {m} is {100 * (1 - model_sad / best_constant):+.0f}% against the better constant matte '
          f'({best_constant:.2f}; negative = worse)')


def main(argv=None):
    a = build_parser().parse_args(argv)
    a.name = a.name or f'{a.model}_demo'
    if a.iters < 1 or a.crop_size < 32 or a.batch_size < 1:
        print('error: --iters and --batch_size must be >= 1 and --crop_size >= 32', file=sys.stderr)
        return 2
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cf_job = pool = None
    try:
        if not (os.path.isdir(os.path.join(a.dataroot, 'train')) and os.path.isdir(os.path.join(a.dataroot, 'test'))):
            print(f'making the synthetic matting set in {a.dataroot}', flush=True)
            make_matting_dataset(a.dataroot)
        real_root = real_test_root(a)
        if real_root is not None and not a.no_cf:
            cf_files = sorted(os.listdir(os.path.join(real_root, 'merged')))
            pool = multiprocessing.get_context('spawn').Pool(1)
            cf_job = pool.imap(functools.partial(closed_form_one, real_root), cf_files)
        t0 = time.time()
        rc = train_script.main(train_args(a))
        if rc != 0:
            return rc
        train_s = time.time() - t0
        synthetic, page = score(a, os.path.join(a.dataroot, 'test'), a.results_dir)
        pages = [page]
        real = None
        if real_root is not None:
            cf = None
            if cf_job is not None:
                print(f'waiting at most {a.cf_wait:g} s for the closed-form baseline ...', flush=True)
                cf = collect_closed_form(cf_job, cf_files, a.cf_wait)
            real, page = score(a, real_root, os.path.join(a.results_dir, 'real_photos'), cf)
            pages.append(page)
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    finally:
        if pool is not None:
            pool.terminate()
    iters = iters_per_epoch(a.iters) * (N_EPOCHS + N_EPOCHS_DECAY)
    print(f'\ntraining: {iters} iterations of batch {a.batch_size} in {train_s:.0f} s '
          f'({train_s / max(1, iters):.2f} s/iter, including data loading and checkpoints)')
    summary('synthetic held-out composites', synthetic, a.model)
    if real is not None:
        summary(f'real photographs ({a.real})', real, a.model)
    else:
        print('no real photographs (--real): scored on the synthetic composites only')
    for page in pages:
        print(f'results page: {page}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
