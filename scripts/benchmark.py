"""Speed and memory benchmark of the training step and of inference, on synthetic batches.

One configuration (prints ONE JSON line)::

    python scripts/benchmark.py --model insta_gan --crop_size 64 --ngf 16 --batch_size 4
    python scripts/benchmark.py --model insta_gan --impl official --batch_size 1   # official structure
    python scripts/benchmark.py --model alphagan --crop_size 320 --test_size 1024
    python scripts/benchmark.py --model dim --dim_stage 3 --crop_size 320 --test_size 1024

Sweeps (each configuration in a FRESH subprocess, one JSON line each, ``--table`` adds a
markdown table of the medians over ``--repeat`` runs)::

    python scripts/benchmark.py --sweep batch --sweep_values 1,2,4,8 --table
    python scripts/benchmark.py --sweep ins_max --sweep_values 2,4,8 --ins_per 2   # + one-pass rows
    python scripts/benchmark.py --sweep impl --repeat 3 --table                    # ours vs official
    python scripts/benchmark.py --sweep speedup --phase train --repeat 5 --table   # best batch vs official
    python scripts/benchmark.py --vs_official --batch_size 4 --iters 10        # same, alternating in-process
    python scripts/benchmark.py --sweep nproc --sweep_values 1,2 --batch_size 2 --table   # DDP processes
    python scripts/benchmark.py --sweep shift_sum --repeat 3 --table               # models/shift_conv.py
    python scripts/benchmark.py --sweep instance_norm --repeat 3 --table           # models/instance_norm.py
    python scripts/benchmark.py --sweep amp | channels_last | alphagan | dim

What is measured:

* ``s_per_iter``: median wall time of whole ``optimize_parameters()`` calls after ``--warmup``
  calls (CUDA synchronised around each); ``samples_per_s = batch_size / s_per_iter``;
  ``cpu_s_per_iter``: median process CPU time of the same calls (all threads; on a shared
  machine less load-dependent than wall time).
* ``test_s_per_iter`` / ``test_images_per_s``: the same for ``model.test()`` (networks in eval
  mode, no gradients), at ``--test_size`` (default ``--crop_size``); the matting models add
  ``test_s_per_megapixel``.
* ``peak_mem_mb`` / ``test_peak_mem_mb``: peak memory of the training / test phase (warm-up
  included) above the memory in use just before the first phase (weights and the synthetic batch
  excluded; optimizer state, activations and gradients included). The test phase runs first and
  both are measured from the same starting point. On CUDA: ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``. On CPU: the process's peak resident set size
  (``getrusage``'s ``ru_maxrss``) minus the resident size before the phases; ``ru_maxrss`` is a
  lifetime peak, so ``*_peak_mem_exact`` is false when the phase did not raise it (the figure is
  then an upper bound), and configurations are only comparable across fresh processes (which is
  what ``--sweep`` does). RSS also counts what the C allocator keeps after frees: glibc's heap
  retains freed blocks, more so the more allocate/free cycles a step makes (e.g. more passes of
  sequential translation). For RSS close to the live tensor memory, run with
  ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment (large blocks then go back to the system
  on free; slower, so for memory figures only; sweeps pass the environment on, and the record
  shows it as ``malloc_mmap_threshold``).
* ``peak_live_mb`` (CPU, ``--live_memory``): the exact counterpart of CUDA's
  ``max_memory_allocated`` for one more (untimed) training step: every allocation and free that
  PyTorch's CPU allocator makes during the step, from the profiler's memory records, summed in
  time order; the peak above what was allocated when the step began. Unlike RSS it does not count
  what the C allocator keeps after frees, so it is comparable within one process and across runs.

The models are built from ``TrainOptions([...]).parse()`` and ``model.setup()``, as train.py
builds them, so options added to the training options are picked up, and any option this script
does not know is passed on to them (e.g. ``--pool_size 0``, ``--norm batch``); ``--amp``,
``--channels_last`` and ``--compile`` are passed through (the benchmark exits with a message
where the training options lack one). ``train_conv_dtype`` / ``test_conv_dtype`` record the
output dtype of the first generator convolution during the timed calls, i.e. whether ``--amp``
took effect.

``--nproc N`` runs N processes with DistributedDataParallel (gloo on CPU, NCCL with one GPU each),
as ``torchrun --nproc_per_node=N train.py`` trains: each process takes ``--batch_size`` samples
(different synthetic batches) and ``--threads`` threads (default: the CPU cores divided by N).
The record is rank 0's, with ``samples_per_s = N * batch_size / s_per_iter`` (the steps are
synchronised by the gradient all-reduce), ``nproc``, and ``peak_mem_mb`` per process.

``--impl official`` (insta_gan, batch 1 only) times ``scripts/official_reference.py``: OUR
re-implementation of the official code's execution structure (per-slot loops, six separate
generator calls a pass) with our networks' weights -- not the official code.

``--vs_official`` (insta_gan training) builds both, ours at ``--batch_size`` and the official
structure at batch 1, in one process and alternates their timed steps (official, ours, official,
ours, ...). ``speedup`` is the median over the ``--iters`` pairs of ours' samples/s over the
official structure's within the pair: on a shared host whose speed drifts by tens of per cent
between minutes, two steps a few seconds apart see the same conditions, which separate processes
(``--sweep speedup``) do not. Peak memory is not measured in this mode.

Matting inference rows (issue 17), each configuration in a fresh process, so that ``peak_rss_mb``
(``getrusage``'s ``ru_maxrss`` of that child: everything the row ever held, weights included) is
the row's own peak::

    python scripts/benchmark.py --sweep matting_inference --peer /path/to/AlphaGAN-Matting --table
    python scripts/benchmark.py --model alphagan --phase test --test_size 3000 --test_width 4000 --tile 1024
    python scripts/benchmark.py --vs_peer /path/to/AlphaGAN-Matting --test_size 1024 --iters 3

``matting_inference``: AlphaGAN and Deep Image Matting (its stage-3 network: encoder-decoder and
refinement) inference (eval mode, ``model.test()``) at 320 and 1024 px, float32
and ``--amp bf16``, and 4000x3000 with ``--tile 1024 --tile_overlap 64`` (float32), each with
``test_s_per_megapixel`` and ``peak_rss_mb``; with ``--peer PATH`` also the peer's generator
(``--impl peer``) at 320 and 1024. The peer is the public AlphaGAN reproduction
github.com/CDOTAD/AlphaGAN-Matting: ``PATH`` is a checkout of it, imported from there at run time
(its ``model/Encoder.py`` and ``model/Decoder.py``, i.e. ``NetG`` with the GroupNorm(32) its
training script uses); nothing of it is in this repository. ``--vs_peer PATH``: ours (the fast
path: batch norms folded, channels_last), the fast path folded alone (``channels_last=False``), ours'
reference path (``fast_inference=False``) and the peer's generator, random weights,
on the same (1, 4, S, S) input, in one process, alternating (peer, reference, folded, fast)
``--iters`` rounds after ``--warmup`` rounds: ``speedup_vs_peer`` is the median over rounds of the
peer's time over ours within the round (the host's load drift cancels), ``speedup_vs_reference``
the same against our reference path, ``folded_vs_peer`` the folded-alone path's;
``max_abs_diff_vs_reference``: the fast path's output against the reference.

bgmv2 (BackgroundMattingV2 inference at HD and 4K, every refine mode, float32 and --amp, against
full-resolution refinement): ``scripts/benchmark_bgmv2.py``, whose docstring says what it measures.

alphagan (``models/alphagan_model.py``, random init: no pretrained download): training at
``--crop_size`` (default 320), inference through ``model.test()`` at ``--test_size`` (default
1024) with the ground-truth alpha withheld, so that the timing excludes the matting metrics.
dim (``models/dim_model.py``, random init, ``--dim_preset paper`` unless passed on) the same way;
``--dim_stage`` 1 (default: encoder-decoder, alpha + composition losses) or 3 (encoder-decoder and
refinement trained together); 2 (refinement alone) is cheaper than both. Its inference row runs a
stage-3 network (encoder-decoder + refinement), padded to a multiple of 32 (``--dim_fit pad``).
"""
import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import torch  # noqa: E402
from models.instance_norm import set_group_norm  # noqa: E402
from models.shift_conv import set_shift_sum  # noqa: E402

