"""The contract every model follows (CycleGAN codebase style).

A model lists ``loss_names``, ``visual_names`` and ``model_names``; the visualizer, checkpointing
and test.py are generic over them. Subclasses implement ``set_input``, ``forward`` and
``optimize_parameters`` and may add options through ``modify_commandline_options``.
"""
import os
import random
from abc import ABC, abstractmethod
from collections import OrderedDict
from contextlib import nullcontext

import numpy as np
import torch

from models import networks
from util import checkpoint
from util.errors import UserInputError


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
        self.image_pools = {}     # name -> ImagePool; saved with the training state
        self.metric = 0           # for the plateau scheduler
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
        """Schedulers (training), then load networks (testing or ``--continue_train``), then print."""
        if self.isTrain:
            self.schedulers = [networks.get_scheduler(optimizer, opt) for optimizer in self.optimizers]
        if not self.isTrain or getattr(opt, 'continue_train', False):
            load_suffix = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
            self.load_networks(load_suffix)
        self.print_networks(opt.verbose)

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

    def set_requires_grad(self, nets, requires_grad=False):
        if not isinstance(nets, (list, tuple)):
            nets = [nets]
        for net in nets:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad

    # ------------------------------------------------------------------ checkpoints
    def network_path(self, epoch, name):
        return os.path.join(self.save_dir, f'{epoch}_net_{name}.pth')

    def save_networks(self, epoch):
        """Write ``<save_dir>/<epoch>_net_<name>.pth``: CPU state dicts, unwrapped from any parallel
        or compiled wrapper, written atomically."""
        for name, net in self.nets():
            state = {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
            checkpoint.save(state, self.network_path(epoch, name))

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

    def training_state(self, epoch, total_iters):
        """Everything beyond the weights that exact resumption needs."""
        return {
            'epoch': epoch, 'total_iters': total_iters,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'scalers': [s.state_dict() for s in getattr(self, 'scalers', [])],
            'image_pools': {k: p.state_dict() for k, p in self.image_pools.items()},
            'rng': rng_state(),
        }

    def save_training_state(self, label, epoch, total_iters):
        """Write ``<label>_train_state.pth`` (optimizers, schedulers, pools, RNG, counters)."""
        checkpoint.save(self.training_state(epoch, total_iters),
                        os.path.join(self.save_dir, f'{label}_train_state.pth'))

    def load_training_state(self, label):
        """Restore what ``save_training_state`` wrote; returns (epoch, total_iters) or None when the
        file does not exist (e.g. a checkpoint with networks only)."""
        path = os.path.join(self.save_dir, f'{label}_train_state.pth')
        if not os.path.isfile(path):
            return None
        state = checkpoint.load(path, map_location='cpu')
        for o, s in zip(self.optimizers, state['optimizers']):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state['schedulers']):
            sch.load_state_dict(s)
        for sc, s in zip(getattr(self, 'scalers', []), state.get('scalers', [])):
            sc.load_state_dict(s)
        for k, s in state['image_pools'].items():
            if k in self.image_pools:
                self.image_pools[k].load_state_dict(s, self.device)
        set_rng_state(state['rng'])
        return state['epoch'], state['total_iters']

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
