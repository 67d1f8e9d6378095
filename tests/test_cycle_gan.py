"""CycleGAN end to end on tiny data: one training iteration, checkpoint round trip, test.py page."""
import os
import re

import torch

import test as test_script
import train as train_script
from data import create_dataset
from models import create_model
from options.test_options import TestOptions
from options.train_options import TrainOptions

TINY = ['--ngf', '4', '--ndf', '4', '--netG', 'resnet_6blocks', '--load_size', '36', '--crop_size', '32',
        '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0']


def train_opt(root, tmp_path, *extra):
    return TrainOptions(['--dataroot', root, '--checkpoints_dir', str(tmp_path / 'ck'), '--name', 'cg',
                         '--model', 'cycle_gan', *TINY, *extra]).parse()


def test_one_training_iteration_gives_finite_losses_and_changes_weights(shapes_root, tmp_path):
    opt = train_opt(shapes_root, tmp_path)
    model = create_model(opt)
    model.setup(opt)
    before = {n: p.detach().clone() for n, p in model.netG_A.named_parameters()}
    before_d = {n: p.detach().clone() for n, p in model.netD_A.named_parameters()}
    model.set_input(next(iter(create_dataset(opt))))
    model.optimize_parameters()
    losses = model.get_current_losses()
    assert set(losses) == set(model.loss_names)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(before[n], p) for n, p in model.netG_A.named_parameters())
    assert any(not torch.equal(before_d[n], p) for n, p in model.netD_A.named_parameters())


def test_checkpoint_round_trip_restores_identical_weights(shapes_root, tmp_path):
    opt = train_opt(shapes_root, tmp_path)
    model = create_model(opt)
    model.setup(opt)
    model.set_input(next(iter(create_dataset(opt))))
    model.optimize_parameters()
    model.save_networks('3')
    for name in model.model_names:
        assert os.path.isfile(tmp_path / 'ck' / 'cg' / f'3_net_{name}.pth')
    other = create_model(train_opt(shapes_root, tmp_path, '--seed', '1', '--init_type', 'xavier'))
    assert not torch.equal(next(other.netG_A.parameters()), next(model.netG_A.parameters()))
    other.load_networks('3')
    for name in model.model_names:
        a, b = getattr(model, 'net' + name).state_dict(), getattr(other, 'net' + name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_then_test_writes_html_whose_images_exist(shapes_root, tmp_path):
    ck = str(tmp_path / 'ck')
    rc = train_script.main(['--dataroot', shapes_root, '--checkpoints_dir', ck, '--name', 'cg',
                            '--model', 'cycle_gan', *TINY, '--n_epochs', '1', '--n_epochs_decay', '0',
                            '--max_iters_per_epoch', '2', '--print_freq', '1', '--display_freq', '1'])
    assert rc == 0
    assert os.path.isfile(os.path.join(ck, 'cg', 'latest_net_G_A.pth'))
    assert 'epoch: 1' in open(os.path.join(ck, 'cg', 'loss_log.txt')).read()
    results = str(tmp_path / 'res')
    rc = test_script.main(['--dataroot', shapes_root, '--checkpoints_dir', ck, '--name', 'cg',
                           '--model', 'cycle_gan', '--dataset_mode', 'unaligned', *TINY, '--results_dir', results,
                           '--num_test', '2'])
    assert rc == 0
    page = os.path.join(results, 'cg', 'test_latest', 'index.html')
    html = open(page).read()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) == 2 * 6     # 2 samples x (real, fake, rec for A and B)
    for src in srcs:
        assert os.path.getsize(os.path.join(os.path.dirname(page), src)) > 0
    assert any(s.endswith('_fake_B.png') for s in srcs)


def test_single_direction_test_model_loads_one_generator(shapes_root, tmp_path):
    ck = tmp_path / 'ck'
    opt = train_opt(shapes_root, tmp_path)
    model = create_model(opt)
    model.save_networks('latest')
    results = str(tmp_path / 'res')
    rc = test_script.main(['--dataroot', os.path.join(shapes_root, 'testA'), '--checkpoints_dir', str(ck),
                           '--name', 'cg', '--model', 'test', '--model_suffix', '_A', *TINY,
                           '--results_dir', results, '--num_test', '1'])
    assert rc == 0
    imgs = os.listdir(os.path.join(results, 'cg', 'test_latest', 'images'))
    assert sorted(i.rsplit('_', 1)[1] for i in imgs) == ['fake.png', 'real.png']