SWEEPS = ('batch', 'ins_max', 'amp', 'channels_last', 'shift_sum', 'instance_norm', 'impl', 'speedup', 'nproc',
          'alphagan', 'dim', 'matting_inference')
MATTING = ('alphagan', 'dim')    # built by build_matting, timed with test_s_per_megapixel


# ----------------------------------------------------------------------------- arguments
def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default='insta_gan', choices=['insta_gan', *MATTING, 'bgmv2'],
                   help='bgmv2: inference rows of scripts/benchmark_bgmv2.py (its options: --sizes, --modes, ...)')
    p.add_argument('--dim_stage', type=int, default=None, choices=(1, 2, 3), help='dim: training stage (default 1)')
    p.add_argument('--impl', default='ours', choices=['ours', 'official', 'peer'],
                   help='official: the official execution structure (scripts/official_reference.py), '
                        'insta_gan at batch 1 only')
    p.add_argument('--crop_size', type=int, default=None, help='training size (default 64; alphagan, dim 320)')
    p.add_argument('--test_size', type=int, default=None,
                   help='inference size (default --crop_size; alphagan, dim 1024)')
    p.add_argument('--ngf', type=int, default=16, help='insta_gan generator width')
    p.add_argument('--ndf', type=int, default=None, help='discriminator width (default --ngf; alphagan 64)')
    p.add_argument('--batch_size', type=int, default=1)
    p.add_argument('--ins_max', type=int, default=4)
    p.add_argument('--ins_per', type=int, default=2)
    p.add_argument('--n_instances', type=int, default=None,
                   help='instances in each synthetic sample (default --ins_max)')
    p.add_argument('--iters', type=int, default=5, help='timed calls')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls before timing')
    p.add_argument('--phase', default='both', choices=['both', 'train', 'test'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads (default: torch default; with --nproc: cores / nproc)')
    p.add_argument('--nproc', type=int, default=1,
                   help='processes (DistributedDataParallel; gloo on CPU, one GPU each on CUDA)')
    p.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'])
    p.add_argument('--channels_last', action='store_true')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--no_shift_sum', action='store_true',
                   help="plain nn.Conv2d for the generators' one-channel output layer (models/shift_conv.py)")
    p.add_argument('--no_group_norm', action='store_true',
                   help='F.instance_norm instead of the group-norm CPU path of instance norm (models/instance_norm.py)')
    p.add_argument('--vs_official', action='store_true',
                   help='insta_gan training: time ours (--batch_size) and the official structure (batch 1) in ONE '
                        'process, alternating step by step, and report the speedup (see the module docstring)')
    p.add_argument('--official_amp', default=None, choices=['none', 'bf16', 'fp16'],
                   help='--vs_official: the official structure\'s --amp (default: the same as ours; the official '
                        'code itself has no mixed precision, i.e. none)')
    p.add_argument('--live_memory', action='store_true',
                   help='CPU: also measure the peak of live tensor memory of one more training step '
                        '(peak_live_mb; see the module docstring)')
    p.add_argument('--test_width', type=int, default=None,
                   help='matting inference: width of the test image (default --test_size: square)')
    p.add_argument('--tile', type=int, default=0, help='matting inference: --tile of the model (0 = whole image)')
    p.add_argument('--tile_overlap', type=int, default=64, help='matting inference: --tile_overlap')
    p.add_argument('--max_side', type=int, default=None, help='matting inference: --max_side')
    p.add_argument('--peer', default=None, metavar='PATH',
                   help='a checkout of github.com/CDOTAD/AlphaGAN-Matting: --impl peer times its generator, '
                        '--sweep matting_inference adds its rows')
    p.add_argument('--vs_peer', default=None, metavar='PATH',
                   help='ours vs the peer generator (a checkout of CDOTAD/AlphaGAN-Matting) alternating in '
                        'one process at --test_size')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--sweep', default=None, choices=SWEEPS,
                   help='run configurations, each in a fresh subprocess, one JSON line each')
    p.add_argument('--sweep_values', default=None,
                   help='comma-separated values (batch: 1,2,4,8; ins_max: 2,4,8; nproc: 1,2; amp: none,bf16[,fp16])')
    p.add_argument('--repeat', type=int, default=1, help='sweep: run every configuration this many times '
                                                          '(interleaved)')
    p.add_argument('--table', action='store_true', help='sweep: also print a markdown table of the medians')
    return p


