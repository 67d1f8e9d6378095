"""Options shared by training and testing.

Modern names follow the current CycleGAN codebase (``--load_size``, ``--crop_size``,
``--preprocess``, ``--n_epochs``...). The official InstaGAN names (``--loadSizeH``,
``--fineSizeW``, ``--resize_or_crop``, ``--niter``, ``--no_lsgan``...) are accepted as aliases so
the official README's commands run unchanged.
"""
import argparse
import os
import sys

import torch

import data
import models
from util.util import atomic_write


class _Alias(argparse.Action):
    """Store a legacy option's value into its modern destination."""

    def __init__(self, option_strings, dest, target, convert=None, **kw):
        super().__init__(option_strings, dest, **kw)
        self.target, self.convert = target, convert

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.target, self.convert(values) if self.convert else values)


class _StoreConst(argparse.Action):
    """A flag that stores a constant into another destination (e.g. --no_lsgan -> gan_mode)."""

    def __init__(self, option_strings, dest, target, value, **kw):
        super().__init__(option_strings, dest, nargs=0, **kw)
        self.target, self.value = target, value

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.target, self.value)


def saved_option(expr_dir, name, phase='train'):
    """The value (a string) that ``<expr_dir>/<phase>_opt.txt`` (written by ``print_options``)
    records for option ``name``; None when the file or the line is missing."""
    path = os.path.join(expr_dir, f'{phase}_opt.txt')
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        for line in f:
            key, sep, rest = line.partition(':')
            if sep and key.strip() == name:
                return rest.split('\t')[0].strip()
    return None


#: the parser default that lists the options a model keeps from training at test time (:func:`as_trained`)
AS_TRAINED = '_as_trained'


class _Unset:
    """What an option kept from training holds after parsing when the command line did not give it."""

    def __repr__(self):
        return '<as trained>'


_UNSET = _Unset()


def as_trained(parser, *names):
    """Test time: the options ``names`` (already on ``parser``), which must match training (InstaGAN's
    ``--blend``, a matting model's ``--guidance``), default to the value the training run recorded in
    ``train_opt.txt`` (:func:`saved_option`), else to their own defaults. A model or dataset calls
    this from its ``modify_commandline_options`` when not training (calls add up); an option given
    on the command line wins."""
    parser.set_defaults(**{AS_TRAINED: tuple(parser.get_default(AS_TRAINED) or ()) + names})
    for action in parser._actions:
        if action.dest in names:
            action.help += ' (testing: the value train_opt.txt records, if any)'


