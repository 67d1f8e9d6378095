"""torchrun integration: process group, rank helpers, gradient and state synchronisation, seeding.

``torchrun --nproc_per_node=N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we use NCCL on
GPUs and gloo on CPU. Only rank 0 prints, plots, writes HTML and checkpoints.

Training networks are wrapped in ``DistributedDataParallel`` (:func:`wrap_ddp`), which averages
gradients during backward, overlapped with it, bucket by bucket. The GANs here call a network
several times before one backward and freeze the discriminator during the generator's step; both
are fine with DDP as long as every rank makes the same backward calls through the same networks
and every parameter of a network reached by a backward gets a gradient (see models/base_model.py).
"""
import os
import random

import numpy as np
import torch
import torch.distributed as dist


def init_distributed(opt):
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pin each rank's GPU.

    Sets ``opt.world_size``, ``opt.rank``, ``opt.local_rank`` (and ``opt.gpu_ids`` / ``opt.device``
    to the rank's GPU). Backend: NCCL with GPUs, gloo on CPU."""
    opt.world_size = int(os.environ.get('WORLD_SIZE', 1))
    opt.rank = int(os.environ.get('RANK', 0))
    opt.local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if opt.world_size <= 1:
        return opt
    if opt.gpu_ids:
        gpu = opt.gpu_ids[opt.local_rank % len(opt.gpu_ids)] if len(opt.gpu_ids) > 1 else opt.local_rank
        torch.cuda.set_device(gpu)
        opt.gpu_ids = [gpu]
        opt.device = f'cuda:{gpu}'
        backend = 'nccl'
    else:
        backend = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return opt


def is_main(opt):
    """True on rank 0. ``opt.rank`` is set by :func:`init_distributed` (not an option): options that
    never went through it (test.py, scripts) belong to the one process there is."""
    return getattr(opt, 'rank', 0) == 0


def active():
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    return dist.get_world_size() if active() else 1


def rank():
    return dist.get_rank() if active() else 0


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(device):
    """Tensors for collectives live on the GPU with NCCL, on the CPU with gloo."""
    return torch.device(device) if dist.get_backend() == 'nccl' else torch.device('cpu')


def any_rank(flag, device='cpu'):
    """True on every rank when ``flag`` is true on at least one (``bool(flag)`` without a process
    group). ``flag`` may be a list of flags: returns the list of answers, in one all-reduce."""
    many = isinstance(flag, (list, tuple))
    flags = [bool(f) for f in flag] if many else [bool(flag)]
    if active():
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=_comm_device(device))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flags = [v > 0 for v in t.tolist()]
    return flags if many else flags[0]


def wrap_ddp(net, device):
    """``net`` in DistributedDataParallel: rank 0's parameters and buffers copied to every rank now,
    gradients averaged over the ranks in every backward.

    Buffers are not re-broadcast before each forward (``broadcast_buffers=False``): spectral-norm
    vectors evolve identically on every rank from identical weights and the same calls, and
    BatchNorm running statistics are averaged when a checkpoint is written
    (:func:`average_batchnorm_stats`). DDP then copies only the parameters at construction, so the
    buffers (e.g. the random initial spectral-norm vectors) are broadcast here first."""
    from torch.nn.parallel import DistributedDataParallel
    device = torch.device(device)
    comm = _comm_device(device)
    with torch.no_grad():
        for t in net.buffers():
            buf = t.detach().to(comm).contiguous()
            dist.broadcast(buf, 0)
            t.copy_(buf.to(t.device))
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == 'cuda' else None
    return DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)


def average_batchnorm_stats(net, device='cpu'):
    """Average BatchNorm running statistics over the ranks (each rank tracks its own shard's)."""
    if not active():
        return
    comm = _comm_device(device)
    world = dist.get_world_size()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                for t in (m.running_mean, m.running_var):
                    if t is not None:
                        buf = t.to(comm).clone()
                        dist.all_reduce(buf)
                        t.copy_((buf / world).to(t.device))


def check_in_sync(named_tensors, device='cpu'):
    """Names of the tensors whose values differ between ranks ([] when all agree or not distributed).

    Compares a float64 checksum (sum and sum of squares) of each tensor across the ranks."""
    if not active():
        return []
    names, sums = [], []
    for name, t in named_tensors:
        t = t.detach().double()
        names.append(name)
        sums.append(torch.stack([t.sum(), (t * t).sum()]))
    if not sums:
        return []
    local = torch.stack(sums).to(_comm_device(device))
    lo, hi = local.clone(), local.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return [n for n, bad in zip(names, (lo != hi).any(1).tolist()) if bad]


def gather_to_main(obj):
    """List of every rank's ``obj`` on rank 0 (None on other ranks); ``[obj]`` when not distributed.
    Objects must hold CPU tensors (they are pickled between processes)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj, src=0):
    """``obj`` of rank ``src`` on every rank (pickled)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and torch; with ``deterministic`` also ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        set_deterministic()


def set_deterministic():
    """Deterministic kernels (``torch.use_deterministic_algorithms``; warns where an op has none)."""
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def unwrap(net):
    """The plain module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(net, '_orig_mod'):
            net = net._orig_mod
        elif isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            net = net.module
        else:
            return net