def parse_args(argv=None):
    parser = build_parser()
    args, args.train_options = parser.parse_known_args(argv)
    if args.vs_peer:
        args.model, args.peer = 'alphagan', args.vs_peer
    alpha = args.model in MATTING
    args.crop_size = args.crop_size or (320 if alpha else 64)
    args.test_size = args.test_size or (1024 if alpha else args.crop_size)
    args.ndf = args.ndf or (64 if args.model == 'alphagan' else args.ngf)
    args.n_instances = args.ins_max if args.n_instances is None else args.n_instances
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1 or args.ins_max < 1 or args.ins_per < 1:
        parser.error('--iters, --batch_size, --ins_max and --ins_per must be >= 1, --warmup >= 0')
    if args.impl == 'official' and (alpha or args.batch_size != 1 or args.compile):
        parser.error('--impl official exists for --model insta_gan at --batch_size 1 without --compile only '
                     '(the official code mixes samples or crashes at batch > 1)')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device here; use --device cpu')
    if args.vs_official and (alpha or args.impl == 'official' or args.nproc > 1 or args.sweep):
        parser.error('--vs_official compares --model insta_gan (--impl ours, one process, no --sweep) with the '
                     'official structure')
    if args.nproc < 1 or (args.nproc > 1 and args.impl == 'official'):
        parser.error('--nproc must be >= 1, and 1 with --impl official (the official code has no multi-process mode)')
    if args.device == 'cuda' and args.nproc > torch.cuda.device_count():
        parser.error(f'--nproc {args.nproc}: only {torch.cuda.device_count()} CUDA devices here')
    if args.impl == 'peer' and (args.model != 'alphagan' or not args.peer or args.phase != 'test'):
        parser.error('--impl peer times the peer generator at inference: --model alphagan --phase test --peer PATH')
    for path in (args.peer,):
        if path and not (Path(path) / 'model' / 'Decoder.py').is_file():
            parser.error(f'--peer {path}: no model/Decoder.py there; pass a checkout of '
                         'github.com/CDOTAD/AlphaGAN-Matting')
    args.test_width = args.test_width or args.test_size
    args.rank = 0
    return args


# ----------------------------------------------------------------------------- measurement
def _rss_mb():
    """Current resident set size in MiB (Linux /proc; else the lifetime peak as a fallback)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except OSError:
        return _maxrss_mb()


def _maxrss_mb():
    """Lifetime peak resident set size in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == 'darwin' else r / 1024


class Meter:
    """Peak memory of successive phases above a common starting point (see the module docstring)."""

    def __init__(self, device):
        self.cuda = device.type == 'cuda'
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated() / 2 ** 20
        else:
            self.base = _rss_mb()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def phase(self, result):
        """Fills ``result['peak_mem_mb']`` and ``result['exact']`` for the block."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = _maxrss_mb()
        yield
        if self.cuda:
            torch.cuda.synchronize()
            result['peak_mem_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20 - self.base
            result['exact'] = True
        else:
            after = _maxrss_mb()
            result['peak_mem_mb'] = after - self.base
            result['exact'] = after > before


def live_peak_mb(fn):
    """Peak CPU tensor memory (MiB) that ``fn()`` allocates above what was allocated when it began:
    the profiler's record of every allocation (+bytes) and free (-bytes), summed in time order."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                      if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU),
                     key=lambda r: r[0])
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak / 2 ** 20


def time_calls(fn, iters, warmup, sync):
    """Wall times and process CPU times (s) of ``iters`` calls of ``fn`` after ``warmup`` calls.

    Returns dict(med, min, all, cpu_med): the CPU time (all threads of this process) is less
    sensitive than the wall time to other processes sharing the cores."""
    for _ in range(warmup):
        fn()
    sync()
    times, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return dict(med=statistics.median(times), min=min(times), all=times, cpu_med=statistics.median(cpu))


