"""The template a newcomer copies trains as it is, through the training-step layer."""
import torch

import train as train_script
from data import create_dataset
from models import create_model
from options.train_options import TrainOptions

TINY = ['--model', 'template', '--dataset_mode', 'unaligned', '--netG', 'resnet_6blocks', '--ngf', '4',
        '--load_size', '36', '--crop_size', '32', '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0']


def test_template_trains_one_iteration_through_its_optim_wrapper(shapes_root, tmp_path):
    opt = TrainOptions(['--dataroot', shapes_root, '--checkpoints_dir', str(tmp_path), '--name', 't', *TINY]).parse()
    model = create_model(opt)
    model.setup(opt)
    before = [p.detach().clone() for p in model.netG.parameters()]
    model.set_input(next(iter(create_dataset(opt))))
    model.optimize_parameters()
    assert model.opt_G.steps == 1 and model.opt_G.skipped == 0      # the update went through the wrapper
    assert torch.isfinite(torch.tensor(model.get_current_losses()['G']))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.netG.parameters()))
    assert all(p.grad is None for p in model.netG.parameters())       # gradients freed after the step


def test_template_runs_under_train_py_with_fp16_loss_scaling(shapes_root, tmp_path, capsys):
    rc = train_script.main(['--dataroot', shapes_root, '--checkpoints_dir', str(tmp_path), '--name', 't', *TINY,
                            '--amp', 'fp16', '--n_epochs', '1', '--n_epochs_decay', '0', '--max_iters_per_epoch', '1',
                            '--print_freq', '1000', '--display_freq', '1000', '--no_html'])
    assert rc == 0
    assert (tmp_path / 't' / 'latest_net_G.pth').is_file() and (tmp_path / 't' / 'latest_train_state.pth').is_file()
    assert 'warning' not in capsys.readouterr().out
