"""The contract every model follows (CycleGAN codebase style).

A model lists ``loss_names``, ``visual_names`` and ``model_names``; the visualizer, checkpointing
and test.py are generic over them. Subclasses implement ``set_input``, ``forward`` and
``optimize_parameters`` and may add options through ``modify_commandline_options``.

Optimizers are made with :meth:`BaseModel.make_optimizer`, which returns a
:class:`util.train_step.OptimWrapper`: mixed precision, the non-finite-loss policy, the step and
the multi-process invariants live there, not in the model. An update reads::

    with self.opt_G.context():
        losses = self.generator_losses()      # name -> loss tensor
    self.opt_G.update(losses)

Distribution and speed options (DDP, SyncBatchNorm, ``--channels_last``, ``--compile``) are
applied by :meth:`setup` through :func:`util.train_step.prepare_network`; the full training
state (optimizers, schedulers, pools, RNG, data position) is :class:`util.training_state.TrainingState`.
"""
import os
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from contextlib import contextmanager

import torch

from models import networks
from util import checkpoint, distributed, train_step
from util.checkpoint import load_weights_file
from util.distributed import unwrap
from util.errors import UserInputError
from util.train_step import NonFiniteLoss, OptimWrapper

__all__ = ['BaseModel', 'NonFiniteLoss', 'load_weights_file', 'unwrap']


