"""BackgroundMattingV2 (``--model bgmv2``): official-checkpoint parity, patch selection, the refine
modes, training steps of both stages."""
import os

import pytest
import torch
import torch.nn.functional as F

from models.bgmv2_networks import (MattingBase, MattingRefine, Refiner, clamp_passing_gradient, crop_patches,
                                   paste_patches, split_coarse)

REFINE_OUTPUTS = ('pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm')


@pytest.fixture(scope='module')
def official(shared_dir):
    """The official MattingRefine mobilenetv2 state dict and its outputs (fixture README.md)."""
    folder = os.path.join(shared_dir, 'fixtures', 'bgmv2_official')
    if not os.path.isdir(folder):
        pytest.skip(f'{folder} is absent: the official BackgroundMattingV2 fixture lives in ../shared')
    state = torch.load(os.path.join(folder, 'mattingrefine_mobilenetv2.pth'), weights_only=True)
    case = torch.load(os.path.join(folder, 'case_mobilenetv2.pth'), weights_only=True)
    return state, case, os.path.join(folder, 'mattingrefine_mobilenetv2.pth')


@pytest.mark.parametrize('mode', ['full', 'sampling', 'thresholding'])
def test_official_checkpoint_reproduces_every_refine_output(official, mode):
    state, case, _ = official
    model = MattingRefine(**case['config']['refine_ctor'][f'refine_{mode}'])
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(case['inputs']['src'], case['inputs']['bgr'])
    expected = case['outputs'][f'refine_{mode}']
    for name, out in zip(REFINE_OUTPUTS, outputs):
        assert out.shape == expected[name].shape, name
        assert (out - expected[name]).abs().max().item() < 1e-5, f'{mode}: {name}'
    assert torch.equal(outputs[-1], expected['ref_sm'])      # the same patches refined


def test_official_base_checkpoint_reproduces_base_outputs(official):
    state, case, _ = official
    model = MattingBase('mobilenetv2')
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith('refiner.')}, strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(case['inputs']['src'], case['inputs']['bgr'])
    for name, out in zip(('pha', 'fgr', 'err', 'hid'), outputs):
        assert (out - case['outputs']['base'][name]).abs().max().item() < 1e-5, f'base: {name}'


def test_resnet_backbones_have_the_official_layout():
    # the official ResNetEncoder subclasses torchvision's ResNet (avgpool / fc deleted), layer4 dilated
    model = MattingBase('resnet50')
    keys = model.state_dict().keys()
    assert 'backbone.conv1.weight' in keys and 'backbone.layer4.2.bn3.running_var' in keys
    assert not any(k.startswith(('backbone.fc', 'backbone.avgpool')) for k in keys)
    assert model.backbone.conv1.in_channels == 6
    assert model.decoder.conv1.in_channels == 256 + 512 and model.decoder.conv4.out_channels == 37
    assert model.backbone.layer4[0].conv2.stride == (1, 1) and model.backbone.layer4[1].conv2.dilation == (2, 2)


def small_refine(mode, kernel_size=3, **kw):
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', refine_mode=mode, refine_kernel_size=kernel_size, **kw)
    return model.eval()


@pytest.mark.parametrize('kernel_size', [3, 1])
def test_full_mode_equals_sampling_every_patch(kernel_size):
    src, bgr = torch.rand(2, 1, 3, 64, 96).unbind(0)
    full = small_refine('full', kernel_size)
    every = small_refine('sampling', kernel_size, refine_sample_pixels=64 * 96, refine_prevent_oversampling=False)
    every.load_state_dict(full.state_dict())
    with torch.no_grad():
        a, b = full(src, bgr), every(src, bgr)
    assert torch.equal(b[-1], torch.ones(1, 1, 16, 24))
    for name, x, y in zip(REFINE_OUTPUTS, a, b):
        assert (x - y).abs().max().item() < 1e-5, name


