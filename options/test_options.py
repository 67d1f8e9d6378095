"""Test options: where results go and how many images."""
from .base_options import BaseOptions


class TestOptions(BaseOptions):
    __test__ = False  # not a pytest test class
    isTrain = False
    non_negative = BaseOptions.non_negative + ('num_test', 'results_per_page')

    def initialize(self, parser):
        parser = super().initialize(parser)
        parser.add_argument('--results_dir', default='./results/', help='results are saved here')
        parser.add_argument('--aspect_ratio', type=float, default=1.0, help='aspect ratio of result images')
        parser.add_argument('--phase', default='test', help='train, val, test, ...')
        parser.add_argument('--eval', action='store_true', help='eval mode at test time (batch norm, dropout)')
        parser.add_argument('--num_test', type=int, default=50, help='how many test images to run')
        parser.add_argument('--results_per_page', type=int, default=50, help='rows per HTML page')
        parser.add_argument('--weights', default=None, metavar='[NAME=]PATH[,NAME=PATH...]',
                            help='load this file instead of <checkpoints_dir>/<name>/<epoch>_net_<NAME>.pth '
                                 '(NAME= may be left out for a model with one network): ours, or a training '
                                 "script's {'state_dict': ...} checkpoint (e.g. the DIM port's)")
        # test time: no flip, no shuffling, load exactly the model's size
        parser.set_defaults(model='test', load_size=parser.get_default('crop_size'), num_threads=0,
                            serial_batches=True, no_flip=True)
        return parser