class BaseModel(ABC):
    """Base class of models. Networks are attributes ``net<Name>`` for each name in ``model_names``;
    losses ``loss_<name>``; visuals attributes named in ``visual_names``; optimizers
    (:class:`OptimWrapper`) in ``optimizers``, one scheduler each in ``schedulers``."""

    visual_value_range = (-1.0, 1.0)    # range of the visual tensors (matting models: (0, 1))

    def __init__(self, opt):
        self.opt = opt
        self.isTrain = opt.isTrain
        self.gpu_ids = opt.gpu_ids
        self.device = torch.device(opt.device)
        self.save_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.loss_names, self.model_names, self.visual_names = [], [], []
        self.optimizers, self.schedulers, self.image_paths = [], [], []
        self.image_pools = {}     # name -> ImagePool; saved with the training state
        self.metric = 0           # for the plateau scheduler
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = not opt.deterministic

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
        """One training step: losses, then ``OptimWrapper.update`` for each optimizer."""

    def compute_visuals(self):
        """Extra visuals for the display (optional)."""

    def report_options(self):
        """Extra header lines (name -> text) of test.py's page."""
        return {}

    def test_tables(self):
        """[(title, rows)] tables for test.py's page (e.g. matting metrics); rows are dicts."""
        return []

    # ------------------------------------------------------------------ setup
    def setup(self, opt):
        """Schedulers (training), load networks (testing or ``--continue_train``), then each network
        through :func:`util.train_step.prepare_network` (DDP under torchrun, ``--channels_last``,
        ``--compile``); then print the networks."""
        if self.isTrain:
            # a plain torch optimizer (a model that steps it itself) is wrapped for its state and schedule
            self.optimizers = [o if isinstance(o, OptimWrapper) else
                               OptimWrapper(o, opt.amp, opt.nan_policy, self.device) for o in self.optimizers]
            self.schedulers = [networks.get_scheduler(o.optimizer, opt) for o in self.optimizers]
        if not self.isTrain or opt.continue_train:
            self.load_networks(f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch)
        for name, net in self.nets():
            setattr(self, 'net' + name, train_step.prepare_network(net, opt, self.device, self.isTrain))
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

    @contextmanager
    def inference(self):
        """No gradients, with ``--amp``'s precision: where test-time forwards run (training steps run
        in ``OptimWrapper.context``)."""
        with torch.no_grad(), train_step.autocast(self.opt.amp, self.device):
            yield

    def test(self):
        """Forward without gradients, for test.py."""
        with self.inference():
            self.forward()
        self.compute_visuals()

    def get_image_paths(self):
        return self.image_paths

    def make_optimizer(self, *nets, lr=None, groups=None):
        """An :class:`OptimWrapper` around Adam over the parameters of ``nets`` (``--lr`` unless
        ``lr`` is given, ``--beta1``, ``--beta2``), with ``--amp`` and ``--nan_policy``.
        ``groups``: ``[(module, lr), ...]`` instead of ``nets``, one parameter group per module with
        its own learning rate (schedulers scale each group from its own rate)."""
        if groups is not None:
            params = [{'params': list(module.parameters()), 'lr': group_lr} for module, group_lr in groups]
        else:
            params = [p for net in nets for p in net.parameters()]
        adam = torch.optim.Adam(params, lr=self.opt.lr if lr is None else lr, betas=(self.opt.beta1, self.opt.beta2))
        return OptimWrapper(adam, self.opt.amp, self.opt.nan_policy, self.device)

    @property
    def skipped_steps(self):
        """Optimizer steps skipped on non-finite losses so far (``--nan_policy skip``)."""
        return sum(o.skipped for o in self.optimizers)

    def update_learning_rate(self):
        """Step every scheduler once (per epoch); returns the first optimizer's new learning rate."""
        with warnings.catch_warnings():
            # stepped at each epoch's end, after the optimizers; torch warns only when no optimizer
            # step ran in this process (a resumed epoch with no batch left, or fp16 overflows so far)
            warnings.filterwarnings('ignore', message=r'Detected call of `lr_scheduler\.step\(\)` before')
            for scheduler in self.schedulers:
                scheduler.step(self.metric) if self.opt.lr_policy == 'plateau' else scheduler.step()
        return self.optimizers[0].param_groups[0]['lr'] if self.optimizers else 0.0

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

    def network_states(self):
        """name -> CPU state dict, unwrapped from any parallel or compiled wrapper."""
        return {name: {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
                for name, net in self.nets()}

    def save_networks(self, epoch):
        """Write ``<save_dir>/<epoch>_net_<name>.pth``: CPU state dicts, unwrapped from any parallel
        or compiled wrapper, written atomically."""
        checkpoint.save_group([(state, self.network_path(epoch, name))
                               for name, state in self.network_states().items()])

    def convert_state_dict(self, name, state_dict, net):
        """Hook: convert a foreign checkpoint layout (e.g. the official InstaGAN one) to ours."""
        return state_dict

    def weights_files(self):
        """name -> file from test.py's ``--weights``: ``PATH`` for the model's one network, or
        ``NAME=PATH[,NAME=PATH...]`` (names of ``model_names``). Empty without the option (training)."""
        value = getattr(self.opt, 'weights', None)   # a test option: training has none
        if not value:
            return {}
        parts = [p.partition('=') for p in value.split(',')]
        if all(sep and name in self.model_names for name, sep, _ in parts):
            return {name: path for name, _, path in parts}
        if len(self.model_names) != 1:
            raise UserInputError(f'--weights {value}: this model loads {", ".join(self.model_names)}; say which '
                                 f'with --weights NAME=PATH[,NAME=PATH] (e.g. {self.model_names[0]}={value})')
        return {self.model_names[0]: value}

    def load_networks(self, epoch):
        """Load ``<epoch>_net_<name>.pth`` (or the file ``--weights`` names) into every network."""
        files = self.weights_files()
        for name, net in self.nets():
            path = files.get(name, self.network_path(epoch, name))
            if name not in files and not os.path.isfile(path):
                if not self.isTrain and name.startswith('D'):
                    continue
                raise UserInputError(f'checkpoint not found: {path}. Train first, or check --name, '
                                     f'--checkpoints_dir and --epoch.')
            self.load_network_file(name, path)

    def load_network_file(self, name, path):
        """Load one weights file (:func:`util.checkpoint.load_weights_file`: ours or a wrapped training
        checkpoint) into ``net<name>`` through :meth:`convert_state_dict`; UserInputError when the keys
        or shapes do not fit."""
        net = unwrap(getattr(self, 'net' + name))
        state = load_weights_file(path, map_location=self.device)
        state = self.convert_state_dict(name, state, net)
        checkpoint.load_into(net, state, path, f'net{name}')

    def print_networks(self, verbose=False):
        """Print parameter counts (and the architectures when ``verbose``)."""
        if not distributed.is_main(self.opt):
            return
        print('---------- Networks initialized -------------')
        for name, net in self.nets():
            if verbose:
                print(net)
            print(f'[Network {name}] Total number of parameters : {networks.count_parameters(net) / 1e6:.3f} M')
        print('-----------------------------------------------')


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value

