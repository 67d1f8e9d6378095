"""The contract every model follows (CycleGAN codebase style).

A model lists ``loss_names``, ``visual_names`` and ``model_names``; the visualizer, checkpointing
and test.py are generic over them. Subclasses implement ``set_input``, ``forward`` and
``optimize_parameters`` and may add options through ``modify_commandline_options``.

Training steps go through two helpers, which give every model mixed precision, non-finite-loss
handling and multi-process training without model code of its own::

    with self.autocast():                     # --amp bf16|fp16 (no-op otherwise)
        loss = ...
    self.backward(loss, self.optimizer_G)     # scaled by the optimizer's GradScaler under fp16
    self.step(self.optimizer_G, {'G_A': self.loss_G_A, ...})   # check (on every rank), step

``step`` refuses to step on a non-finite loss (``--nan_policy stop`` raises :class:`NonFiniteLoss`
before the update; ``skip`` leaves that optimizer's weights and state untouched and counts the
skip; under torchrun the ranks decide together) and steps through the GradScaler. A model that
calls ``optimizer.step()`` itself gets no loss scaling and no skipping.

Under torchrun every training network is wrapped in ``DistributedDataParallel``, which averages
the gradients during ``backward``. Its contract, which the models here keep: in each step, every
rank makes the same backward calls through the same networks (a rank with nothing to learn from
in a step still runs it, with its loss multiplied by 0: see InstaGAN's passes), and every
parameter of a network that a backward reaches gets a gradient (the set networks run their mask
branch on an empty batch when there is no instance). A network may be called several times
before one backward; a discriminator frozen with ``set_requires_grad(False)`` in the generator's
step takes no part in that step's reduction.
"""
import hashlib
import os
import random
import types
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from contextlib import nullcontext

import numpy as np
import torch

from models import networks
from util import checkpoint, distributed
from util.errors import UserInputError


class NonFiniteLoss(RuntimeError):
    """A loss is NaN or infinite; raised before the optimizer step that would have used it.

    ``name``: the loss's name (or None when it was on another rank); ``value``: its value."""

    def __init__(self, name, value, message=None):
        self.name, self.value = name, value
        super().__init__(message or (f'loss {name} is {value}' if name else 'a loss is not finite on another rank'))


