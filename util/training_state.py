"""Full training state: what exact resumption needs beyond the weights, saved as one checkpoint.

A checkpoint under a label (``latest``, ``5``, ``iter_400``) is the files
``<label>_net_<name>.pth`` (one per network, written by the model's own naming) and
``<label>_train_state.pth``: progress (epoch, counters, data position), the optimizers with their
GradScalers, the schedulers, image pools, every rank's RNG states, the schedule options it was
trained with, and the SHA-256 of each network file it belongs with, all written atomically as one
group (``util/checkpoint.save_group``). Loads use ``weights_only=True``.

Resuming follows the options given now for the learning-rate schedule: a run trained with
``--n_epochs 1 --n_epochs_decay 0`` and resumed with ``--n_epochs 2`` trains epoch 2 at the full
rate (the CycleGAN codebase's ``--epoch_count`` semantics), and one line says the schedule changed.
"""
import hashlib
import os
import random
import types
import warnings

import numpy as np
import torch

from util import checkpoint, distributed
from util.distributed import unwrap
from util.errors import UserInputError

# the options that define the learning-rate schedule (compared with the checkpoint's on resume)
SCHEDULE_OPTIONS = ('lr', 'lr_policy', 'n_epochs', 'n_epochs_decay', 'lr_decay_iters', 'epoch_count')
_STATE_KEYS = ('optimizers', 'scalers', 'schedulers', 'image_pools', 'rng', 'ranks', 'nets', 'schedule')


class TrainingState:
    """Save and restore a model's full training state (see the module docstring).

    ``model``: a set-up :class:`models.base_model.BaseModel` (its networks, ``optimizers``
    (OptimWrappers), ``schedulers``, ``image_pools``, ``opt``)."""

    def __init__(self, model):
        self.model = model
        self.opt = model.opt

    def path(self, label):
        return os.path.join(self.model.save_dir, f'{label}_train_state.pth')

    # ------------------------------------------------------------------ save
    def rank_state(self):
        """What differs between ranks: RNG states and image pools (CPU tensors)."""
        return {'rng': rng_state(), 'image_pools': {k: p.state_dict() for k, p in self.model.image_pools.items()}}

    def state_dict(self, progress, per_rank=None, digests=None):
        """The training state as plain data: ``progress`` (a dict with ``epoch``, ``total_iters``,
        ...), optimizers and scalers, schedulers, image pools and RNG (rank 0's; the other ranks' in
        ``ranks``), the schedule options and the digests of the network files it goes with."""
        per_rank = per_rank or [self.rank_state()]
        m = self.model
        return {
            **progress,
            'world_size': len(per_rank),
            'optimizers': [o.optimizer.state_dict() for o in m.optimizers],
            'scalers': [o.scaler.state_dict() for o in m.optimizers],
            'schedulers': [s.state_dict() for s in m.schedulers],
            'image_pools': per_rank[0]['image_pools'],
            'rng': per_rank[0]['rng'],
            'ranks': per_rank[1:],
            'nets': digests or {},
            'schedule': {k: getattr(self.opt, k) for k in SCHEDULE_OPTIONS},
        }

    def save(self, labels, progress):
        """Write the networks and the training state under every label of ``labels`` (e.g.
        ``['latest', 5]``) as one checkpoint. Call it on EVERY rank (collective); rank 0 writes.

        Under torchrun, BatchNorm running statistics are first averaged over the ranks, the
        weights are checked to be equal on every rank, and every rank's RNG state and image pools
        are gathered so that a resumed run continues each rank exactly."""
        m = self.model
        for _, net in m.nets():
            distributed.average_batchnorm_stats(unwrap(net), m.device)
        diverged = distributed.check_in_sync(
            [(f'net{n}.{k}', p) for n, net in m.nets() for k, p in unwrap(net).named_parameters()], m.device)
        if diverged:
            raise RuntimeError(f'the ranks hold different weights ({", ".join(diverged[:4])}...): a training step '
                               'updated them without averaged gradients; call the networks set up by '
                               'BaseModel.setup (DistributedDataParallel) in every step on every rank.')
        per_rank = distributed.gather_to_main(self.rank_state())
        if not distributed.is_main(self.opt):
            return
        blobs = {name: checkpoint.serialize(state) for name, state in m.network_states().items()}
        digests = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
        state = self.state_dict(progress, per_rank=per_rank, digests=digests)
        for label in labels:
            checkpoint.save_group([(b, m.network_path(label, name)) for name, b in blobs.items()]
                                  + [(state, self.path(label))])

    # ------------------------------------------------------------------ load
    def load(self, label):
        """Restore what :meth:`save` wrote; returns its progress dict (``epoch``, ``total_iters``,
        ...) or None when there is no training state (a checkpoint of networks only).

        Network files that do not match the digests recorded in the state (a save interrupted
        between two files) raise UserInputError. This rank's RNG state and image pools are
        restored when the state has them (same world size). The learning-rate schedule follows
        the options given now (see the module docstring)."""
        path = self.path(label)
        if not os.path.isfile(path):
            return None
        m = self.model
        state = checkpoint.load(path, map_location='cpu')
        for name, digest in state.get('nets', {}).items():
            net_path = m.network_path(label, name)
            if os.path.isfile(net_path) and checkpoint.file_digest(net_path) != digest:
                raise UserInputError(
                    f'{net_path} is not the file that {path} was saved with (a save was interrupted between '
                    f'files, or the file was replaced). Resume from another checkpoint (--epoch N or '
                    f'--load_iter N), or delete {path} to resume from the weights alone (fresh optimizers).')
        for o, s, scaler in zip(m.optimizers, state['optimizers'], state.get('scalers') or [None] * len(m.optimizers)):
            o.optimizer.load_state_dict(s)
            if scaler:
                o.scaler.load_state_dict(scaler)
        for sch, s in zip(m.schedulers, state['schedulers']):
            restore_scheduler(sch, s)
        self.report_schedule_change(state.get('schedule'), state['epoch'])
        rank = distributed.rank()
        mine = None
        if rank == 0:
            mine = {'rng': state['rng'], 'image_pools': state['image_pools']}
        elif state.get('world_size', 1) == distributed.world_size() and len(state.get('ranks', [])) >= rank:
            mine = state['ranks'][rank - 1]
        if mine is not None:
            for k, s in mine['image_pools'].items():
                if k in m.image_pools:
                    m.image_pools[k].load_state_dict(s, m.device)
            set_rng_state(mine['rng'])
        progress = {k: v for k, v in state.items() if k not in _STATE_KEYS}
        progress.setdefault('epoch_done', True)
        return progress

    def report_schedule_change(self, saved, epoch):
        """One printed line when the schedule options differ from the checkpoint's."""
        if not saved or not distributed.is_main(self.opt):
            return
        changed = [f'--{k} {saved[k]} -> {getattr(self.opt, k)}' for k in SCHEDULE_OPTIONS
                   if k in saved and saved[k] != getattr(self.opt, k)]
        if changed:
            lr = self.model.optimizers[0].param_groups[0]['lr'] if self.model.optimizers else 0.0
            print(f'schedule options differ from the checkpoint\'s ({", ".join(changed)}): the learning rate '
                  f'follows the options given now ({lr:.7f} after epoch {epoch})', flush=True)


