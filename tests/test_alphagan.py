"""AlphaGAN model: one training step (both networks learn; D judges alpha F + (1 - alpha) B of the
prediction against the ground-truth composite; the losses ignore known trimap pixels), train.py +
test.py end to end on the synthetic test layout (full-resolution mattes with the trimap's known
regions, metrics table equal to scripts/eval_matting.py on the saved PNGs, no table without ground
truth), and ``--pretrained_path`` through the model options."""
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
import torchvision

import test as test_script
import train as train_script
from data import create_dataset
from datasets.make_matting_dataset import make_matting_dataset
from models import create_model
from models.alphagan_model import METRIC_NAMES, METRICS_TITLE
from options.test_options import TestOptions
from options.train_options import TrainOptions
from scripts.eval_matting import evaluate_dirs
from util.errors import UserInputError

TINY = ['--model', 'alphagan', '--crop_size', '64', '--crop_sizes', '64,96,128', '--ndf', '8',
        '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0']
SIZE = 57  # height of the synthetic test images: odd, not a multiple of 32 (widths vary)


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """Run this module's ResNet-50 steps on one thread, then restore the setting. On the shared 2-core
    machine, 2 threads waiting on each other made the module ~3x slower (68 s vs 25 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def matting_root(tmp_path_factory):
    out = tmp_path_factory.mktemp('matting')
    make_matting_dataset(str(out), n_train=2, n_test=2, n_bg=2, size=SIZE, seed=0)
    return str(out)


def train_opt(root, ck, *extra):
    return TrainOptions(['--dataroot', root, '--checkpoints_dir', str(ck), '--name', 'ag', *TINY,
                         *extra]).parse()


@pytest.fixture(scope='module')
def stepped(matting_root, tmp_path_factory):
    """A model after one optimize_parameters (with --lambda_lap 1), with what G output and what D
    was given during that step, and the weights before it."""
    opt = train_opt(matting_root, tmp_path_factory.mktemp('ck'), '--lambda_lap', '1')
    model = create_model(opt)
    model.setup(opt)
    batch = next(iter(create_dataset(opt)))
    before = {name: {k: v.detach().clone() for k, v in getattr(model, 'net' + name).state_dict().items()}
              for name in ('G', 'D')}
    g_out, d_in = [], []
    hooks = [model.netG.register_forward_hook(lambda m, i, o: g_out.append(o.detach().clone())),
             model.netD.register_forward_pre_hook(lambda m, i: d_in.append(i[0].detach().clone()))]
    model.set_input(batch)
    model.optimize_parameters()
    for h in hooks:
        h.remove()
    return {'model': model, 'batch': batch, 'before': before, 'g_out': g_out, 'd_in': d_in}


def test_one_training_iteration_gives_finite_losses_and_changes_G_and_D(stepped):
    model = stepped['model']
    losses = model.get_current_losses()
    assert set(losses) == {'G_GAN', 'alpha', 'comp', 'lap', 'D'} == set(model.loss_names)
    assert all(np.isfinite(v) for v in losses.values())
    for name in ('G', 'D'):
        params = dict(getattr(model, 'net' + name).named_parameters())
        assert any(not torch.equal(stepped['before'][name][k], p) for k, p in params.items()), name


def test_discriminator_judges_real_composite_against_composite_of_predicted_alpha(stepped):
    batch, (pred,) = stepped['batch'], stepped['g_out']
    fg, bg, image, trimap = batch['fg'], batch['bg'], batch['image'], batch['trimap']
    unknown = trimap == 0.5
    assert unknown.any() and (~unknown).any()
    alpha = torch.where(unknown, pred, trimap)          # known regions from the trimap
    fake = torch.cat([alpha * fg + (1 - alpha) * bg, trimap], 1) * 2 - 1
    real = torch.cat([image, trimap], 1) * 2 - 1
    assert not torch.allclose(fake, real, atol=1e-3)    # the prediction is not the ground truth
    d_in = stepped['d_in']                              # G step: fake; D step: real, fake
    assert len(d_in) == 3
    assert torch.allclose(d_in[0], fake, atol=1e-6)
    assert torch.allclose(d_in[1], real, atol=1e-6)
    assert torch.allclose(d_in[2], fake, atol=1e-6)


def test_losses_ignore_the_prediction_in_known_trimap_pixels(stepped):
    model = stepped['model']
    model.set_input(stepped['batch'])
    with torch.no_grad():
        model.forward()
        reference = model.pred_alpha.clone()
        unknown = model.unknown

        def losses(pred):
            model.pred_alpha = pred
            model.derive()
            model.generator_losses()
            return {k: float(getattr(model, 'loss_' + k)) for k in ('alpha', 'comp', 'lap', 'G_GAN')}

        base = losses(reference)
        noise = torch.rand_like(reference)
        assert losses(torch.where(unknown, reference, noise)) == base
        changed = losses(torch.where(unknown, noise, reference))
    assert all(changed[k] != base[k] for k in ('alpha', 'comp', 'lap'))


@pytest.fixture(scope='module')
def trained(matting_root, tmp_path_factory):
    """Checkpoints of a two-iteration train.py run."""
    ck = str(tmp_path_factory.mktemp('ck'))
    rc = train_script.main(['--dataroot', matting_root, '--checkpoints_dir', ck, '--name', 'ag', *TINY,
                            '--n_epochs', '1', '--n_epochs_decay', '0', '--max_iters_per_epoch', '2'])
    assert rc == 0
    assert os.path.isfile(os.path.join(ck, 'ag', 'latest_net_G.pth'))
    return ck


def run_test(root, ck, results):
    args = ['--dataroot', root, '--checkpoints_dir', ck, '--name', 'ag', '--results_dir', str(results),
            '--model', 'alphagan', '--gpu_ids', '-1']
    assert test_script.main(args) == 0
    return os.path.join(str(results), 'ag', 'test_latest'), args


def read_gray(path):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img if img.ndim == 2 else img[..., 0]


@pytest.mark.slow
def test_train_then_test_writes_full_resolution_mattes_and_a_metrics_table(matting_root, trained, tmp_path):
    web_dir, args = run_test(matting_root, trained, tmp_path / 'res')
    test_dir = os.path.join(matting_root, 'test')
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(test_dir, 'merged')))
    pred_dir = tmp_path / 'pred'
    pred_dir.mkdir()
    for stem in stems:
        merged = cv2.imread(os.path.join(test_dir, 'merged', stem + '.png'))
        trimap = read_gray(os.path.join(test_dir, 'trimaps', stem + '.png'))
        alpha = read_gray(os.path.join(web_dir, 'images', stem + '_alpha.png'))
        assert alpha.shape == merged.shape[:2] == trimap.shape and alpha.shape[0] == SIZE
        assert (alpha[trimap == 0] == 0).all() and (alpha[trimap == 255] == 255).all()
        assert os.path.isfile(os.path.join(web_dir, 'images', stem + '_gt_alpha.png'))
        assert os.path.isfile(os.path.join(web_dir, 'images', stem + '_composite.png'))
        shutil.copyfile(os.path.join(web_dir, 'images', stem + '_alpha.png'), pred_dir / (stem + '.png'))
    html = open(os.path.join(web_dir, 'index.html')).read()
    assert METRICS_TITLE in html
    assert re.search(r'<td>mean</td>', html)

    # the model's metrics (what the table shows) are those of the saved 8-bit mattes
    scores = evaluate_dirs(str(pred_dir), os.path.join(test_dir, 'alpha'), os.path.join(test_dir, 'trimaps'))
    opt = TestOptions(args).parse(save=False)
    opt.num_threads, opt.batch_size, opt.serial_batches = 0, 1, True
    model = create_model(opt)
    model.setup(opt)
    for batch in create_dataset(opt):
        model.set_input(batch)
        model.test()
    assert sorted(model.metrics) == stems
    for stem in stems:
        for k in METRIC_NAMES:
            assert model.metrics[stem][k] == pytest.approx(scores['per_image'][stem][k], rel=1e-9, abs=1e-12)
    ((title, rows),) = model.test_tables()
    assert title == METRICS_TITLE and [r['image'] for r in rows] == stems + ['mean']
    assert rows[-1]['SAD'] == pytest.approx(scores['mean']['SAD'])


@pytest.mark.slow
def test_without_ground_truth_test_still_writes_mattes_but_no_table(matting_root, trained, tmp_path):
    root = tmp_path / 'nogt'
    shutil.copytree(os.path.join(matting_root, 'test'), root / 'test')
    shutil.rmtree(root / 'test' / 'alpha')
    web_dir, _ = run_test(str(root), trained, tmp_path / 'res')
    images = os.listdir(os.path.join(web_dir, 'images'))
    assert any(f.endswith('_alpha.png') for f in images)
    assert not any(f.endswith('_gt_alpha.png') for f in images)
    html = open(os.path.join(web_dir, 'index.html')).read()
    assert METRICS_TITLE not in html and 'class="metrics"' not in html


def test_pretrained_path_loads_a_local_resnet50_into_the_encoder(matting_root, tmp_path):
    torch.manual_seed(3)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / 'resnet50.pth'
    torch.save(state, path)
    model = create_model(train_opt(matting_root, tmp_path / 'ck', '--pretrained_path', str(path)))
    encoder = model.netG.encoder.state_dict()
    assert torch.equal(encoder['conv1.weight'][:, :3], state['conv1.weight'])
    assert not encoder['conv1.weight'][:, 3].any()      # trimap channel starts at zero
    for key in ('layer1.0.conv1.weight', 'layer4.2.conv3.weight', 'layer3.5.bn2.running_var'):
        assert torch.equal(encoder[key], state[key])
    # a missing file is a user error: message and exit status 2, no traceback
    rc = train_script.main(['--dataroot', matting_root, '--checkpoints_dir', str(tmp_path / 'ck'), '--name', 'ag',
                            *TINY, '--pretrained_path', str(tmp_path / 'missing.pth')])
    assert rc == 2


def test_options_that_do_not_fit_alphagan_are_user_errors(matting_root, tmp_path):
    for extra in (['--netG', 'unet_256'], ['--input_nc', '3'], ['--lambda_gan', '-1']):
        with pytest.raises(UserInputError):
            create_model(train_opt(matting_root, tmp_path / 'ck', *extra))