# ----------------------------------------------------------------------------- synthetic data
def synthetic_instance_batch(batch_size, size, n_instances, n_slots, seed=0):
    """An unaligned_seg-style batch: 'A', 'B' (B, 3, size, size) uniform in [-1, 1]; 'A_segs',
    'B_segs' (B, n_slots, size, size) in {-1, 1}: ``n_instances`` random rectangles (each 1/8 to
    1/3 of the side) per sample, then empty slots (all -1)."""
    g = torch.Generator().manual_seed(seed)
    n_slots = max(n_slots, n_instances)

    def segs():
        s = -torch.ones(batch_size, n_slots, size, size)
        lo, hi = max(1, size // 8), max(2, size // 3)
        for b in range(batch_size):
            for k in range(n_instances):
                h, w = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=g))
                y, x = int(torch.randint(0, size - h + 1, (1,), generator=g)), \
                    int(torch.randint(0, size - w + 1, (1,), generator=g))
                s[b, k, y:y + h, x:x + w] = 1
        return s

    return {'A': torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1,
            'B': torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1,
            'A_segs': segs(), 'B_segs': segs(),
            'A_paths': [f'a{i}.png' for i in range(batch_size)],
            'B_paths': [f'b{i}.png' for i in range(batch_size)]}


def synthetic_matting_batch(batch_size, size, seed=0, width=None):
    """'image', 'fg', 'bg' (B, 3, size, width) in [0, 1] (image = alpha fg + (1 - alpha) bg; width
    defaults to size); 'alpha' (B, 1, size, width) in [0, 1] (a soft-edged disc); 'trimap'
    (B, 1, size, width) in {0, 0.5, 1}."""
    g = torch.Generator().manual_seed(seed)
    width = width or size
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(width), indexing='ij')
    r = ((yy - size / 2) ** 2 + (xx - width / 2) ** 2).sqrt()
    alpha = ((0.3 * size - r) / (0.05 * size)).clamp(0, 1)[None, None].repeat(batch_size, 1, 1, 1)
    fg = torch.rand(batch_size, 3, size, width, generator=g)
    bg = torch.rand(batch_size, 3, size, width, generator=g)
    trimap = torch.full_like(alpha, 0.5)
    trimap[alpha == 0], trimap[alpha == 1] = 0.0, 1.0
    return {'image': alpha * fg + (1 - alpha) * bg, 'fg': fg, 'bg': bg, 'alpha': alpha, 'trimap': trimap}


# ----------------------------------------------------------------------------- models
def _quiet():
    """Model construction prints (network sizes): keep stdout for the JSON line."""
    return contextlib.redirect_stdout(sys.stderr)


def train_options(argv, args):
    """``TrainOptions(argv).parse()`` plus ``--amp`` / ``--channels_last`` / ``--compile`` when
    asked for; exits with a message when the training options lack one."""
    from options.train_options import TrainOptions
    with _quiet():
        probe = TrainOptions(argv).parse(save=False)
    extra = []
    for name, wanted in (('amp', args.amp != 'none'), ('channels_last', args.channels_last),
                         ('compile', args.compile)):
        if wanted and not hasattr(probe, name):
            raise SystemExit(f'--{name}: the training options (options/*.py) have no --{name} in this tree')
        if wanted:
            extra += ['--amp', args.amp] if name == 'amp' else ['--' + name]
    if not extra:
        return probe
    with _quiet():
        return TrainOptions(argv + extra).parse(save=False)


def build_insta_gan(args, device, tmp):
    """(stepper, model, train batch, test batch); ``stepper`` (the model, or the official
    structure around it) has set_input / optimize_parameters / test."""
    from models import create_model
    argv = ['--model', 'insta_gan', '--dataroot', 'synthetic', '--name', 'benchmark', '--checkpoints_dir', tmp,
            '--gpu_ids', str(device.index or 0) if device.type == 'cuda' else '-1', '--num_threads', '0',
            '--crop_size', str(args.crop_size), '--load_size', str(args.crop_size),
            '--ngf', str(args.ngf), '--ndf', str(args.ndf), '--batch_size', str(args.batch_size),
            '--ins_max', str(args.ins_max), '--ins_per', str(args.ins_per), '--seed', str(args.seed)]
    with _quiet():
        model = create_model(train_options(argv + args.train_options, args))
        model.setup(model.opt)
    stepper = model
    if args.impl == 'official':
        from scripts.official_reference import OfficialStructureInstaGAN
        stepper = OfficialStructureInstaGAN(model)
    batch = synthetic_instance_batch(args.batch_size, args.crop_size, args.n_instances, args.ins_max,
                                     args.seed + args.rank)
    return stepper, model, batch, batch


def build_matting(args, device, tmp):
    """(model, model, train batch, test batch) for a matting model (models/alphagan_model.py, dim_model.py)."""
    from models import create_model
    if not (ROOT / 'models' / f'{args.model}_model.py').is_file():
        raise SystemExit(f'--model {args.model}: models/{args.model}_model.py does not exist in this tree')
    argv = ['--model', args.model, '--dataroot', 'synthetic', '--name', 'benchmark', '--checkpoints_dir', tmp,
            '--gpu_ids', str(device.index or 0) if device.type == 'cuda' else '-1', '--num_threads', '0',
            '--crop_size', str(args.crop_size), '--load_size', str(args.crop_size),
            '--batch_size', str(args.batch_size), '--seed', str(args.seed)]
    argv += ['--ndf', str(args.ndf)] if args.model == 'alphagan' else ['--dim_stage', str(args.dim_stage or 1)]
    with _quiet():
        model = create_model(train_options(argv + args.train_options, args))
        model.setup(model.opt)

    def batch(size, width=None):
        b = synthetic_matting_batch(args.batch_size, size, args.seed + args.rank, width)
        b['path'] = [f'synthetic_{i}.png' for i in range(args.batch_size)]
        return b
    model.tile, model.tile_overlap, model.max_side = args.tile, args.tile_overlap, args.max_side
    return model, model, batch(args.crop_size), batch(args.test_size, args.test_width)


