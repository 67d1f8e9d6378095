"""Option parsing: modern names, the official InstaGAN aliases, non-square sizes, hooks."""
import pytest

from options.test_options import TestOptions
from options.train_options import TrainOptions


def parse_train(tmp_path, *args):
    return TrainOptions(['--dataroot', 'x', '--checkpoints_dir', str(tmp_path), *args]).parse()


def test_official_instagan_aliases_map_to_modern_names(tmp_path):
    opt = parse_train(tmp_path, '--model', 'cycle_gan', '--loadSizeH', '240', '--loadSizeW', '160',
                      '--fineSizeH', '220', '--fineSizeW', '150', '--resize_or_crop', 'crop', '--niter', '7',
                      '--niter_decay', '3', '--no_lsgan')
    assert (opt.load_size_h, opt.load_size_w, opt.crop_size_h, opt.crop_size_w) == (240, 160, 220, 150)
    assert opt.preprocess == 'crop'
    assert (opt.n_epochs, opt.n_epochs_decay) == (7, 3)
    assert opt.gan_mode == 'vanilla'
    assert not any(k.startswith('_alias_') for k in vars(opt))


def test_square_sizes_fill_non_square_ones(tmp_path):
    opt = parse_train(tmp_path, '--load_size', '72', '--crop_size', '64')
    assert (opt.load_size_h, opt.load_size_w, opt.crop_size_h, opt.crop_size_w) == (72, 72, 64, 64)
    opt = parse_train(tmp_path, '--crop_size', '64', '--crop_size_w', '48')
    assert (opt.crop_size_h, opt.crop_size_w) == (64, 48)


def test_gpu_ids_default_to_cpu_without_cuda(tmp_path):
    import torch
    opt = parse_train(tmp_path)
    assert opt.gpu_ids == ([0] if torch.cuda.is_available() else [])
    assert parse_train(tmp_path, '--gpu_ids', '-1').gpu_ids == []
    assert parse_train(tmp_path, '--gpu_ids', '-1').device == 'cpu'


def test_model_hook_adds_options_and_defaults(tmp_path):
    opt = parse_train(tmp_path, '--model', 'cycle_gan')
    assert opt.lambda_A == 10.0 and opt.lambda_identity == 0.5 and opt.no_dropout
    with pytest.raises(SystemExit):   # cycle_gan's option is unknown to the template model
        parse_train(tmp_path, '--model', 'template', '--lambda_identity', '1')


def test_options_are_saved_to_the_run_folder(tmp_path):
    opt = parse_train(tmp_path, '--name', 'run1', '--model', 'cycle_gan', '--ngf', '8')
    text = (tmp_path / 'run1' / 'train_opt.txt').read_text()
    ngf_line = next(line for line in text.splitlines() if line.strip().startswith('ngf:'))
    assert ngf_line.split(':', 1)[1].split()[0] == '8' and '[default: 64]' in ngf_line
    opt = TestOptions(['--dataroot', 'x', '--checkpoints_dir', str(tmp_path), '--name', 'run1']).parse()
    assert (tmp_path / 'run1' / 'test_opt.txt').exists()
    assert opt.model == 'test' and opt.serial_batches and opt.no_flip