class BaseOptions:
    """Parse, complete and save options. ``parse()`` returns an ``argparse.Namespace``."""

    isTrain = False
    #: options that must be >= 1, and >= 0 (None is allowed); subclasses add their own
    positive = ('batch_size', 'load_size', 'crop_size', 'load_size_h', 'load_size_w', 'crop_size_h',
                'crop_size_w', 'max_dataset_size', 'display_winsize', 'input_nc', 'output_nc', 'ngf', 'ndf')
    non_negative = ('num_threads', 'load_iter', 'n_layers_D')

    def __init__(self, argv=None):
        self.argv = list(sys.argv[1:] if argv is None else argv)

    def initialize(self, parser):
        g = parser.add_argument_group('basic')
        g.add_argument('--dataroot', help='path to the data (layout depends on --dataset_mode). Default: the '
                                          "built-in set of the dataset mode's layout (datasets/builtin.py: shapes "
                                          'for the translation modes, matting_synth for matting), made on first use')
        g.add_argument('--name', default='experiment_name', help='run name: checkpoints and results go under it')
        g.add_argument('--gpu_ids', default=None,
                       help='e.g. 0 or 0,1; -1 for CPU. Default: the first GPU when one exists, else CPU')
        g.add_argument('--checkpoints_dir', default='./checkpoints', help='models are saved here')
        g.add_argument('--seed', type=int, default=None, help='random seed (python, numpy, torch); none by default')
        g = parser.add_argument_group('model')
        g.add_argument('--model', default='cycle_gan', help='model name: models/<model>_model.py')
        g.add_argument('--input_nc', type=int, default=3, help='input image channels')
        g.add_argument('--output_nc', type=int, default=3, help='output image channels')
        g.add_argument('--ngf', type=int, default=64, help='generator filters in the first conv layer')
        g.add_argument('--ndf', type=int, default=64, help='discriminator filters in the first conv layer')
        g.add_argument('--netD', default='basic', choices=['basic', 'n_layers', 'pixel', 'set'],
                       help='discriminator architecture (models/networks.py define_D)')
        g.add_argument('--netG', default='resnet_9blocks',
                       choices=['resnet_9blocks', 'resnet_6blocks', 'unet_128', 'unet_256', 'set', 'alphagan'],
                       help='generator architecture (models/networks.py define_G)')
        g.add_argument('--n_layers_D', type=int, default=3, help='layers of the n_layers / set discriminator')
        g.add_argument('--norm', default='instance', choices=['instance', 'batch', 'sync_batch', 'none'],
                       help='normalisation layer')
        g.add_argument('--init_type', default='normal', choices=['normal', 'xavier', 'kaiming', 'orthogonal'])
        g.add_argument('--init_gain', type=float, default=0.02, help='scale for normal, xavier and orthogonal')
        g.add_argument('--no_dropout', action='store_true', help='no dropout in the generator')
        g = parser.add_argument_group('data')
        g.add_argument('--dataset_mode', default='unaligned', help='dataset mode: data/<dataset_mode>_dataset.py')
        g.add_argument('--direction', default='AtoB', choices=['AtoB', 'BtoA'])
        g.add_argument('--serial_batches', action='store_true', help='take images in order, else shuffle')
        g.add_argument('--num_threads', type=int, default=4, help='data loader workers')
        g.add_argument('--batch_size', type=int, default=1)
        g.add_argument('--load_size', type=int, default=286, help='scale images to this size (square)')
        g.add_argument('--crop_size', type=int, default=256, help='then crop to this size (square)')
        g.add_argument('--load_size_h', type=int, default=None, help='load height (default: --load_size)')
        g.add_argument('--load_size_w', type=int, default=None, help='load width (default: --load_size)')
        g.add_argument('--crop_size_h', type=int, default=None, help='crop height (default: --crop_size)')
        g.add_argument('--crop_size_w', type=int, default=None, help='crop width (default: --crop_size)')
        g.add_argument('--max_dataset_size', type=int, default=float('inf'), help='use at most this many samples')
        g.add_argument('--preprocess', default='resize_and_crop',
                       choices=['resize_and_crop', 'crop', 'scale_width', 'scale_width_and_crop', 'none'])
        g.add_argument('--no_flip', action='store_true', help='no random horizontal flip')
        g.add_argument('--display_winsize', type=int, default=256, help='display and HTML image size')
        g = parser.add_argument_group('speed and exactness')
        g.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'],
                       help='mixed precision (autocast); fp16 training adds a GradScaler per optimizer')
        g.add_argument('--channels_last', action='store_true',
                       help='channels-last memory format for networks and input batches (faster convs on '
                            'tensor-core GPUs)')
        g.add_argument('--compile', action='store_true',
                       help='torch.compile every network (first iterations are slow while it compiles; '
                            'on CPU it needs a C++ compiler)')
        g.add_argument('--compile_backend', default='inductor',
                       help='torch.compile backend for --compile: inductor (fast kernels), aot_eager (traces '
                            'forward and backward without generating code; for debugging), cudagraphs, ...')
        g.add_argument('--deterministic', action='store_true',
                       help='deterministic kernels (torch.use_deterministic_algorithms; slower on GPUs); with '
                            '--seed, runs and resumed runs repeat bit for bit on the same machine')
        g = parser.add_argument_group('misc')
        g.add_argument('--epoch', default='latest', help='which epoch to load: latest or a number')
        g.add_argument('--load_iter', type=int, default=0, help='load iter_<load_iter> checkpoints when > 0')
        g.add_argument('--verbose', action='store_true', help='print more')
        g.add_argument('--suffix', default='', help='name suffix, e.g. {model}_{netG}_size{load_size}')
        g = parser.add_argument_group('legacy aliases (official InstaGAN / older CycleGAN names)')
        for old, new in [('--loadSizeH', 'load_size_h'), ('--loadSizeW', 'load_size_w'),
                         ('--fineSizeH', 'crop_size_h'), ('--fineSizeW', 'crop_size_w'),
                         ('--loadSize', 'load_size'), ('--fineSize', 'crop_size'),
                         ('--which_epoch', 'epoch')]:
            conv = int if new != 'epoch' else None
            g.add_argument(old, action=_Alias, target=new, convert=conv, dest='_alias_' + new,
                           help=f'alias of --{new}')
        g.add_argument('--resize_or_crop', action=_Alias, target='preprocess', dest='_alias_preprocess',
                       help='alias of --preprocess')
        g.add_argument('--which_direction', action=_Alias, target='direction', dest='_alias_direction')
        g.add_argument('--which_model_netG', action=_Alias, target='netG', dest='_alias_netG')
        g.add_argument('--which_model_netD', action=_Alias, target='netD', dest='_alias_netD')
        g.add_argument('--nThreads', action=_Alias, target='num_threads', convert=int, dest='_alias_nt')
        return parser

    # ------------------------------------------------------------------ parsing
    def gather_options(self):
        """Base options, then the model's and the dataset mode's hooks, then parse."""
        # --help only once every hook has added its options, so that it lists them all; a short usage
        # line, so that an error message is not buried under the ~50 lines of every option
        parser = argparse.ArgumentParser(usage='%(prog)s [--model NAME] [--dataroot PATH] [options] (--help lists all)',
                                         formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=False)
        parser = self.initialize(parser)
        opt, _ = parser.parse_known_args(self.argv)
        model_option_setter = models.get_option_setter(opt.model, parser)
        parser = model_option_setter(parser, self.isTrain)
        opt, _ = parser.parse_known_args(self.argv)  # the model may change dataset_mode's default
        dataset_option_setter = data.get_option_setter(opt.dataset_mode, parser)
        parser = dataset_option_setter(parser, self.isTrain)
        parser.add_argument('-h', '--help', action='help', help='show this help message and exit')
        self.parser = parser
        # options kept from training start as _UNSET: argparse leaves a value already in the namespace
        # alone unless the command line gives the option, so _UNSET afterwards means "not given"
        return parser.parse_args(self.argv, argparse.Namespace(**dict.fromkeys(parser.get_default(AS_TRAINED) or (),
                                                                                _UNSET)))

    def print_options(self, opt, save=True):
        lines = ['----------------- Options ---------------']
        for k, v in sorted(vars(opt).items()):
            if k.startswith('_alias_'):
                continue
            default = self.parser.get_default(k)
            comment = f'\t[default: {default}]' if v != default else ''
            lines.append(f'{k:>25}: {str(v):<30}{comment}')
        lines.append('----------------- End -------------------')
        message = '\n'.join(lines)
        if opt.rank == 0:
            if opt.verbose:
                print(message)
            if save:
                expr_dir = os.path.join(opt.checkpoints_dir, opt.name)
                os.makedirs(expr_dir, exist_ok=True)
                file_name = os.path.join(expr_dir, f'{opt.phase}_opt.txt' if not self.isTrain else 'train_opt.txt')
                atomic_write(file_name, lambda f: f.write(message + '\n'), mode='w')
        return message

    def check_values(self, opt):
        """An argparse error (exit status 2) for a value out of its range, or not among its choices
        (argparse checks choices only on the option itself, not on a legacy alias that sets it)."""
        for names, low in ((self.positive, 1), (self.non_negative, 0)):
            for name in names:
                value = getattr(opt, name)
                if value is not None and value < low:
                    self.parser.error(f'--{name} must be >= {low}, got {value}')
        for action in self.parser._actions:
            value = getattr(opt, action.dest, None)
            if action.choices is not None and value not in (None, _UNSET) and value not in action.choices:
                self.parser.error(f'--{action.dest} {value!r}: choose one of {", ".join(map(str, action.choices))}')

    def resolve_dataroot(self, opt):
        """``--dataroot``, or without it the built-in set that the dataset mode declares
        (``BaseDataset.builtin_data``), made on first use with one line saying so."""
        if opt.dataroot is not None:
            return opt.dataroot
        from datasets.builtin import NATIVE_SIZE, ensure_builtin
        dataset = data.find_dataset_using_name(opt.dataset_mode)
        if dataset.builtin_data is None:
            self.parser.error(f'--dataroot is required: no built-in set has the layout of --dataset_mode '
                              f'{opt.dataset_mode}')
        sizes = ('load_size', 'crop_size', 'load_size_h', 'load_size_w', 'crop_size_h', 'crop_size_w')
        native = NATIVE_SIZE.get(dataset.builtin_data)
        note = ''
        if native and all(getattr(opt, k) == self.parser.get_default(k) for k in sizes):
            for k in sizes:
                setattr(opt, k, native)
            note = f', at its own size (--load_size {native} --crop_size {native})'
        path = ensure_builtin(dataset.builtin_data, reason='--dataroot not given', echo=opt.rank == 0, note=note)
        return dataset.builtin_dataroot(path, opt)

    def parse(self, save=True):
        opt = self.gather_options()
        opt.isTrain = self.isTrain
        for k in [k for k in vars(opt) if k.startswith('_alias_')]:
            delattr(opt, k)
        self.check_values(opt)
        opt.rank = int(os.environ.get('RANK', 0))
        opt.world_size = int(os.environ.get('WORLD_SIZE', 1))
        try:
            opt.gpu_ids = parse_gpu_ids(opt.gpu_ids)
        except ValueError as e:
            self.parser.error(str(e))
        opt.device = f'cuda:{opt.gpu_ids[0]}' if opt.gpu_ids else 'cpu'
        opt.dataroot = self.resolve_dataroot(opt)
        # sizes: square options fill the non-square ones
        opt.load_size_h = opt.load_size_h or opt.load_size
        opt.load_size_w = opt.load_size_w or opt.load_size
        opt.crop_size_h = opt.crop_size_h or opt.crop_size
        opt.crop_size_w = opt.crop_size_w or opt.crop_size
        if opt.suffix:
            try:
                opt.name = opt.name + '_' + opt.suffix.format(**vars(opt))
            except (KeyError, IndexError, ValueError) as e:
                self.parser.error(f'--suffix {opt.suffix!r}: {e!r}; use option names in braces, e.g. '
                                  '{model}_{netG}_size{load_size}')
        self.take_trained(opt)
        self.print_options(opt, save=save)
        self.opt = opt
        return opt

    def take_trained(self, opt):
        """Fill in the options kept from training (:func:`as_trained`) that the command line did not
        give: the value ``<checkpoints_dir>/<name>/train_opt.txt`` records, else the option's default.
        A recorded value the option does not accept is an argparse error naming the file."""
        path = os.path.join(opt.checkpoints_dir, opt.name, 'train_opt.txt')
        for name in vars(opt).pop(AS_TRAINED, None) or ():
            if getattr(opt, name) is not _UNSET:
                continue
            saved = saved_option(os.path.dirname(path), name)
            if saved is None:
                setattr(opt, name, self.parser.get_default(name))
                continue
            action = next(a for a in self.parser._actions if a.dest == name)
            try:
                value = action.type(saved) if action.type else saved
            except ValueError:
                value = None
            if value is None or (action.choices is not None and value not in action.choices):
                self.parser.error(f'{path} records --{name} {saved!r}, which this version does not accept; '
                                  f'give --{name} on the command line')
            if value != self.parser.get_default(name) and opt.rank == 0:
                print(f'--{name} {value}: as trained ({path}; give --{name} to change it)')
            setattr(opt, name, value)


def parse_gpu_ids(value):
    """'0,1' -> [0, 1]; '-1' -> [] (CPU); None -> [0] when CUDA is available, else [].
    Raises ValueError (with the message for the user) on anything else, or GPUs that are not there."""
    if value is None:
        return [0] if torch.cuda.is_available() else []
    try:
        ids = [int(s) for s in str(value).split(',') if s.strip() != '']
    except ValueError:
        raise ValueError(f'--gpu_ids {value}: expected GPU numbers separated by commas (e.g. 0 or 0,1), '
                         'or -1 for CPU') from None
    ids = [i for i in ids if i >= 0]
    if ids and not torch.cuda.is_available():
        raise ValueError(f'--gpu_ids {value}: no CUDA device is available here; use --gpu_ids -1 for CPU')
    if ids and max(ids) >= torch.cuda.device_count():
        raise ValueError(f'--gpu_ids {value}: this machine has {torch.cuda.device_count()} CUDA device(s), '
                         f'numbered from 0')
    return ids
