"""The prepared GPU check: one command for a session that is lent a GPU for a few minutes.

    python scripts/gpu_check.py --out gpu_check.json          # on the GPU machine (CUDA)
    python scripts/gpu_check.py --cpu_smoke --out smoke.json  # reduced, on the CPU (a test runs it)

One JSON file out (also printed at the end), whatever fails: every section is run and timed on its
own, an exception becomes that section's ``error`` (with the last lines of its traceback) and the
next section runs. Exit status 0 when every section passed, 1 otherwise, 2 on bad usage (no CUDA
device without ``--cpu_smoke``).

Sections (``--sections`` picks some, comma-separated):

* ``train_steps``: a training step of every model in the registry that trains (``insta_gan``,
  ``cycle_gan``, ``alphagan``, ``dim`` stages 1 and 3, ``bgmv2`` stages base and refine) in float32,
  ``--amp bf16`` and ``--amp fp16``: the model is built as train.py builds it (TrainOptions, the
  built-in data through the dataset mode, ``model.setup``), then two ``optimize_parameters()`` on
  one batch. A row passes when every loss is finite, every network's weights changed and the first
  convolution ran in the asked precision; ``s_step`` is the second step's wall time.
* ``matting_inference``: the benchmark's inference rows (``scripts/benchmark.py``'s ``run_one``):
  AlphaGAN at 320 and 1024 px in float32 and bf16, at 4000x3000 tiled (1024 / 64), at HD
  (1920x1080, frames per second), and DIM's stage-3 network at 1024 px.
* ``bgmv2``: ``scripts/benchmark_bgmv2.py``'s rows: HD at 1/4 with 80,000 pixels and 4K at 1/8 with
  320,000, refine modes full and sampling, float32 and fp16 (frames per second, peak memory,
  sampling against full in the same run).
* ``vs_official``: InstaGAN's training step against the official structure (``--vs_official``)
  at the paper's 200 px and ngf 64 (alternating steps, one process).

``--cpu_smoke`` runs the same sections at toy sizes on the CPU (32-64 px crops, narrow
InstaGAN, 256x192 BackgroundMattingV2 frames, one timed call each) so that the test suite keeps
this script working; its figures say nothing about speed. Built-in data are made under ``--data``
(default: a temporary folder): small sets in smoke mode, the usual ones otherwise.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import torch  # noqa: E402

from scripts.benchmark import Meter, _quiet, first_conv  # noqa: E402

from util.util import atomic_write  # noqa: E402

SECTIONS = ('train_steps', 'matting_inference', 'bgmv2', 'vs_official')
PRECISIONS = ('none', 'bf16', 'fp16')

# (row name, model, extra training options, data set): every model of the registry that trains
TRAIN_ROWS = [
    ('insta_gan', 'insta_gan', ['--ins_max', '4', '--ins_per', '2'], 'shapes'),
    ('cycle_gan', 'cycle_gan', [], 'shapes'),
    ('alphagan', 'alphagan', [], 'matting'),
    ('dim stage 1', 'dim', ['--dim_stage', '1'], 'matting'),
    ('dim stage 3', 'dim', ['--dim_stage', '3'], 'matting'),
    ('bgmv2 base', 'bgmv2', ['--bgmv2_stage', 'base'], 'matting'),
    ('bgmv2 refine', 'bgmv2', ['--bgmv2_stage', 'refine'], 'matting'),
]
MODELS = tuple(dict.fromkeys(model for _, model, _, _ in TRAIN_ROWS))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='gpu_check.json', help='the JSON file written (atomically)')
    p.add_argument('--cpu_smoke', action='store_true', help='reduced sizes on the CPU (the test suite runs this)')
    p.add_argument('--sections', default=','.join(SECTIONS), help=f'comma-separated, of {", ".join(SECTIONS)}')
    p.add_argument('--precisions', default=','.join(PRECISIONS), help='train_steps: --amp values, comma-separated')
    p.add_argument('--models', default=','.join(MODELS), help=f'train_steps: models, comma-separated, of {", ".join(MODELS)}')
    p.add_argument('--data', default=None, help='where the built-in data sets are made (default: a temporary folder)')
    return p


class Sizes:
    """The figures of one mode (full on CUDA, toy on the CPU)."""

    def __init__(self, smoke):
        self.smoke = smoke
        # training crops by row; the refine stage's base sees the crop at 1/4: at 64 px (16 px,
        # 1 px features) fp16's backward overflows even at a gradient scale of 1, so 128 there
        self.crop = {'insta_gan': 32, 'cycle_gan': 32, 'alphagan': 64, 'dim stage 1': 64, 'dim stage 3': 64,
                     'bgmv2 base': 64, 'bgmv2 refine': 128} if smoke else \
            {'insta_gan': 200, 'cycle_gan': 256, 'alphagan': 320, 'dim stage 1': 320, 'dim stage 3': 320,
             'bgmv2 base': 512, 'bgmv2 refine': 1024}
        self.ngf = 8 if smoke else 64
        self.batch = 2 if smoke else 4
        self.iters, self.warmup = (1, 1) if smoke else (5, 2)
        self.matting_sizes = [(64, 64)] if smoke else [(320, 320), (1024, 1024)]
        self.tiled = (96, 128, 64, 16) if smoke else (3000, 4000, 1024, 64)   # h, w, tile, overlap
        self.hd = (72, 128) if smoke else (1080, 1920)
        self.dim_size = 64 if smoke else 1024
        self.bgmv2_sizes = '256x192' if smoke else 'hd,4k'
        self.vs_official = (32, 8) if smoke else (200, 64)                    # crop, ngf


# ----------------------------------------------------------------------------- data
def make_data(root, smoke):
    """{'shapes': path, 'matting': path}: the built-in sets (small ones in smoke mode) under ``root``."""
    from datasets.make_matting_dataset import make_matting_dataset
    from datasets.make_shapes_dataset import make_shapes_dataset
    paths = {'shapes': os.path.join(root, 'shapes'), 'matting': os.path.join(root, 'matting_synth')}
    if not os.path.isdir(os.path.join(paths['shapes'], 'trainA')):
        make_shapes_dataset(paths['shapes'], **({'n_train': 4, 'n_test': 2, 'size': 32} if smoke else {}))
    if not os.path.isdir(os.path.join(paths['matting'], 'train')):
        make_matting_dataset(paths['matting'], **({'n_train': 4, 'n_test': 2, 'n_bg': 4, 'size': 80} if smoke else {}))
    return paths


# ----------------------------------------------------------------------------- sections
def train_step_row(label, model_name, extra, data, amp, device, sizes, tmp):
    """Two training steps (fp16: until the weights change) of one row of TRAIN_ROWS at one
    precision; the row (``ok`` and why not)."""
    from data import create_dataset
    from models import create_model
    from models.base_model import unwrap
    from options.train_options import TrainOptions
    crop = sizes.crop[label]
    argv = ['--model', model_name, '--dataroot', data, '--name', f'gpu_check_{model_name}_{amp}',
            '--checkpoints_dir', tmp, '--gpu_ids', '0' if device.type == 'cuda' else '-1', '--num_threads', '0',
            '--batch_size', str(sizes.batch), '--crop_size', str(crop), '--load_size', str(crop),
            '--amp', amp, '--display_id', '0', '--no_html', '--seed', '0', *extra]
    if model_name in ('insta_gan', 'cycle_gan'):
        argv += ['--ngf', str(sizes.ngf), '--ndf', str(sizes.ngf)]
    with _quiet():
        opt = TrainOptions(argv).parse(save=False)
        batch = next(iter(create_dataset(opt)))
        model = create_model(opt)
        model.setup(opt)
    params = {name: [p for p in unwrap(net).parameters() if p.requires_grad] for name, net in model.nets()}
    before = {name: [p.detach().clone() for p in ps] for name, ps in params.items()}
    dtypes = []
    first_conv(model).register_forward_hook(lambda m, i, o: dtypes.append(str(o.dtype).replace('torch.', '')))

    def unchanged():
        return [name for name, ps in params.items() if all(torch.equal(a, p.detach()) for a, p in zip(before[name], ps))]
    sync = Meter(device).sync
    model.set_input(batch)
    # fp16's GradScaler starts at 2**16 and skips the steps whose gradients overflow, halving its
    # scale each time: there the steps go on until every network has changed (at most 16).
    steps, s_step = 0, None
    while steps < (16 if amp == 'fp16' else 2):
        sync()
        t0 = time.perf_counter()
        model.optimize_parameters()
        sync()
        s_step, steps = time.perf_counter() - t0, steps + 1
        if steps >= 2 and not unchanged():
            break
    losses = {k: float(v) for k, v in model.get_current_losses().items()}
    scales = [o.scaler.get_scale() for o in model.optimizers if o.scaler.is_enabled()]   # OptimWrappers (setup)
    expected = {'none': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}[amp]
    problems = [f'loss {k} = {v}' for k, v in losses.items() if not torch.isfinite(torch.tensor(v))]
    problems += [f'weights of {name} unchanged after {steps} steps' for name in unchanged()]
    if dtypes and dtypes[-1] != expected:
        problems.append(f'first convolution ran in {dtypes[-1]}, not {expected}')
    return {'crop_size': crop, 'batch_size': sizes.batch, 's_step': round(s_step, 4), 'steps': steps,
            'grad_scales': scales, 'losses': losses,
            'conv_dtype': dtypes[-1] if dtypes else None, 'ok': not problems, 'problems': problems}


def section_train_steps(ctx):
    rows = []
    for label, model_name, extra, kind in (r for r in TRAIN_ROWS if r[1] in ctx['models']):
        for amp in ctx['precisions']:
            row = {'row': label, 'amp': amp}
            t0 = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    row.update(train_step_row(label, model_name, extra, ctx['data'][kind], amp, ctx['device'],
                                              ctx['sizes'], tmp))
            except Exception as e:        # noqa: BLE001 -- recorded, the other rows still run
                row.update(ok=False, error=_error(e))
            row['seconds'] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            print(f"train step {label} {amp}: {'ok' if row['ok'] else 'FAILED'} ({row['seconds']} s)", file=sys.stderr)
    return rows


def _benchmark(argv):
    from scripts import benchmark
    with _quiet():
        return benchmark.run_one(benchmark.parse_args(argv))


def section_matting_inference(ctx):
    s, dev = ctx['sizes'], ctx['device'].type
    common = ['--phase', 'test', '--device', dev, '--iters', str(s.iters), '--warmup', str(s.warmup),
              '--dataroot', ctx['data']['matting']]
    rows = []
    for h, w in s.matting_sizes:
        for amp in ('none', 'bf16'):
            rows.append(('alphagan', f'{w}x{h}', amp, ['--model', 'alphagan', '--test_size', str(h),
                                                       '--test_width', str(w), '--amp', amp]))
    h, w, tile, overlap = s.tiled
    rows.append(('alphagan', f'{w}x{h} tile {tile}/{overlap}', 'none',
                 ['--model', 'alphagan', '--test_size', str(h), '--test_width', str(w), '--tile', str(tile),
                  '--tile_overlap', str(overlap), '--iters', '1', '--warmup', '0']))
    h, w = s.hd
    rows.append(('alphagan', f'HD {w}x{h}', 'none', ['--model', 'alphagan', '--test_size', str(h),
                                                      '--test_width', str(w)]))
    rows.append(('dim', f'{s.dim_size} px stage 3', 'none', ['--model', 'dim', '--dim_stage', '3',
                                                             '--test_size', str(s.dim_size)]))
    out = []
    for model, size, amp, argv in rows:
        rec = _benchmark(common + argv)
        out.append({'model': model, 'size': size, 'amp': amp, 's_per_image': rec['test_s_per_iter'],
                    'images_per_s': rec['test_images_per_s'], 's_per_megapixel': rec['test_s_per_megapixel'],
                    'peak_mem_mb': rec['test_peak_mem_mb'], 'conv_dtype': rec['test_conv_dtype']})
        print(f'inference {model} {size} {amp}: {rec["test_s_per_iter"]:.3f} s', file=sys.stderr)
    return out


def section_bgmv2(ctx):
    from scripts import benchmark
    from scripts.benchmark_bgmv2 import run_bgmv2
    s = ctx['sizes']
    amp_modes = 'none,bf16' if s.smoke else 'none,fp16'
    argv = ['--model', 'bgmv2', '--device', ctx['device'].type, '--iters', str(s.iters), '--warmup', str(s.warmup),
            '--sizes', s.bgmv2_sizes, '--modes', 'full,sampling', '--amp_modes', amp_modes,
            '--dataroot', ctx['data']['matting']]
    with _quiet():
        rows = run_bgmv2(benchmark.parse_args(argv))
    keep = ('size', 'width', 'height', 'mode', 'amp', 'backbone_scale', 'sample_pixels', 'fps', 'x_full',
            'peak_mem_mb', 'refined')
    return [{k: r[k] for k in keep} for r in rows]


def section_vs_official(ctx):
    from scripts import benchmark
    crop, ngf = ctx['sizes'].vs_official
    argv = ['--model', 'insta_gan', '--vs_official', '--device', ctx['device'].type, '--crop_size', str(crop),
            '--ngf', str(ngf), '--batch_size', '4', '--iters', str(ctx['sizes'].iters),
            '--warmup', str(ctx['sizes'].warmup)]
    with _quiet():
        rec = benchmark.run_vs_official(benchmark.parse_args(argv))
    return {k: rec[k] for k in ('s_per_iter', 'samples_per_s', 'official_s_per_iter', 'official_samples_per_s',
                                'speedup', 'speedup_min', 'speedup_max', 'options')}


RUNNERS = {'train_steps': section_train_steps, 'matting_inference': section_matting_inference,
           'bgmv2': section_bgmv2, 'vs_official': section_vs_official}


def _error(e):
    lines = traceback.format_exception(type(e), e, e.__traceback__)
    return ''.join(lines[-3:]).strip()


def _section_ok(result):
    rows = result if isinstance(result, list) else [result]
    return all(r.get('ok', True) for r in rows)


def run(args):
    """The report (a dict); every section run."""
    device = torch.device('cpu' if args.cpu_smoke else 'cuda')
    sizes = Sizes(args.cpu_smoke)
    report = {'mode': 'cpu_smoke' if args.cpu_smoke else 'cuda', 'torch': torch.__version__,
              'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda'
              else platform.processor() or platform.machine(),
              'threads': torch.get_num_threads(), 'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'sections': {}}
    with contextlib.ExitStack() as stack:
        root = args.data or stack.enter_context(tempfile.TemporaryDirectory(prefix='gpu_check_'))
        t0 = time.perf_counter()
        with _quiet():
            data = make_data(root, args.cpu_smoke)
        report['data_s'] = round(time.perf_counter() - t0, 2)
        ctx = {'device': device, 'sizes': sizes, 'data': data, 'precisions': args.precisions.split(','),
               'models': args.models.split(',')}
        for name in args.sections.split(','):
            t0 = time.perf_counter()
            try:
                result = RUNNERS[name](ctx)
                entry = {'ok': _section_ok(result), 'result': result}
            except Exception as e:        # noqa: BLE001 -- recorded, the next section still runs
                entry = {'ok': False, 'error': _error(e)}
            entry['seconds'] = round(time.perf_counter() - t0, 2)
            report['sections'][name] = entry
            print(f"section {name}: {'ok' if entry['ok'] else 'FAILED'} ({entry['seconds']} s)", file=sys.stderr)
    report['ok'] = all(s['ok'] for s in report['sections'].values())
    return report


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [s for s in args.sections.split(',') if s not in SECTIONS]
    bad += [p for p in args.precisions.split(',') if p not in PRECISIONS]
    bad += [m for m in args.models.split(',') if m not in MODELS]
    if bad:
        parser.error(f'unknown {bad}: sections {", ".join(SECTIONS)}; precisions {", ".join(PRECISIONS)}; '
                     f'models {", ".join(MODELS)}')
    if not args.cpu_smoke and not torch.cuda.is_available():
        parser.error('no CUDA device here: run it on the GPU machine, or with --cpu_smoke for the reduced CPU check')
    report = run(args)
    text = json.dumps(report, indent=1)
    atomic_write(args.out, lambda f: f.write(text + '\n'), mode='w')
    print(text)
    print(f'written: {args.out}', file=sys.stderr)
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