def coarse_inputs(h=8, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    pha = torch.rand(1, 1, h, w, generator=g)
    fgr = torch.randn(1, 3, h, w, generator=g) * 0.1
    err = torch.randperm(h * w, generator=g).float().view(1, 1, h, w) / (h * w)   # distinct values
    hid = torch.rand(1, 32, h, w, generator=g)
    src, bgr = torch.rand(2, 1, 3, 4 * h, 4 * w, generator=g).unbind(0)
    return src, bgr, pha, fgr, err, hid


def test_error_map_selects_the_highest_error_patches():
    src, bgr, pha, fgr, err, hid = coarse_inputs()
    k = 10
    refiner = Refiner('sampling', sample_pixels=16 * k).eval()
    with torch.no_grad():
        pha_out, fgr_out, ref = refiner(src, bgr, pha, fgr, err, hid)
    top = err.flatten().topk(k).indices
    expected = torch.zeros(err.numel())
    expected[top] = 1
    assert torch.equal(ref.flatten(), expected)
    # outside the refined patches the output is the bilinear upsampling of the coarse prediction
    up = F.interpolate(torch.cat([pha, fgr], 1), src.shape[2:], mode='bilinear', align_corners=False)
    keep = F.interpolate(ref, scale_factor=4, mode='nearest') == 0
    assert torch.equal(pha_out[keep], up[:, :1][keep])
    assert not torch.equal(pha_out[~keep], up[:, :1][~keep])


def test_thresholding_refines_where_the_error_exceeds_the_threshold():
    src, bgr, pha, fgr, err, hid = coarse_inputs()
    refiner = Refiner('thresholding', threshold=0.7).eval()
    with torch.no_grad():
        ref = refiner(src, bgr, pha, fgr, err, hid)[2]
    assert torch.equal(ref, (err > 0.7).float())


def test_sampling_never_asks_for_more_patches_than_exist():
    model = small_refine('sampling', refine_sample_pixels=80_000)
    src, bgr = torch.rand(2, 1, 3, 32, 32).unbind(0)
    with torch.no_grad():
        ref = model(src, bgr)[-1]
    assert ref.shape == (1, 1, 8, 8)


def test_patches_are_cropped_and_pasted_at_their_cells():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).view(2, 3, 8, 12)
    b, i, j = torch.tensor([1, 0]), torch.tensor([1, 0]), torch.tensor([2, 0])
    patches = crop_patches(x, b, i, j, 4, 2)
    assert patches.shape == (2, 3, 8, 8)
    assert torch.equal(patches[0, :, 2:6, 2:6], x[1, :, 4:8, 8:12])
    assert torch.equal(patches[1, :, :2], torch.zeros(3, 2, 8))          # zero padding at the border
    pasted = paste_patches(x, -torch.ones(2, 3, 4, 4), b, i, j)
    assert (pasted[1, :, 4:8, 8:12] == -1).all() and (pasted[0, :, :4, :4] == -1).all()
    assert (pasted >= 0).sum() == x.numel() - 2 * 3 * 16


def test_error_map_clamp_keeps_official_values_and_lets_the_error_loss_reach_negative_outputs():
    """The official hard clamp gives a raw error output below 0 no gradient even where the true
    error is large, so such pixels never learn; ours has the same values and passes the gradient."""
    raw = torch.tensor([-2.0, -0.5, 0.3, 3e7]).view(1, 1, 2, 2)          # 3e7: 1 - x is not exact in float32
    x = torch.zeros(1, 37, 2, 2)
    x[:, 4:5] = raw
    x.requires_grad_(True)
    err = split_coarse(x)[2]
    assert torch.equal(err.detach(), raw.clamp(0, 1)) and torch.equal(clamp_passing_gradient(raw, 0, 1), raw.clamp(0, 1))
    target = torch.full_like(raw, 0.4)
    F.mse_loss(err, target).backward()
    grad = x.grad[:, 4:5].flatten()
    assert (grad[:2] < 0).all()                           # below 0 with a true error: pushed up (official: 0)
    assert grad[2] < 0 and grad[3] > 0                    # in range as before; above 1: pushed down
    hard = raw.clone().requires_grad_(True)
    F.mse_loss(hard.clamp(0, 1), target).backward()
    assert (hard.grad.flatten()[:2] == 0).all()           # what the official clamp does
    assert torch.count_nonzero(x.grad[:, torch.arange(37) != 4]) == 0   # the other outputs untouched


def test_backbone_scale_above_one_half_is_refused():
    with pytest.raises(ValueError, match='backbone_scale'):
        MattingRefine('mobilenetv2', backbone_scale=0.6)


# ---------------------------------------------------------------------------- the model, training
from data import create_dataset  # noqa: E402
from datasets.make_matting_dataset import make_matting_dataset  # noqa: E402
from models import create_model  # noqa: E402
from models.bgmv2_model import STAGE_LRS  # noqa: E402
from models.losses import error_map_loss  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from util.errors import UserInputError  # noqa: E402