def build_peer_generator(path):
    """The peer's generator (github.com/CDOTAD/AlphaGAN-Matting ``NetG(sync_bn=False)``: its ResNet-50
    encoder with ASPP, then its decoder, GroupNorm(32) as its ``BatchNormGroup``), imported from the
    checkout at ``path`` (its ``model/AlphaGAN.py`` imports training-only packages, so the two
    halves are put together here the way ``NetG.forward`` chains them). Eval mode."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from model.Decoder import Decoder
    from model.Encoder import Encoder

    def group_norm(channels):
        return torch.nn.GroupNorm(num_groups=32, num_channels=channels)
    return torch.nn.Sequential(Encoder(group_norm), Decoder(group_norm)).eval()


def run_vs_peer(args):
    """``--vs_peer``: the record (see the module docstring)."""
    from models.matting_networks import AlphaGANGenerator
    device = setup_process(args)
    sync = Meter(device).sync
    load_before = os.getloadavg()
    ours = AlphaGANGenerator().to(device).eval()
    folded = AlphaGANGenerator(channels_last=False).to(device).eval()
    folded.load_state_dict(ours.state_dict())
    peer = build_peer_generator(args.peer).to(device)
    g = torch.Generator().manual_seed(args.seed)
    h, w = args.test_size, args.test_width
    x = torch.cat([torch.randn(1, 3, h, w, generator=g),
                   torch.randint(0, 3, (1, 1, h, w), generator=g).float() / 2], 1).to(device)
    runs = {'peer': lambda: peer(x), 'reference': lambda: ours.reference_forward(x), 'folded': lambda: folded(x),
            'ours': lambda: ours(x)}
    times = {k: [] for k in runs}
    with torch.inference_mode(), contextlib.ExitStack() as stack:
        if args.amp != 'none':
            stack.enter_context(torch.autocast(device.type, dtype=getattr(torch, {'bf16': 'bfloat16',
                                                                                 'fp16': 'float16'}[args.amp])))
        reference = ours.reference_forward(x).float()
        diff = (ours(x).float() - reference).abs().max().item()
        diff_folded = (folded(x).float() - reference).abs().max().item()
        for _ in range(args.warmup):
            for fn in runs.values():
                fn()
        for _ in range(args.iters):
            for k, fn in runs.items():
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t0)
    mp = h * w / 1e6
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
    return {'model': 'alphagan', 'vs_peer': True, 'peer': str(args.peer), 'device': str(device),
            'device_name': device_name(device), 'threads': torch.get_num_threads(), 'torch': torch.__version__,
            'size': [h, w], 'amp': args.amp, 'loadavg_1_5_15': [round(v, 2) for v in load_before],
            **{f'{k}_s_per_megapixel': statistics.median(v) / mp for k, v in times.items()},
            **{f'{k}_s_all': [round(t, 3) for t in v] for k, v in times.items()},
            'speedup_vs_peer': ratio('peer', 'ours'), 'speedup_vs_reference': ratio('reference', 'ours'),
            'reference_vs_peer': ratio('peer', 'reference'), 'folded_vs_peer': ratio('peer', 'folded'),
            'max_abs_diff_vs_reference': diff, 'folded_max_abs_diff_vs_reference': diff_folded,
            'iters': args.iters, 'warmup': args.warmup,
            'loadavg_after': [round(v, 2) for v in os.getloadavg()]}


def first_conv(model):
    """The first Conv2d of the model's first network (unwrapped from compile / parallel wrappers)."""
    from models.base_model import unwrap
    net = unwrap(model.nets()[0][1])
    return next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)


# ----------------------------------------------------------------------------- one configuration
def setup_process(args):
    """Seed, thread count; the device this process times on."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(f'cuda:{args.rank}' if args.device == 'cuda' else 'cpu')


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()


def apply_fast_path_options(model, args):
    """``--no_shift_sum`` / ``--no_group_norm``: turn those CPU paths off in the model's networks."""
    for _, net in model.nets():
        if args.no_shift_sum:
            set_shift_sum(net, False)
        if args.no_group_norm:
            set_group_norm(net, False)