def restore_scheduler(scheduler, state):
    """Load ``state`` into ``scheduler`` keeping this run's schedule: the position (``last_epoch``)
    comes from the checkpoint, the base learning rates and the schedule's parameters (e.g.
    LinearDecay's ``n_epochs``) from the options given now, and every param group's learning rate
    is recomputed from them (ReduceLROnPlateau's rate is its state and is kept)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.load_state_dict(state)
        return
    objects = [f for f in getattr(scheduler, 'lr_lambdas', []) if not isinstance(f, types.FunctionType)]
    current = [dict(vars(f)) for f in objects]          # e.g. LinearDecay(n_epochs, ...) of this run
    base_lrs = list(scheduler.base_lrs)
    scheduler.load_state_dict(state)
    for f, d in zip(objects, current):
        f.__dict__.update(d)
    scheduler.base_lrs = base_lrs
    for group, base in zip(scheduler.optimizer.param_groups, base_lrs):
        group['initial_lr'] = base
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')          # get_lr outside step() warns; it is what we want here
        lrs = closed_form_lrs(scheduler)
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group['lr'] = lr
    scheduler._last_lr = list(lrs)


def closed_form_lrs(scheduler):
    """The learning rates ``scheduler`` gives at its ``last_epoch`` from its base rates."""
    sched = torch.optim.lr_scheduler
    e = scheduler.last_epoch
    if isinstance(scheduler, sched.LambdaLR):
        return [base * f(e) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    if hasattr(scheduler, '_get_closed_form_lr'):
        return scheduler._get_closed_form_lr()
    raise TypeError(f'cannot recompute the learning rate of {type(scheduler).__name__} on resume')


def rng_state():
    """Python, NumPy and torch (CPU and CUDA) RNG states, as weights_only-loadable objects."""
    np_state = np.random.get_state()
    return {
        'python': random.getstate(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state['numpy']
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state['torch'])
    if torch.cuda.is_available() and state['cuda']:
        torch.cuda.set_rng_state_all(state['cuda'])
