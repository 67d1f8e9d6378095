"""torchrun integration: process group, rank helpers, gradient and state synchronisation, seeding.

``torchrun --nproc_per_node=N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we use NCCL on
GPUs and gloo on CPU. Only rank 0 prints, plots, writes HTML and checkpoints.

Why gradients are all-reduced by hand instead of wrapping networks in DistributedDataParallel:
a GAN step calls a generator several times before one backward (CycleGAN: G_A on real_A and on
fake_A, plus identity; InstaGAN: every pass, with a batch of varying size), calls the
discriminator inside the generator's step with its parameters frozen (``requires_grad=False``),
and InstaGAN leaves a network out of a pass when no sample of the rank has instances in it. DDP's
reducer expects one forward per backward and a fixed set of parameters receiving gradients, so it
needs ``find_unused_parameters``, ``static_graph`` and ``no_sync`` tricks that still fail on
frozen discriminators. Averaging the gradients once per optimizer step (:func:`allreduce_grads`,
one flattened all-reduce per ~64 MB bucket) is exact for any number of forwards, costs the same
bytes as DDP, and only gives up DDP's overlap of communication with the backward pass.
"""
import os
import random

import numpy as np
import torch
import torch.distributed as dist

BUCKET_BYTES = 64 * 2 ** 20


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
    return getattr(opt, 'rank', 0) == 0


def active():
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    return dist.get_world_size() if active() else 1


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(device):
    """Tensors for collectives live on the GPU with NCCL, on the CPU with gloo."""
    return torch.device(device) if dist.get_backend() == 'nccl' else torch.device('cpu')


def any_rank(flag, device='cpu'):
    """True on every rank when ``flag`` is true on at least one (False without a process group)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def allreduce_grads(params, device='cpu'):
    """Average the gradients of ``params`` over the ranks, in place.

    A parameter that got a gradient on some rank but not on this one (e.g. a network that this
    rank's samples did not use) takes part with zeros, so every rank ends with the same gradient;
    one that got none on any rank keeps ``grad=None`` (the optimizer then leaves it alone, as
    without distribution). Gradients are flattened into buckets of about 64 MB per dtype."""
    if not active():
        return
    params = [p for p in params if p.requires_grad or p.grad is not None]
    if not params:
        return
    comm = _comm_device(device)
    has = torch.tensor([float(p.grad is not None) for p in params], device=comm)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    world = dist.get_world_size()
    buckets, size, key = [], 0, None
    for p, h in zip(params, has.tolist()):
        if h == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        k = (p.grad.dtype, p.grad.device)
        if not buckets or k != key or size >= BUCKET_BYTES:
            buckets.append([])
            size, key = 0, k
        buckets[-1].append(p.grad)
        size += p.grad.numel() * p.grad.element_size()
    for grads in buckets:
        flat = torch.cat([g.reshape(-1) for g in grads]).to(comm)
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g).to(g.device))   # copy_ keeps g's memory format
            offset += n


def broadcast_module(net, src=0, device='cpu'):
    """Copy ``net``'s parameters and buffers from rank ``src`` to every rank (initial weights)."""
    if not active():
        return
    comm = _comm_device(device)
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            buf = t.detach().to(comm).contiguous()
            dist.broadcast(buf, src)
            t.copy_(buf.to(t.device))


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
