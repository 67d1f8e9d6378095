"""torchrun integration: process group, rank helpers, seeding.

``torchrun --nproc_per_node=N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we use NCCL on
GPUs and gloo on CPU. Only rank 0 prints, plots, writes HTML and checkpoints.
"""
import os
import random

import numpy as np
import torch
import torch.distributed as dist


def init_distributed(opt):
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pin each rank's GPU."""
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


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and torch; with ``deterministic`` also ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