def run_one(args):
    """Benchmark one configuration; returns the JSON record."""
    device = setup_process(args)
    load_before = os.getloadavg()
    if args.impl == 'peer':
        return run_peer(args, device, load_before)
    with tempfile.TemporaryDirectory() as tmp:
        build = build_insta_gan if args.model == 'insta_gan' else build_matting
        stepper, model, batch, test_batch = build(args, device, tmp)
        apply_fast_path_options(model, args)
        dtypes = []
        conv = first_conv(model)
        if conv is not None:
            conv.register_forward_hook(lambda m, i, o: dtypes.append(str(o.dtype).replace('torch.', '')))
        meter = Meter(device)
        record = {'model': args.model, 'impl': args.impl, 'device': str(device), 'device_name': device_name(device),
                  'threads': torch.get_num_threads(), 'torch': torch.__version__,
                  'loadavg_1_5_15': [round(v, 2) for v in load_before]}
        if args.phase in ('both', 'test'):
            model.eval()
            stepper.set_input(test_batch)
            if args.model in MATTING:
                model.gt_alpha = None          # no metrics in the timed inference
            mem = {}
            with meter.phase(mem):
                # A tiled row may time its first call (--warmup 0): its first tile warms up the rest.
                t = time_calls(stepper.test, args.iters, args.warmup if args.tile else max(1, args.warmup), meter.sync)
            med = t['med']
            record.update(test_s_per_iter=med, test_s_per_iter_min=t['min'], test_cpu_s_per_iter=t['cpu_med'],
                          test_images_per_s=args.batch_size / med,
                          test_peak_mem_mb=round(mem['peak_mem_mb'], 1), test_peak_mem_exact=mem['exact'],
                          test_conv_dtype=dtypes[-1] if dtypes else None)
            if args.model in MATTING:
                record['test_s_per_megapixel'] = med / (args.batch_size * args.test_size * args.test_width / 1e6)
                record['test_hw'] = [args.test_size, args.test_width]
                record['tile'] = [args.tile, args.tile_overlap] if args.tile else None
                record['max_side'] = args.max_side
            model.train()
        if args.phase in ('both', 'train'):
            stepper.set_input(batch)
            mem = {}
            with meter.phase(mem):
                t = time_calls(stepper.optimize_parameters, args.iters, args.warmup, meter.sync)
            med = t['med']
            record.update(s_per_iter=med, s_per_iter_min=t['min'], s_per_iter_all=[round(v, 4) for v in t['all']],
                          cpu_s_per_iter=t['cpu_med'], samples_per_s=args.batch_size / med,
                          peak_mem_mb=round(mem['peak_mem_mb'], 1), peak_mem_exact=mem['exact'],
                          train_conv_dtype=dtypes[-1] if dtypes else None)
            if args.live_memory and device.type == 'cpu':
                record['peak_live_mb'] = round(live_peak_mb(stepper.optimize_parameters), 1)
    if args.nproc > 1:
        record['nproc'] = args.nproc
        for key in ('samples_per_s', 'test_images_per_s'):
            if key in record:
                record[key + '_per_process'] = record[key]
                record[key] = record[key] * args.nproc
    record['peak_rss_mb'] = round(_maxrss_mb(), 1)
    record['loadavg_after'] = [round(v, 2) for v in os.getloadavg()]
    record['malloc_mmap_threshold'] = os.environ.get('MALLOC_MMAP_THRESHOLD_')
    record['options'] = {k: getattr(args, k) for k in (
        'crop_size', 'test_size', 'ngf', 'ndf', 'batch_size', 'ins_max', 'ins_per', 'n_instances',
        'iters', 'warmup', 'phase', 'amp', 'channels_last', 'compile', 'no_shift_sum', 'no_group_norm',
        'live_memory', 'seed', 'nproc', 'train_options')}
    if args.model in MATTING:
        for k in ('ngf', 'ins_max', 'ins_per', 'n_instances'):
            record['options'].pop(k)
    if args.model == 'dim':
        record['options'].pop('ndf')
        record['options']['dim_stage'] = args.dim_stage or 1
    return record


def run_peer(args, device, load_before):
    """``--impl peer``: the peer's generator on a (B, 4, H, W) input, eval, no gradients (``--amp``
    as autocast); the record's test_* fields as ours' inference rows have them."""
    peer = build_peer_generator(args.peer).to(device)
    g = torch.Generator().manual_seed(args.seed)
    h, w = args.test_size, args.test_width
    x = torch.cat([torch.randn(args.batch_size, 3, h, w, generator=g),
                   torch.randint(0, 3, (args.batch_size, 1, h, w), generator=g).float() / 2], 1).to(device)
    meter, mem = Meter(device), {}

    def call():
        with torch.inference_mode(), contextlib.ExitStack() as stack:
            if args.amp != 'none':
                stack.enter_context(torch.autocast(device.type, dtype={'bf16': torch.bfloat16,
                                                                       'fp16': torch.float16}[args.amp]))
            peer(x)
    with meter.phase(mem):
        t = time_calls(call, args.iters, max(1, args.warmup), meter.sync)
    return {'model': 'alphagan', 'impl': 'peer', 'peer': str(args.peer), 'device': str(device),
            'device_name': device_name(device), 'threads': torch.get_num_threads(), 'torch': torch.__version__,
            'loadavg_1_5_15': [round(v, 2) for v in load_before], 'test_s_per_iter': t['med'],
            'test_s_per_iter_min': t['min'], 'test_cpu_s_per_iter': t['cpu_med'],
            'test_images_per_s': args.batch_size / t['med'],
            'test_s_per_megapixel': t['med'] / (args.batch_size * h * w / 1e6), 'test_hw': [h, w],
            'test_peak_mem_mb': round(mem['peak_mem_mb'], 1), 'test_peak_mem_exact': mem['exact'],
            'peak_rss_mb': round(_maxrss_mb(), 1), 'loadavg_after': [round(v, 2) for v in os.getloadavg()],
            'options': {'amp': args.amp, 'batch_size': args.batch_size, 'iters': args.iters, 'warmup': args.warmup}}