TINY = ['--model', 'bgmv2', '--batch_size', '2', '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0']


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp('bgm_synth')
    return make_matting_dataset(str(out), n_train=2, n_test=2, n_bg=2, size=48, seed=0)


def train_model(root, ck, *extra):
    opt = TrainOptions(['--dataroot', root, '--checkpoints_dir', str(ck), '--name', 'bgm', *TINY, *extra]).parse()
    model = create_model(opt)
    model.setup(opt)
    return model, opt


def step(model, opt):
    torch.manual_seed(0)
    batch = next(iter(create_dataset(opt)))
    before = {k: v.detach().clone() for k, v in model.netG.state_dict().items()}
    model.set_input(batch)
    model.optimize_parameters()
    return before


def changed(before, net, prefix):
    return any(not torch.equal(before[k], v) for k, v in net.state_dict().items()
               if k.startswith(prefix) and v.is_floating_point() and 'running' not in k)


@pytest.fixture(scope='module')
def base_stage(synth, tmp_path_factory):
    ck = tmp_path_factory.mktemp('ck_base')
    model, opt = train_model(synth, ck, '--bgmv2_stage', 'base', '--crop_size', '64')
    before = step(model, opt)
    path = os.path.join(str(ck), 'stage1.pth')
    torch.save(model.netG.state_dict(), path)
    return model, before, path


def test_base_stage_step_gives_finite_losses_and_changes_every_part(base_stage):
    model, before, _ = base_stage
    losses = model.get_current_losses()
    assert set(losses) == {'pha', 'sobel', 'fgr', 'err'} == set(model.loss_names)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for part in ('backbone.', 'aspp.', 'decoder.'):
        assert changed(before, model.netG, part), part
    assert type(model.netG).__name__ == 'MattingBase'
    assert 32 <= model.src.shape[-1] < 64 and model.src.shape == (2, 3) + model.src.shape[2:]   # batch crop


def test_base_stage_optimiser_has_the_official_learning_rates(base_stage):
    model = base_stage[0]
    groups = model.opt_G.param_groups
    assert [g['lr'] for g in groups] == list(STAGE_LRS['base'].values()) == [1e-4, 5e-4, 5e-4]
    assert [len(g['params']) for g in groups] == [len(list(getattr(model.netG, p).parameters()))
                                                  for p in ('backbone', 'aspp', 'decoder')]
    assert groups[0]['betas'] == (0.9, 0.999)


def test_refine_stage_starts_from_the_stage1_checkpoint_and_trains_every_part(synth, base_stage, tmp_path):
    _, _, stage1 = base_stage
    model, opt = train_model(synth, tmp_path, '--bgmv2_stage', 'refine', '--crop_size', '128',
                             '--base_checkpoint', stage1)
    saved = torch.load(stage1, weights_only=True)
    own = model.netG.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items())
    assert [g['lr'] for g in model.opt_G.param_groups] == [5e-5, 5e-5, 1e-4, 3e-4]
    before = step(model, opt)
    losses = model.get_current_losses()
    assert set(losses) == {'pha', 'sobel', 'fgr', 'pha_sm', 'sobel_sm', 'fgr_sm', 'err'}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for part in ('backbone.', 'aspp.', 'decoder.', 'refiner.'):
        assert changed(before, model.netG, part), part
    h, w = model.src.shape[2:]
    assert h % 4 == 0 and w % 4 == 0 and 64 <= h < 128


def test_base_checkpoint_of_another_backbone_is_refused(synth, base_stage, tmp_path):
    with pytest.raises(UserInputError, match='does not fit'):
        train_model(synth, tmp_path, '--bgmv2_stage', 'refine', '--backbone', 'resnet50', '--base_checkpoint',
                    base_stage[2])


def test_error_target_does_not_push_alpha():
    pha = torch.rand(1, 1, 8, 8, requires_grad=True)
    err = torch.rand(1, 1, 8, 8, requires_grad=True)
    error_map_loss(err, pha, torch.rand(1, 1, 8, 8)).backward()
    assert pha.grad is None and err.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- test.py
import cv2  # noqa: E402
import numpy as np  # noqa: E402

import test as test_script  # noqa: E402
from models.bgmv2_model import COARSE_TITLE, METRICS_TITLE  # noqa: E402


