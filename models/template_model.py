"""Template: copy to ``models/<name>_model.py``, rename the class to ``<Name>Model`` and fill in.

``python train.py --model template --dataset_mode unaligned --dataroot ...`` runs it as it is: a
generator trained with an L1 loss to map A to B (a paired regression; replace with your method).
"""
import torch

from models import networks
from models.base_model import BaseModel


class TemplateModel(BaseModel):
    """Inputs: 'A', 'B' (B, C, H, W) in [-1, 1]. Network: G (A -> B). Loss: L1(G(A), B)."""

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        """Add this model's options; change defaults of existing ones with ``set_defaults``."""
        parser.set_defaults(dataset_mode='unaligned')
        if is_train:
            parser.add_argument('--lambda_regression', type=float, default=1.0, help='weight of the L1 loss')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ['G']                # printed and plotted: self.loss_G
        self.visual_names = ['data_A', 'data_B', 'output']   # shown and saved
        self.model_names = ['G']               # saved / loaded: self.netG
        self.netG = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm,
                                      not opt.no_dropout, opt.init_type, opt.init_gain, self.device)
        if self.isTrain:
            self.criterionLoss = torch.nn.L1Loss()
            # an OptimWrapper (util/train_step.py): Adam with --lr, plus --amp and --nan_policy
            self.opt_G = self.make_optimizer(self.netG)
            self.optimizers = [self.opt_G]     # saved with the training state; one scheduler each

    def set_input(self, input):
        """Unpack a batch: 'A', 'B' (B, C, H, W) in [-1, 1] and the A paths."""
        AtoB = self.opt.direction == 'AtoB'
        self.data_A = input['A' if AtoB else 'B'].to(self.device)
        self.data_B = input['B' if AtoB else 'A'].to(self.device)
        self.image_paths = input['A_paths' if AtoB else 'B_paths']

    def forward(self):
        """G(A): (B, C, H, W) in [-1, 1]; test.py runs it under no_grad (``BaseModel.test``)."""
        self.output = self.netG(self.data_A)

    def generator_losses(self):
        """name -> loss tensor; each is also kept as ``self.loss_<name>`` for printing."""
        self.loss_G = self.criterionLoss(self.output, self.data_B) * self.opt.lambda_regression
        return {'G': self.loss_G}

    def optimize_parameters(self):
        """One update: forward and losses under the wrapper's context (mixed precision with --amp), then
        ``update`` (backward, non-finite check, step, gradients freed). Never call
        ``loss.backward()`` or ``optimizer.step()`` yourself: the wrapper does both."""
        with self.opt_G.context():
            self.forward()
            losses = self.generator_losses()
        self.opt_G.update(losses)