def run_vs_official(args):
    """``--vs_official``: ours and the official structure alternating in one process; the record."""
    device = setup_process(args)
    sync = Meter(device).sync
    load_before = os.getloadavg()
    official_args = copy.copy(args)
    official_args.impl, official_args.batch_size = 'official', 1
    official_args.amp = args.official_amp or args.amp
    with tempfile.TemporaryDirectory() as tmp:
        ours, model, batch, _ = build_insta_gan(args, device, tmp)
        apply_fast_path_options(model, args)
        official, _, official_batch, _ = build_insta_gan(official_args, device, tmp)
        ours.set_input(batch)
        official.set_input(official_batch)
        for _ in range(args.warmup):
            official.optimize_parameters()
            ours.optimize_parameters()
        pairs = []
        for _ in range(args.iters):
            pair = []
            for stepper in (official, ours):
                sync()
                t0 = time.perf_counter()
                stepper.optimize_parameters()
                sync()
                pair.append(time.perf_counter() - t0)
            pairs.append(pair)
    t_off = [p[0] for p in pairs]
    t_ours = [p[1] for p in pairs]
    speedups = [args.batch_size * off / o for off, o in pairs]
    return {'model': 'insta_gan', 'impl': 'ours', 'vs_official': True, 'device': str(device),
            'device_name': device_name(device),
            'threads': torch.get_num_threads(), 'torch': torch.__version__,
            'loadavg_1_5_15': [round(v, 2) for v in load_before],
            's_per_iter': statistics.median(t_ours), 'samples_per_s': args.batch_size / statistics.median(t_ours),
            'official_s_per_iter': statistics.median(t_off), 'official_samples_per_s': 1 / statistics.median(t_off),
            'official_amp': official_args.amp,
            'speedup': statistics.median(speedups), 'speedup_min': min(speedups), 'speedup_max': max(speedups),
            's_per_iter_all': [round(v, 4) for v in t_ours], 'official_s_per_iter_all': [round(v, 4) for v in t_off],
            'loadavg_after': [round(v, 2) for v in os.getloadavg()],
            'options': {k: getattr(args, k) for k in (
                'crop_size', 'ngf', 'ndf', 'batch_size', 'ins_max', 'ins_per', 'n_instances', 'iters', 'warmup',
                'amp', 'channels_last', 'no_shift_sum', 'no_group_norm', 'seed', 'train_options')}}


def _rank_worker(rank, args, port, out):
    """One process of ``--nproc``: join the process group as train.py does under torchrun
    (:func:`util.distributed.init_distributed`), then :func:`run_one` (DDP-wrapped networks);
    rank 0 writes its record to ``out``."""
    from types import SimpleNamespace
    from util import distributed
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(args.nproc),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    distributed.init_distributed(SimpleNamespace(gpu_ids=[0] if args.device == 'cuda' else []))
    try:
        args.rank = rank
        args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.nproc)
        record = run_one(args)
        if rank == 0:
            Path(out).write_text(json.dumps(record))
    finally:
        distributed.cleanup()


def run_multi(args):
    """``--nproc`` > 1: spawn the processes; rank 0's record."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'record.json')
        mp.start_processes(_rank_worker, args=(args, port, out), nprocs=args.nproc, start_method='spawn')
        return json.loads(Path(out).read_text())


# ----------------------------------------------------------------------------- sweeps
def to_argv(args, **overrides):
    """Command line for one configuration (the sweep options dropped)."""
    values = {k: v for k, v in vars(args).items()
              if k not in ('sweep', 'sweep_values', 'repeat', 'table', 'train_options', 'rank')}
    values.update(overrides)
    argv = []
    for k, v in values.items():
        if isinstance(v, bool):
            argv += ['--' + k] if v else []
        elif v is not None:
            argv += ['--' + k, str(v)]
    return argv + list(args.train_options)


def sweep_configs(args):
    """(label, overrides) of each configuration of ``args.sweep``."""
    vals = args.sweep_values.split(',') if args.sweep_values else None
    s = args.sweep
    if s == 'batch':
        return [(f'batch {v}', {'batch_size': int(v)}) for v in (vals or [1, 2, 4, 8])]
    if s == 'ins_max':
        out = []
        for v in (int(v) for v in (vals or [2, 4, 8])):
            out.append((f'ins_max {v} sequential (ins_per {min(args.ins_per, v)})',
                        {'ins_max': v, 'ins_per': min(args.ins_per, v), 'n_instances': v}))
            if args.ins_per < v:
                out.append((f'ins_max {v} one-pass (ins_per {v})', {'ins_max': v, 'ins_per': v, 'n_instances': v}))
        return out
    if s == 'amp':
        default = ['none', 'bf16'] + (['fp16'] if args.device == 'cuda' else [])
        return [(f'amp {v}', {'amp': v}) for v in (vals or default)]
    if s == 'shift_sum':
        return [('shift-sum output layer', {'no_shift_sum': False}), ('nn.Conv2d output layer', {'no_shift_sum': True})]
    if s == 'instance_norm':
        return [('instance norm as group norm', {'no_group_norm': False}),
                ('F.instance_norm', {'no_group_norm': True})]
    if s == 'channels_last':
        return [('contiguous', {'channels_last': False}), ('channels_last', {'channels_last': True})]
    if s == 'nproc':
        return [(f'{v} process{"es" if int(v) > 1 else ""} x batch {args.batch_size}', {'nproc': int(v)})
                for v in (vals or [1, 2])]
    if s == 'impl':
        return [(f'{v} (batch 1)', {'impl': v, 'batch_size': 1}) for v in ('ours', 'official')]
    if s == 'speedup':
        return [('official structure (batch 1)', {'impl': 'official', 'batch_size': 1})] + \
            [(f'ours, batch {v}', {'impl': 'ours', 'batch_size': int(v)}) for v in (vals or [1, 2, 4, 8])]
    if s == 'alphagan':
        return [('alphagan train', {'model': 'alphagan', 'impl': 'ours', 'phase': 'train', 'batch_size': 1,
                                    'crop_size': args.crop_size if args.model == 'alphagan' else 320,
                                    'ndf': None, 'test_size': None}),
                ('alphagan inference', {'model': 'alphagan', 'impl': 'ours', 'phase': 'test', 'batch_size': 1,
                                        'crop_size': None, 'ndf': None,
                                        'test_size': args.test_size if args.model == 'alphagan' else 1024})]
    if s == 'dim':
        size = {'crop_size': args.crop_size if args.model == 'dim' else 320, 'test_size': None}
        return [(f'dim train (stage {k})', {'model': 'dim', 'impl': 'ours', 'phase': 'train', 'batch_size': 1,
                                             'ndf': None, 'dim_stage': k, **size}) for k in (1, 3)] + \
            [('dim inference (stage 3 network)', {'model': 'dim', 'impl': 'ours', 'phase': 'test', 'batch_size': 1,
                                                  'crop_size': None, 'ndf': None, 'dim_stage': 3,
                                                  'test_size': args.test_size if args.model == 'dim' else 1024})]
    if s == 'matting_inference':
        row = {'model': 'alphagan', 'phase': 'test', 'batch_size': 1, 'crop_size': None, 'ndf': None,
               'test_width': None, 'tile': 0, 'max_side': None, 'impl': 'ours'}
        out = []
        for model, extra in (('alphagan', {}), ('dim', {'dim_stage': 3})):     # DIM: the stage-3 network
            out += [(f'{model} {n} px {amp}', {**row, **extra, 'model': model, 'test_size': n, 'amp': amp})
                    for n in (320, 1024) for amp in ('none', 'bf16')]
            out.append((f'{model} 4000x3000 tile 1024/64 none', {**row, **extra, 'model': model, 'test_size': 3000,
                                                                  'test_width': 4000, 'tile': 1024, 'tile_overlap': 64,
                                                                  'amp': 'none', 'iters': 1, 'warmup': 0}))
        if args.peer:
            out += [(f'peer {n} px none', {**row, 'impl': 'peer', 'test_size': n, 'amp': 'none'}) for n in (320, 1024)]
        return out
    raise ValueError(s)


def run_subprocess(argv):
    """Run one configuration in a fresh interpreter; its JSON record (or an error record)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], capture_output=True, text=True,
                          cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return {'error': (proc.stderr.strip().splitlines() or ['no output'])[-1], 'argv': argv,
                'returncode': proc.returncode}
    return json.loads(lines[-1])