def run_test_py(root, results, weights, *extra):
    argv = ['--model', 'bgmv2', '--dataroot', root, '--results_dir', str(results), '--name', 'bgm',
            '--gpu_ids', '-1', '--weights', weights, '--backbone', 'mobilenetv2', *extra]
    assert test_script.main(argv) == 0
    return os.path.join(str(results), 'bgm', 'test_latest')


def direct_alpha(state, src, bgr, **kw):
    model = MattingRefine('mobilenetv2', **kw)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model.eval()(src, bgr)[0]


def read_rgb01(path):
    return torch.from_numpy(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255


def test_test_py_writes_full_size_8bit_mattes_and_both_metric_tables(synth, tmp_path):
    torch.manual_seed(0)
    weights = str(tmp_path / 'ours.pth')
    torch.save(MattingRefine('mobilenetv2').state_dict(), weights)
    web = run_test_py(synth, tmp_path / 'results', weights, '--refine_mode', 'thresholding')
    html = open(os.path.join(web, 'index.html')).read()
    assert METRICS_TITLE in html and COARSE_TITLE in html and 'SAD' in html
    for name in sorted(os.listdir(os.path.join(synth, 'test', 'merged'))):
        stem = os.path.splitext(name)[0]
        h, w = cv2.imread(os.path.join(synth, 'test', 'merged', name)).shape[:2]
        for visual in ('alpha', 'fgr', 'composite', 'error', 'refined'):
            img = cv2.imread(os.path.join(web, 'images', f'{stem}_{visual}.png'), cv2.IMREAD_UNCHANGED)
            assert img.dtype == np.uint8 and img.shape[:2] == (h, w), visual


def test_test_py_loads_an_official_checkpoint_as_it_is(official, synth, tmp_path):
    state, _, path = official
    web = run_test_py(synth, tmp_path / 'results', path, '--refine_sample_pixels', '400', '--num_test', '1')
    name = sorted(os.listdir(os.path.join(synth, 'test', 'merged')))[0]
    src = read_rgb01(os.path.join(synth, 'test', 'merged', name))
    bgr = read_rgb01(os.path.join(synth, 'test', 'bgr', name))
    h, w = src.shape[2:]
    pad = (0, -w % 4, 0, -h % 4)
    pha = direct_alpha(state, F.pad(src, pad, mode='replicate'), F.pad(bgr, pad, mode='replicate'),
                       refine_sample_pixels=400)[0, 0, :h, :w]
    saved = cv2.imread(os.path.join(web, 'images', os.path.splitext(name)[0] + '_alpha.png'), cv2.IMREAD_GRAYSCALE)
    assert saved.shape == (h, w)
    assert np.abs(saved.astype(np.float32) - (pha.numpy() * 255)).max() <= 0.5 + 1e-3


def test_benchmark_rows_give_each_mode_against_full_resolution_refinement(synth, capsys):
    from scripts import benchmark
    benchmark.main(['--model', 'bgmv2', '--sizes', '64x48', '--modes', 'sampling,full', '--amp_modes', 'none',
                    '--iters', '1', '--warmup', '0', '--device', 'cpu', '--dataroot', synth, '--quality', '1',
                    '--sample_pixels', '160,3072', '--oracle'])
    lines = capsys.readouterr().out.splitlines()
    import json
    rows = [json.loads(line) for line in lines if line.startswith('{')]
    assert [(r['mode'], r['sample_pixels']) for r in rows] == [
        ('full', 80_000), ('oracle', 160), ('oracle', 3072), ('sampling', 160), ('sampling', 3072)]
    full, oracle_few, oracle_all, few, every = rows
    assert full['x_full'] == 1.0 and few['x_full'] > 0 and few['sad_vs_full'] > 0 and oracle_few['fps'] is None
    # 160 px = 10 of the 16 x 12 patches; 3072 px = every patch, which is full refinement
    assert few['refined'] == pytest.approx(10 / 192) and every['refined'] == 1.0
    assert every['sad_vs_full'] == pytest.approx(1.0, abs=1e-3) and oracle_all['sad_vs_full'] == pytest.approx(1.0, abs=1e-3)
    assert oracle_few['sad_vs_full'] != pytest.approx(1.0, abs=1e-3)
    assert all(r['peak_mem_mb'] > 0 and r['fps'] > 0 for r in rows if r['mode'] != 'oracle')
    assert any(line.startswith('| size |') for line in lines)
