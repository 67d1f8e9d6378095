"""One-direction inference with a single generator (``--model test``)."""
from models import networks
from models.base_model import BaseModel


class TestModel(BaseModel):
    """Runs ``G_<model_suffix>`` on 'A' images only: (B, C, H, W) in [-1, 1] -> fake in [-1, 1].

    ``python test.py --model test --dataset_mode single --dataroot imgs --name run --model_suffix _A``
    loads ``<epoch>_net_G_A.pth`` of a CycleGAN run; without a suffix it loads ``<epoch>_net_G.pth``.
    """

    __test__ = False  # not a pytest test class

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        if is_train:
            parser.error('--model test is for test.py only; train a model such as cycle_gan')
        parser.set_defaults(dataset_mode='single', no_dropout=True)
        parser.add_argument('--model_suffix', default='',
                            help='load <epoch>_net_G<model_suffix>.pth, e.g. _A for a CycleGAN G_A')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = []
        self.visual_names = ['real', 'fake']
        self.model_names = ['G' + opt.model_suffix]
        net = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm, not opt.no_dropout,
                                opt.init_type, opt.init_gain, self.device)
        setattr(self, 'netG' + opt.model_suffix, net)

    def set_input(self, input):
        self.real = input['A'].to(self.device)
        self.image_paths = input['A_paths']

    def forward(self):
        self.fake = getattr(self, 'netG' + self.opt.model_suffix)(self.real)

    def optimize_parameters(self):
        raise RuntimeError('TestModel is for inference only')