def markdown_table(rows):
    """rows: (label, [records]) -> markdown table of medians over the records (plus the live-memory
    peak where the records have one). When one row is the official structure (``--impl official``),
    a column gives each row's samples/s against it: the median over rounds of the ratio within a
    round (the runs of one round are adjacent in time, so the host's load drift cancels)."""
    def med(recs, key):
        vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    def fmt(v, spec):
        return '-' if v is None else format(v, spec)

    reference = next((recs for _, recs in rows if recs and recs[0].get('impl') == 'official'), None)

    def against_official(recs):
        ratios = [r['samples_per_s'] / o['samples_per_s'] for r, o in zip(recs, reference or [])
                  if 'samples_per_s' in r and 'samples_per_s' in o]
        return statistics.median(ratios) if ratios else None

    live = any('peak_live_mb' in r for _, recs in rows for r in recs)      # --live_memory
    extra = (' peak live MB |' if live else '') + (' x official (per round) |' if reference else '')
    lines = ['| configuration | runs | s/iter | CPU s/iter | samples/s | samples/CPU-s | peak MB | test img/s '
             '| test peak MB | load (1 min) |' + extra,
             '|---|---|---|---|---|---|---|---|---|---|' + ('---|' if live else '') + ('---|' if reference else '')]
    for label, recs in rows:
        ok = [r for r in recs if 'error' not in r]
        loads = [r['loadavg_1_5_15'][0] for r in ok]
        cpu = med(ok, 'cpu_s_per_iter')
        per_cpu = ok[0]['options']['batch_size'] / cpu if cpu else None
        tail = (f' {fmt(med(ok, "peak_live_mb"), ".1f")} |' if live else '') + \
            (f' {fmt(against_official(recs), ".2f")} |' if reference else '')
        lines.append(f'| {label} | {len(ok)}/{len(recs)} | {fmt(med(ok, "s_per_iter"), ".3f")} | {fmt(cpu, ".3f")} | '
                     f'{fmt(med(ok, "samples_per_s"), ".3f")} | {fmt(per_cpu, ".3f")} | '
                     f'{fmt(med(ok, "peak_mem_mb"), ".1f")} | '
                     f'{fmt(med(ok, "test_images_per_s"), ".3f")} | {fmt(med(ok, "test_peak_mem_mb"), ".1f")} | '
                     f'{fmt(min(loads) if loads else None, ".2f")}-{fmt(max(loads) if loads else None, ".2f")} |'
                     + tail)
    return '\n'.join(lines)


def run_sweep(args):
    configs = sweep_configs(args)
    results = {label: [] for label, _ in configs}
    for _ in range(max(1, args.repeat)):          # interleaved, so load drift hits every configuration
        for label, overrides in configs:
            rec = run_subprocess(to_argv(args, **overrides))
            rec['sweep'], rec['label'] = args.sweep, label
            results[label].append(rec)
            print(json.dumps(rec), flush=True)
    if args.table:
        print(markdown_table(list(results.items())), flush=True)
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.model == 'bgmv2':          # its own rows: sizes x precisions x refine modes
        from scripts.benchmark_bgmv2 import run_bgmv2
        run_bgmv2(args)
    elif args.sweep:
        run_sweep(args)
    elif args.vs_peer:
        print(json.dumps(run_vs_peer(args)), flush=True)
    elif args.vs_official:
        print(json.dumps(run_vs_official(args)), flush=True)
    else:
        print(json.dumps(run_multi(args) if args.nproc > 1 else run_one(args)), flush=True)


if __name__ == '__main__':
    main()
