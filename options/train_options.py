"""Training options: display, saving, schedule, optimisation."""
from .base_options import BaseOptions, _StoreConst, _Alias


class TrainOptions(BaseOptions):
    isTrain = True
    positive = BaseOptions.positive + ('epoch_count', 'lr_decay_iters')
    non_negative = BaseOptions.non_negative + ('n_epochs', 'n_epochs_decay', 'pool_size', 'max_iters_per_epoch')

    def initialize(self, parser):
        parser = super().initialize(parser)
        g = parser.add_argument_group('display')
        g.add_argument('--display_freq', type=int, default=400, help='show results every N samples')
        g.add_argument('--display_ncols', type=int, default=4, help='images per row in visdom')
        g.add_argument('--display_id', type=int, default=0, help='visdom window id; 0 disables visdom')
        g.add_argument('--display_server', default='http://localhost', help='visdom server')
        g.add_argument('--display_env', default='main', help='visdom environment')
        g.add_argument('--display_port', type=int, default=8097, help='visdom port')
        g.add_argument('--update_html_freq', type=int, default=1000, help='save snapshots to web/ every N samples')
        g.add_argument('--print_freq', type=int, default=100, help='print losses every N samples')
        g.add_argument('--no_html', action='store_true', help='no web/index.html snapshots')
        g = parser.add_argument_group('saving')
        g.add_argument('--save_latest_freq', type=int, default=5000,
                       help='save latest (networks and training state) every N samples; resuming from such '
                            'a mid-epoch save continues that epoch at the next batch')
        g.add_argument('--save_epoch_freq', type=int, default=5, help='save <epoch>_net_* every N epochs')
        g.add_argument('--save_by_iter', action='store_true',
                       help='with each latest save also keep iter_<n> (resume with --continue_train --load_iter n)')
        g.add_argument('--continue_train', action='store_true',
                       help='resume from --epoch (latest) or --load_iter: weights, optimizers, schedulers, '
                            'image pools, RNG states and the data position')
        g.add_argument('--epoch_count', type=int, default=1, help='first epoch number')
        g.add_argument('--phase', default='train', help='train, val, test, ...')
        g = parser.add_argument_group('optimisation')
        g.add_argument('--n_epochs', type=int, default=100, help='epochs at the initial learning rate')
        g.add_argument('--n_epochs_decay', type=int, default=100, help='epochs of linear decay to zero')
        g.add_argument('--beta1', type=float, default=0.5, help='Adam beta1')
        g.add_argument('--beta2', type=float, default=0.999, help='Adam beta2')
        g.add_argument('--lr', type=float, default=0.0002, help='initial Adam learning rate')
        g.add_argument('--gan_mode', default='lsgan', choices=['lsgan', 'vanilla', 'hinge'], help='GAN objective')
        g.add_argument('--pool_size', type=int, default=50, help='image pool size (0: none)')
        g.add_argument('--lr_policy', default='linear', choices=['linear', 'step', 'plateau', 'cosine'])
        g.add_argument('--lr_decay_iters', type=int, default=50, help='step policy: multiply by 0.1 every N epochs')
        g.add_argument('--max_iters_per_epoch', type=int, default=None,
                       help='stop each epoch after N iterations (short runs, demos)')
        g.add_argument('--nan_policy', default='stop', choices=['stop', 'skip'],
                       help='on a NaN/inf loss: stop (before the update, the last checkpoint intact; exit '
                            'status 3) or skip that optimizer step (counted and reported per epoch)')
        g = parser.add_argument_group('legacy aliases (training)')
        g.add_argument('--niter', action=_Alias, target='n_epochs', convert=int, dest='_alias_n_epochs')
        g.add_argument('--niter_decay', action=_Alias, target='n_epochs_decay', convert=int,
                       dest='_alias_n_epochs_decay')
        g.add_argument('--no_lsgan', action=_StoreConst, target='gan_mode', value='vanilla', dest='_alias_no_lsgan',
                       help='alias of --gan_mode vanilla')
        return parser
