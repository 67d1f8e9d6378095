"""Speed options on CPU: --amp bf16 / fp16 (autocast, a GradScaler per optimizer), --channels_last,
--compile, and --deterministic; each runs real training steps."""
import os

import pytest
import torch

import train as train_script
from data import create_dataset
from models import create_model
from options.train_options import TrainOptions
from util.distributed import unwrap
from util.training_state import TrainingState

TINY = ['--ngf', '4', '--ndf', '4', '--load_size', '36', '--crop_size', '32', '--gpu_ids', '-1',
        '--num_threads', '0', '--seed', '0', '--batch_size', '2']
CYCLE = ['--model', 'cycle_gan', '--netG', 'resnet_6blocks']


def make(root, tmp_path, *extra, model=CYCLE):
    opt = TrainOptions(['--dataroot', root, '--checkpoints_dir', str(tmp_path), '--name', 'sp', *model, *TINY,
                        *extra]).parse()
    torch.manual_seed(0)
    m = create_model(opt)
    m.setup(opt)
    return opt, m, next(iter(create_dataset(opt)))


def snapshot(model):
    return {n: [p.detach().clone() for p in net.parameters()] for n, net in model.nets()}


def changed(before, model):
    return {n for n, net in model.nets() if any(not torch.equal(a, b) for a, b in zip(before[n], net.parameters()))}


@pytest.mark.parametrize('model', [CYCLE, ['--model', 'insta_gan']], ids=['cycle_gan', 'insta_gan'])
def test_bf16_autocast_trains_in_bfloat16_with_float32_weights(shapes_root, tmp_path, model):
    opt, m, batch = make(shapes_root, tmp_path, '--amp', 'bf16', model=model)
    assert not any(o.scaler.is_enabled() for o in m.optimizers)          # bf16 needs no loss scaling
    dtypes = []     # output dtype of every conv of every network during the step
    for _, net in m.nets():
        for mod in net.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                mod.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    before = snapshot(m)
    m.set_input(batch)
    m.optimize_parameters()
    losses = m.get_current_losses()
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert changed(before, m) == set(m.model_names)
    assert all(p.dtype == torch.float32 for _, net in m.nets() for p in net.parameters())
    assert dtypes and set(dtypes) == {torch.bfloat16}


def test_fp16_uses_one_grad_scaler_per_optimizer(shapes_root, tmp_path, monkeypatch):
    opt, m, batch = make(shapes_root, tmp_path, '--amp', 'fp16')
    scalers = [o.scaler for o in m.optimizers]
    assert len(scalers) == len(m.optimizers) == 2 and scalers[0] is not scalers[1]
    assert all(isinstance(s, torch.amp.GradScaler) and s.is_enabled() for s in scalers)
    calls = []
    for s in scalers:
        original = s.step
        monkeypatch.setattr(s, 'step', lambda o, *a, _f=original, **k: (calls.append(o), _f(o, *a, **k))[1])
    before = snapshot(m)
    m.set_input(batch)
    # the scaler starts at 2 ** 16 and halves on every overflow, skipping that step: a few steps
    # until both optimizers have taken a real one
    for _ in range(8):
        m.optimize_parameters()
        if changed(before, m) == set(m.model_names):
            break
    assert changed(before, m) == set(m.model_names)
    assert m.opt_G.optimizer in calls and m.opt_D.optimizer in calls    # every step went through its scaler
    assert all(torch.isfinite(torch.tensor(v)) for v in m.get_current_losses().values())
    state = TrainingState(m).state_dict({'epoch': 1, 'total_iters': 1})
    assert [s['scale'] for s in state['scalers']] == [s.get_scale() for s in scalers]   # saved for resume


def test_channels_last_converts_weights_and_gives_the_same_outputs(shapes_root, tmp_path):
    _, plain, batch = make(shapes_root, tmp_path)
    _, cl, _ = make(shapes_root, tmp_path, '--channels_last')
    conv = unwrap(cl.netG_A).model[1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = train_script.to_channels_last(batch)['A']
    assert x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(cl.netG_A(x), plain.netG_A(batch['A']), atol=1e-5)
    before = snapshot(cl)
    cl.set_input(train_script.to_channels_last(batch))
    cl.optimize_parameters()
    assert changed(before, cl) == set(cl.model_names)
    assert all(torch.isfinite(torch.tensor(v)) for v in cl.get_current_losses().values())


@pytest.mark.slow
def test_compile_trains_and_saves_plain_state_dicts(shapes_root, tmp_path):
    """torch.compile with the aot_eager backend: forward and backward graphs are traced and run
    (dynamo + AOT autograd), without generating C++ (see the inductor test below)."""
    _, m, batch = make(shapes_root, tmp_path, '--compile', '--compile_backend', 'aot_eager', '--netD', 'pixel')
    assert hasattr(m.netG_A, '_orig_mod')
    before = snapshot(m)
    m.set_input(batch)
    m.optimize_parameters()
    assert changed(before, m) == set(m.model_names)
    m.save_networks('c')
    state = torch.load(os.path.join(m.save_dir, 'c_net_G_A.pth'), weights_only=True)
    assert not any(k.startswith('_orig_mod') for k in state)
    m.load_networks('c')


@pytest.mark.skipif(os.environ.get('INDUCTOR_TESTS') != '1',
                    reason='torch.compile with inductor compiles its C++ kernels with gcc: about 3 minutes '
                           'for this tiny model on 2 CPU cores; set INDUCTOR_TESTS=1 to run it')
def test_compile_with_inductor_trains_on_cpu(shapes_root, tmp_path):
    _, m, batch = make(shapes_root, tmp_path, '--compile', '--netD', 'pixel')
    before = snapshot(m)
    m.set_input(batch)
    m.optimize_parameters()
    assert changed(before, m) == set(m.model_names)
    assert all(torch.isfinite(torch.tensor(v)) for v in m.get_current_losses().values())


def test_deterministic_flag_turns_on_deterministic_algorithms(shapes_root, tmp_path):
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        rc = train_script.main(['--dataroot', shapes_root, '--checkpoints_dir', str(tmp_path), '--name', 'd',
                                *CYCLE, *TINY, '--deterministic', '--n_epochs', '1', '--n_epochs_decay', '0',
                                '--max_iters_per_epoch', '1', '--no_html', '--print_freq', '1000',
                                '--display_freq', '1000'])
        assert rc == 0
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)


def test_speed_options_are_validated(tmp_path):
    with pytest.raises(SystemExit):
        TrainOptions(['--dataroot', 'x', '--checkpoints_dir', str(tmp_path), '--amp', 'fp8']).parse()
    opt = TrainOptions(['--dataroot', 'x', '--checkpoints_dir', str(tmp_path)]).parse()
    assert (opt.amp, opt.channels_last, opt.compile, opt.deterministic, opt.nan_policy) == \
        ('none', False, False, False, 'stop')
