"""The training-step layer: everything about an optimizer step that is not the model's method.

One :class:`OptimWrapper` per optimizer (in the spirit of mmengine's ``OptimWrapper``) owns mixed
precision (``--amp bf16|fp16``: autocast, and a GradScaler under fp16), the non-finite-loss policy
(``--nan_policy stop|skip``), the step itself, freeing the gradients after it, and the
multi-process invariants. A model's update reads::

    with self.opt_G.context():                # autocast under --amp (no-op otherwise)
        losses = self.generator_losses()      # name -> tensor
    self.opt_G.update(losses)                 # backward, check, step, free the gradients

:meth:`OptimWrapper.update` backpropagates the sum of the losses (scaled by the GradScaler under
fp16), refuses to step when one of them is NaN or infinite (``stop``: raises
:class:`NonFiniteLoss` before any weight changes; ``skip``: drops the gradients, leaves weights and
optimizer state untouched and counts the skip), then steps and frees the gradients (set to None:
they would otherwise stay alive through the next forward). Under torchrun the ranks decide
together (a bad loss on one rank skips or stops every rank).

Multi-process training wraps every training network in ``DistributedDataParallel``
(:func:`prepare_network`), which averages the gradients during backward. Its contract, which the
models keep: in each step every rank makes the same backward calls through the same networks.
A rank with nothing to learn from in a step (InstaGAN: no instance in a pass here, some on another
rank) still runs it on a *stand-in* sample with its loss multiplied by 0: :func:`participation`
decides that for a model, and :class:`Participation` weighs the losses.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from util import distributed
from util.errors import UserInputError


class NonFiniteLoss(RuntimeError):
    """A loss is NaN or infinite.

    ``name``: the loss's name (None when it was on another rank); ``value``: its value;
    ``before_step``: True when raised before the optimizer step that would have used it (the
    weights are untouched), False when found after a model stepped its optimizer itself."""

    def __init__(self, name, value, message=None, before_step=True):
        self.name, self.value, self.before_step = name, value, before_step
        super().__init__(message or (f'loss {name} is {value}' if name else 'a loss is not finite on another rank'))


def autocast(amp, device):
    """Autocast context for ``--amp bf16|fp16`` on ``device``; a no-op for ``none``."""
    if amp == 'none':
        return nullcontext()
    dtype = torch.bfloat16 if amp == 'bf16' else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class OptimWrapper:
    """One optimizer with its mixed precision, non-finite policy and step (see the module docstring).

    ``optimizer``: a torch optimizer; ``amp``: 'none' | 'bf16' | 'fp16'; ``nan_policy``: 'stop' |
    'skip'. Attributes: ``scaler`` (a ``torch.amp.GradScaler``, enabled under fp16 only),
    ``steps`` (updates asked for), ``skipped`` (updates skipped on a non-finite loss)."""

    def __init__(self, optimizer, amp, nan_policy, device):
        self.optimizer = optimizer
        self.amp, self.nan_policy = amp, nan_policy
        self.device = torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == 'fp16')
        self.steps = self.skipped = 0

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def context(self):
        """Where the forward pass and the losses of this optimizer's update run (autocast)."""
        return autocast(self.amp, self.device)

    def update(self, losses):
        """Backward, check, step, free the gradients; returns True when the step was taken.

        ``losses``: a dict name -> loss tensor (their sum is backpropagated; the names go into a
        :class:`NonFiniteLoss` message), or one tensor. A sum that needs no gradient (no sample
        contributed) is not backpropagated; under torchrun that is an error, since the other ranks
        would wait in DistributedDataParallel's all-reduce (use a stand-in, :func:`participation`)."""
        named = losses if isinstance(losses, dict) else {'total': losses}
        self.steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        total = sum(named.values())
        if torch.is_tensor(total) and total.requires_grad:
            self.scaler.scale(total).backward()
        elif distributed.active():
            raise RuntimeError('under torchrun every rank must backpropagate through the same networks in a '
                               'step (DistributedDataParallel all-reduces in backward); a rank without data '
                               'for this step should backpropagate 0 * its loss (util.train_step.participation)')
        bad = first_nonfinite(named)
        if distributed.any_rank(bad is not None, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            if self.nan_policy != 'skip':
                raise NonFiniteLoss(*(bad or (None, None)))
            self.skipped += 1
            return False
        self.scaler.step(self.optimizer)     # a plain optimizer.step() when the scaler is disabled
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return True


def first_nonfinite(named):
    """(name, value) of the first non-finite loss in ``named`` (name -> tensor, number or None),
    else None. One device synchronisation when all are finite."""
    values = {k: (v.detach().float().reshape(-1) if torch.is_tensor(v) else torch.tensor([float(v)]))
              for k, v in named.items() if v is not None}
    if not values:
        return None
    device = next(iter(values.values())).device
    if bool(torch.cat([v.to(device) for v in values.values()]).isfinite().all()):
        return None
    for name, v in values.items():
        bad = v[~v.isfinite()]
        if len(bad):
            return name, float(bad[0])
    return None


# ---------------------------------------------------------------------------- ranks in step
@dataclass
class Participation:
    """How this rank takes part in one side of a step.

    ``index``: (b,) the samples it trains on (sample 0 for a stand-in); ``runs``: the side runs on
    every rank; ``stand_in``: this rank has no sample for it and computes a zero-weight loss on
    ``index`` so that its backward calls match the other ranks'."""
    index: torch.Tensor
    runs: bool
    stand_in: bool = False

    @property
    def trains(self):
        """True when this rank's losses of the side count (it runs, and not as a stand-in)."""
        return self.runs and not self.stand_in

    def weigh(self, losses):
        """``losses`` (name -> tensor) as they are, or times 0 for a stand-in."""
        return {k: v * 0 for k, v in losses.items()} if self.stand_in else losses

    def kept(self, index_or_tensor):
        """``index_or_tensor`` for state updates: empty for a stand-in (it changes no state)."""
        return index_or_tensor[:0] if self.stand_in else index_or_tensor


def participation(indices, device, training=True):
    """One :class:`Participation` per side, from ``indices`` ((b_k,) long tensors of this rank's
    samples with data for side k). Without torchrun (or outside training) a side runs where it has
    samples. Under torchrun a side runs on every rank when any rank has samples for it, and a rank
    without any runs it as a stand-in on its sample 0 (one all-reduce for all sides)."""
    has = [len(i) > 0 for i in indices]
    if not (training and distributed.active()):
        return [Participation(i, h) for i, h in zip(indices, has)]
    runs = distributed.any_rank(has, device)
    out = []
    for i, h, r in zip(indices, has, runs):
        stand_in = r and not h
        out.append(Participation(i.new_zeros(1) if stand_in else i, r, stand_in))
    return out


# ---------------------------------------------------------------------------- networks
def prepare_network(net, opt, device, training):
    """``net`` ready to run: SyncBatchNorm under torchrun with ``--norm sync_batch``,
    ``--channels_last``, DistributedDataParallel under torchrun (rank 0's weights on every rank,
    gradients averaged in backward; training only), then ``--compile``. The parameters stay the
    same objects, so optimizers built before still hold them."""
    multi = distributed.active() and training
    if multi and opt.norm == 'sync_batch':
        if torch.device(device).type != 'cuda':
            raise UserInputError('--norm sync_batch synchronises batch statistics between GPUs (NCCL); '
                                 'on CPU use --norm batch (statistics per process) or --norm instance.')
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if opt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if multi:
        net = distributed.wrap_ddp(net, device)
    if opt.compile:
        net = torch.compile(net, backend=opt.compile_backend)
    return net


def optimize(model):
    """``model.optimize_parameters()``, then its reported losses (name -> float).

    The one non-finite path of training: a model that updates through its OptimWrappers has
    already stopped (``NonFiniteLoss`` before the step) or skipped; one that took its steps itself
    is checked here, after them, and stopped with ``NonFiniteLoss(before_step=False)`` (on every
    rank together) so that no checkpoint is written after a bad step."""
    steps = sum(o.steps for o in model.optimizers)
    model.optimize_parameters()
    losses = model.get_current_losses()
    if sum(o.steps for o in model.optimizers) == steps:
        bad = first_nonfinite(losses)
        if distributed.any_rank(bad is not None, model.device):
            raise NonFiniteLoss(*(bad or (None, None)), before_step=False)
    return losses