class BaseModel(ABC):
    """Base class of models. Networks are attributes ``net<Name>`` for each name in ``model_names``;
    losses ``loss_<name>``; visuals attributes named in ``visual_names``."""

    def __init__(self, opt):
        self.opt = opt
        self.isTrain = opt.isTrain
        self.gpu_ids = opt.gpu_ids
        self.device = torch.device(getattr(opt, 'device', 'cpu'))
        self.save_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.loss_names, self.model_names, self.visual_names = [], [], []
        self.optimizers, self.schedulers, self.image_paths = [], [], []
        self.scalers = []         # one torch.amp.GradScaler per optimizer (enabled under --amp fp16)
        self.image_pools = {}     # name -> ImagePool; saved with the training state
        self.metric = 0           # for the plateau scheduler
        self.skipped_steps = 0    # optimizer steps skipped on non-finite losses (--nan_policy skip)
        self.guarded_steps = 0    # optimizer steps taken through self.step
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = not getattr(opt, 'deterministic', False)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add model-specific options or change defaults; return the parser."""
        return parser

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def set_input(self, input):
        """Unpack a batch from the data loader (and move it to the device)."""

    @abstractmethod
    def forward(self):
        """Run the generators; called by ``optimize_parameters`` and ``test``."""

    @abstractmethod
    def optimize_parameters(self):
        """One training step: losses, gradients, optimizer steps."""

    def compute_visuals(self):
        """Extra visuals for the display (optional)."""

    # ------------------------------------------------------------------ setup
    def setup(self, opt):
        """Schedulers (training), load networks (testing or ``--continue_train``), then the
        runtime: under torchrun SyncBatchNorm (``--norm sync_batch``) and DistributedDataParallel
        (rank 0's weights on every rank, gradients averaged in backward); ``--channels_last``,
        ``--compile``, and one GradScaler per optimizer (``--amp fp16``). Then print the networks."""
        if self.isTrain:
            self.schedulers = [networks.get_scheduler(optimizer, opt) for optimizer in self.optimizers]
        if not self.isTrain or getattr(opt, 'continue_train', False):
            load_suffix = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
            self.load_networks(load_suffix)
        self.setup_runtime(opt)
        self.print_networks(opt.verbose)

    def setup_runtime(self, opt):
        """Distribution and speed options (see :meth:`setup`); call once, after the optimizers exist."""
        multi = distributed.active() and self.isTrain
        for name, net in self.nets():
            if multi and opt.norm == 'sync_batch':
                if self.device.type != 'cuda':
                    raise UserInputError('--norm sync_batch synchronises batch statistics between GPUs (NCCL); '
                                         'on CPU use --norm batch (statistics per process) or --norm instance.')
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)   # same Parameter objects
            if getattr(opt, 'channels_last', False):
                net = net.to(memory_format=torch.channels_last)              # params changed in place
            if multi:
                net = distributed.wrap_ddp(net, self.device)
            if getattr(opt, 'compile', False):
                net = torch.compile(net, backend=getattr(opt, 'compile_backend', 'inductor'))
            setattr(self, 'net' + name, net)
        if self.isTrain:
            fp16 = getattr(opt, 'amp', 'none') == 'fp16'
            self.scalers = [torch.amp.GradScaler(self.device.type, enabled=fp16) for _ in self.optimizers]

    def nets(self):
        """(name, network) pairs for ``model_names``."""
        return [(name, getattr(self, 'net' + name)) for name in self.model_names]

    def eval(self):
        for _, net in self.nets():
            net.eval()

    def train(self):
        for _, net in self.nets():
            net.train()

    def autocast(self):
        """Autocast context for ``--amp bf16|fp16`` (no-op otherwise)."""
        amp = getattr(self.opt, 'amp', 'none')
        if amp in (None, 'none'):
            return nullcontext()
        dtype = torch.bfloat16 if amp == 'bf16' else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def test(self):
        """Forward without gradients, for test.py."""
        with torch.no_grad():
            with self.autocast():
                self.forward()
            self.compute_visuals()

    def get_image_paths(self):
        return self.image_paths

    def update_learning_rate(self):
        """Step every scheduler once (per epoch)."""
        old_lr = self.optimizers[0].param_groups[0]['lr']
        with warnings.catch_warnings():
            # stepped at each epoch's end, after the optimizers, by construction; the warning only
            # appears when no optimizer step ran in this process (a resumed epoch with no batch
            # left, or GradScaler skipping every step so far)
            warnings.filterwarnings('ignore', message=r'Detected call of `lr_scheduler\.step\(\)` before')
            for scheduler in self.schedulers:
                if self.opt.lr_policy == 'plateau':
                    scheduler.step(self.metric)
                else:
                    scheduler.step()
        lr = self.optimizers[0].param_groups[0]['lr']
        if self.opt.verbose:
            print(f'learning rate {old_lr:.7f} -> {lr:.7f}')
        return lr

    def get_current_visuals(self):
        """OrderedDict name -> tensor for ``visual_names``."""
        return OrderedDict((name, getattr(self, name)) for name in self.visual_names
                           if isinstance(getattr(self, name, None), torch.Tensor))

    def get_current_losses(self):
        """OrderedDict name -> float for ``loss_names``."""
        return OrderedDict((name, float(_detached(getattr(self, 'loss_' + name)))) for name in self.loss_names
                           if hasattr(self, 'loss_' + name))

    def make_adam(self, *nets):
        """Adam over the parameters of ``nets`` with ``--lr``, ``--beta1``, ``--beta2``."""
        params = [p for net in nets for p in net.parameters()]
        return torch.optim.Adam(params, lr=self.opt.lr, betas=(self.opt.beta1, self.opt.beta2))

    def set_requires_grad(self, nets, requires_grad=False):
        if not isinstance(nets, (list, tuple)):
            nets = [nets]
        for net in nets:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad

    # ------------------------------------------------------------------ training steps
    def scaler_for(self, optimizer):
        """The GradScaler of ``optimizer`` (None when there is none, e.g. before setup)."""
        for o, s in zip(self.optimizers, self.scalers):
            if o is optimizer:
                return s
        return None

    def backward(self, loss, optimizer=None):
        """``loss.backward()``, the loss scaled by ``optimizer``'s GradScaler under ``--amp fp16``.

        A loss that needs no gradient (a constant: no sample contributed) is skipped. Under
        torchrun that would leave the other ranks waiting in DistributedDataParallel's all-reduce,
        so it is an error there: a rank without data for a step backpropagates ``0 * loss``."""
        if not (torch.is_tensor(loss) and loss.requires_grad):
            if distributed.active():
                raise RuntimeError('under torchrun every rank must backpropagate through the same networks '
                                   'in a step (DistributedDataParallel all-reduces in backward); a rank '
                                   'without data for this step should backpropagate 0 * its loss')
            return
        scaler = self.scaler_for(optimizer) if optimizer is not None else None
        if scaler is not None and scaler.is_enabled():
            loss = scaler.scale(loss)
        loss.backward()

    def step(self, optimizer, losses=None):
        """Take ``optimizer``'s step unless a loss it was computed from is not finite.

        ``losses``: what the gradients came from, to check first: a dict name -> tensor or float,
        a list of loss names (attributes ``loss_<name>``), one tensor, or None. Under torchrun
        the decision is taken together (a bad loss on one rank skips or stops every rank).
        Non-finite loss: ``--nan_policy stop`` (default) raises :class:`NonFiniteLoss` before any
        update; ``skip`` clears the gradients, leaves the weights and the optimizer state
        untouched, counts ``self.skipped_steps`` and returns False. Under ``--amp fp16`` the step
        goes through the optimizer's GradScaler (which itself skips steps whose scaled gradients
        overflowed). The gradients are already averaged over the ranks (DistributedDataParallel).
        After the step the gradients are freed (set to None). Returns True when stepped."""
        self.guarded_steps += 1
        bad = _first_nonfinite(self._named_losses(losses))
        if distributed.any_rank(bad is not None, self.device):
            optimizer.zero_grad(set_to_none=True)
            if getattr(self.opt, 'nan_policy', 'stop') != 'skip':
                raise NonFiniteLoss(*(bad or (None, None)))
            self.skipped_steps += 1
            return False
        scaler = self.scaler_for(optimizer)
        if scaler is not None and scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        # The gradients are spent: free them now rather than at the next zero_grad, so that they are
        # not held through the next forward (InstaGAN's next pass would otherwise peak higher by the
        # size of G's and D's gradients, which breaks the flat memory of sequential translation).
        optimizer.zero_grad(set_to_none=True)
        return True

    def any_rank(self, flag):
        """True when ``flag`` is true on any rank (models use it to take a step on every rank
        together, e.g. when only some ranks have data for it); ``flag`` itself without torchrun.
        ``flag`` may be a list of flags: a list of answers (one collective)."""
        return distributed.any_rank(flag, self.device)

    def _named_losses(self, losses):
        if losses is None:
            return {}
        if torch.is_tensor(losses):
            return {'total': losses}
        if isinstance(losses, dict):
            return losses
        return {name: getattr(self, 'loss_' + name) for name in losses if hasattr(self, 'loss_' + name)}

    # ------------------------------------------------------------------ checkpoints
    def network_path(self, epoch, name):
        return os.path.join(self.save_dir, f'{epoch}_net_{name}.pth')

    def train_state_path(self, label):
        return os.path.join(self.save_dir, f'{label}_train_state.pth')

    def network_states(self):
        """name -> CPU state dict, unwrapped from any parallel or compiled wrapper."""
        return {name: {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
                for name, net in self.nets()}

    def save_networks(self, epoch):
        """Write ``<save_dir>/<epoch>_net_<name>.pth``: CPU state dicts, unwrapped from any parallel
        or compiled wrapper, written atomically."""
        checkpoint.save_group([(state, self.network_path(epoch, name))
                               for name, state in self.network_states().items()])

    def save_checkpoint(self, labels, progress):
        """Write the networks and the training state under every label of ``labels`` (e.g.
        ``['latest', 5]``) as one checkpoint; call it on EVERY rank (collective), rank 0 writes.

        Under torchrun, BatchNorm running statistics are first averaged over the ranks, the
        weights are checked to be equal on every rank, and every rank's RNG state and image
        pools are gathered so that a resumed run continues each rank exactly. ``progress``: a
        dict with at least ``epoch`` and ``total_iters`` (stored in the training state and
        returned by :meth:`load_training_state`). Returns nothing."""
        for _, net in self.nets():
            distributed.average_batchnorm_stats(unwrap(net), self.device)
        diverged = distributed.check_in_sync(
            [(f'net{n}.{k}', p) for n, net in self.nets() for k, p in unwrap(net).named_parameters()], self.device)
        if diverged:
            raise RuntimeError(f'the ranks hold different weights ({", ".join(diverged[:4])}...): a training step '
                               'updated them without averaged gradients; call the networks set up by '
                               'BaseModel.setup (DistributedDataParallel) in every step on every rank.')
        per_rank = distributed.gather_to_main(self.rank_state())
        if not distributed.is_main(self.opt):
            return
        blobs = {name: checkpoint.serialize(state) for name, state in self.network_states().items()}
        digests = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
        state = self.training_state(progress, per_rank=per_rank, digests=digests)
        for label in labels:
            checkpoint.save_group([(b, self.network_path(label, name)) for name, b in blobs.items()]
                                  + [(state, self.train_state_path(label))])

    def rank_state(self):
        """What differs between ranks: RNG states and image pools (CPU tensors)."""
        return {'rng': rng_state(), 'image_pools': {k: p.state_dict() for k, p in self.image_pools.items()}}

    def training_state(self, progress, per_rank=None, digests=None):
        """Everything beyond the weights that exact resumption needs: ``progress`` (epoch, counters),
        optimizers, schedulers, GradScalers, image pools and RNG states (rank 0's, and in
        ``ranks`` the others'), and the SHA-256 of each network file it goes with."""
        per_rank = per_rank or [self.rank_state()]
        return {
            **progress,
            'world_size': len(per_rank),
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'scalers': [s.state_dict() for s in self.scalers],
            'image_pools': per_rank[0]['image_pools'],
            'rng': per_rank[0]['rng'],
            'ranks': per_rank[1:],
            'nets': digests or {},
        }

    def save_training_state(self, label, epoch, total_iters):
        """Write ``<label>_train_state.pth`` alone (single process; see :meth:`save_checkpoint`)."""
        checkpoint.save(self.training_state({'epoch': epoch, 'total_iters': total_iters, 'epoch_done': True}),
                        self.train_state_path(label))

    def convert_state_dict(self, name, state_dict, net):
        """Hook: convert a foreign checkpoint layout (e.g. the official InstaGAN one) to ours."""
        return state_dict

    def load_networks(self, epoch):
        """Load ``<epoch>_net_<name>.pth`` into every network (``weights_only`` loads)."""
        for name, net in self.nets():
            path = self.network_path(epoch, name)
            if not os.path.isfile(path):
                if not self.isTrain and name.startswith('D'):
                    continue
                raise UserInputError(f'checkpoint not found: {path}. Train first, or check --name, '
                                     f'--checkpoints_dir and --epoch.')
            net = unwrap(net)
            state = checkpoint.load(path, map_location=self.device)
            if hasattr(state, '_metadata'):
                del state._metadata
            state = self.convert_state_dict(name, dict(state), net)
            # old InstanceNorm checkpoints (pytorch < 0.4) stored running stats
            for key in [k for k in state if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]:
                if key not in net.state_dict():
                    del state[key]
            missing, unexpected = _key_mismatch(net, state)
            if missing or unexpected:
                raise UserInputError(
                    f'{path} does not fit net{name} ({type(net).__name__}): missing keys {missing[:5]}'
                    f'{"..." if len(missing) > 5 else ""}, unexpected keys {unexpected[:5]}'
                    f'{"..." if len(unexpected) > 5 else ""}. Check --model, --netG/--netD, --ngf/--ndf, '
                    '--norm and --n_layers_D against the run that wrote it.')
            try:
                net.load_state_dict(state)
            except RuntimeError as e:
                raise UserInputError(f'{path} does not fit net{name}: {str(e).splitlines()[-1].strip()}. '
                                     'Check --ngf/--ndf, --input_nc/--output_nc and --norm.') from None

    def load_training_state(self, label):
        """Restore what :meth:`save_checkpoint` / :meth:`save_training_state` wrote; returns its
        progress dict (``epoch``, ``total_iters``, ...) or None when the file does not exist (a
        checkpoint with networks only). Network files that do not match the digests recorded
        in the state (a save interrupted between two files) raise UserInputError. This rank's
        RNG state and image pools are restored when the state has them (same world size);
        the learning-rate schedule keeps the current options (``--n_epochs`` ...)."""
        path = self.train_state_path(label)
        if not os.path.isfile(path):
            return None
        state = checkpoint.load(path, map_location='cpu')
        for name, digest in state.get('nets', {}).items():
            net_path = self.network_path(label, name)
            if os.path.isfile(net_path) and checkpoint.file_digest(net_path) != digest:
                raise UserInputError(
                    f'{net_path} is not the file that {path} was saved with (a save was interrupted between '
                    f'files, or the file was replaced). Resume from another checkpoint (--epoch N or '
                    f'--load_iter N), or delete {path} to resume from the weights alone (fresh optimizers).')
        for o, s in zip(self.optimizers, state['optimizers']):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state['schedulers']):
            objects = [f for f in getattr(sch, 'lr_lambdas', []) if not _is_function(f)]
            current = [dict(vars(f)) for f in objects]      # e.g. LinearDecay(n_epochs, ...) of this run
            sch.load_state_dict(s)
            for f, d in zip(objects, current):
                f.__dict__.update(d)
        for sc, s in zip(self.scalers, state.get('scalers', [])):
            if s:
                sc.load_state_dict(s)
        rank = getattr(self.opt, 'rank', 0)
        mine = None
        if rank == 0:
            mine = {'rng': state['rng'], 'image_pools': state['image_pools']}
        elif state.get('world_size', 1) == getattr(self.opt, 'world_size', 1) and len(state.get('ranks', [])) >= rank:
            mine = state['ranks'][rank - 1]
        if mine is not None:
            for k, s in mine['image_pools'].items():
                if k in self.image_pools:
                    self.image_pools[k].load_state_dict(s, self.device)
            set_rng_state(mine['rng'])
        progress = {k: v for k, v in state.items()
                    if k not in ('optimizers', 'schedulers', 'scalers', 'image_pools', 'rng', 'ranks', 'nets')}
        progress.setdefault('epoch_done', True)
        return progress

    def print_networks(self, verbose=False):
        """Print parameter counts (and the architectures when ``verbose``)."""
        if getattr(self.opt, 'rank', 0) != 0:
            return
        print('---------- Networks initialized -------------')
        for name, net in self.nets():
            if verbose:
                print(net)
            print(f'[Network {name}] Total number of parameters : {networks.count_parameters(net) / 1e6:.3f} M')
        print('-----------------------------------------------')


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


def _is_function(f):
    return isinstance(f, types.FunctionType)


def _first_nonfinite(named):
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


def unwrap(net):
    """The plain module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(net, '_orig_mod'):
            net = net._orig_mod
        elif isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            net = net.module
        else:
            return net


def _key_mismatch(net, state):
    own = set(net.state_dict().keys())
    given = set(state.keys())
    return sorted(own - given), sorted(given - own)


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
