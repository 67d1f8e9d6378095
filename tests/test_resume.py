"""--continue_train resumes exactly: 2 epochs straight and the same run interrupted (at an epoch's
end, or mid-epoch) then resumed give bit-identical weights, optimizer states and LR schedule.

What consumes randomness here, and is restored: the data order (per-epoch seeded sampler), the
random crop / flip / unpaired partner drawn in ``__getitem__`` from torch's global RNG (no loader
workers), the image pools' Python ``random`` draws (``--pool_size 2`` fills them at once so the
draws happen), and the pools' contents."""
import os
import shutil

import pytest
import torch

import train as train_script

MODELS = {
    'cycle_gan': ['--model', 'cycle_gan', '--netG', 'resnet_6blocks'],
    'insta_gan': ['--model', 'insta_gan'],
}


@pytest.fixture(autouse=True)
def one_thread_and_restored_determinism():
    """One intra-op thread (much faster on a busy 2-core machine); --deterministic is global state."""
    threads = torch.get_num_threads()
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn)


def argv(root, ck, name, model, *extra):
    return ['--dataroot', root, '--checkpoints_dir', str(ck), '--name', name, *MODELS[model],
            '--ngf', '4', '--ndf', '4', '--load_size', '36', '--crop_size', '32', '--gpu_ids', '-1',
            '--num_threads', '0', '--seed', '0', '--deterministic', '--pool_size', '2',
            '--n_epochs', '1', '--n_epochs_decay', '1', '--max_iters_per_epoch', '2',
            '--print_freq', '1000', '--display_freq', '1000', '--no_html',
            '--save_latest_freq', '1', '--save_by_iter', '--save_epoch_freq', '1', *extra]


def saved(folder, label):
    """(weights per network, training state) of a checkpoint."""
    nets = {n: torch.load(os.path.join(folder, f'{label}_net_{n}.pth'), weights_only=True)
            for n in ('G_A', 'G_B', 'D_A', 'D_B')}
    return nets, torch.load(os.path.join(folder, f'{label}_train_state.pth'), weights_only=True)


def assert_bitwise_equal(a, b, where=''):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def copy_checkpoint(src, dst, label, as_label):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f.startswith(f'{label}_'):
            shutil.copy(os.path.join(src, f), os.path.join(dst, as_label + f[len(label):]))


@pytest.mark.parametrize('model', list(MODELS))
def test_resumed_runs_equal_the_uninterrupted_run_bit_for_bit(model, shapes_root, tmp_path, capsys):
    ck = tmp_path / 'ck'
    assert train_script.main(argv(shapes_root, ck, 'straight', model)) == 0
    straight = str(ck / 'straight')
    final, final_state = saved(straight, 'latest')
    assert final_state['epoch'] == 2 and final_state['epoch_done'] and final_state['total_iters'] == 4
    # interrupted after epoch 1: its end-of-epoch checkpoint becomes 'latest' of a new run
    copy_checkpoint(straight, str(ck / 'epoch'), '1', 'latest')
    capsys.readouterr()
    assert train_script.main(argv(shapes_root, ck, 'epoch', model, '--continue_train')) == 0
    assert 'resuming after epoch 1 (2 samples seen)' in capsys.readouterr().out
    # interrupted mid-epoch 1, after its first batch: resume from iter_1 with --load_iter
    copy_checkpoint(straight, str(ck / 'mid'), 'iter_1', 'iter_1')
    assert train_script.main(argv(shapes_root, ck, 'mid', model, '--continue_train', '--load_iter', '1')) == 0
    assert 'resuming in epoch 1 at batch 2 (1 samples seen)' in capsys.readouterr().out
    for name in ('epoch', 'mid'):
        nets, state = saved(str(ck / name), 'latest')
        assert_bitwise_equal(nets, final, name)
        for key in ('optimizers', 'schedulers', 'image_pools', 'rng', 'epoch', 'total_iters'):
            assert_bitwise_equal(state[key], final_state[key], f'{name}:{key}')
    # the learning-rate schedule is where it was: epoch 2 decays the LR linearly to 0
    assert final_state['optimizers'][0]['param_groups'][0]['lr'] == 0.0
    assert final_state['schedulers'][0]['last_epoch'] == 2


def test_checkpoints_of_an_epoch_and_of_its_middle_record_their_position(shapes_root, tmp_path):
    ck = tmp_path / 'ck'
    assert train_script.main(argv(shapes_root, ck, 'r', 'cycle_gan', '--n_epochs_decay', '0')) == 0
    _, mid = saved(str(ck / 'r'), 'iter_1')
    _, end = saved(str(ck / 'r'), '1')
    assert (mid['epoch'], mid['epoch_iter'], mid['epoch_done'], mid['total_iters']) == (1, 1, False, 1)
    assert (end['epoch'], end['epoch_iter'], end['epoch_done'], end['total_iters']) == (1, 2, True, 2)
    assert mid['data_seed'] == end['data_seed'] == 0
    assert mid['schedulers'][0]['last_epoch'] == 0 and end['schedulers'][0]['last_epoch'] == 1


def test_resuming_with_a_longer_schedule_trains_at_the_rate_the_new_options_give(shapes_root, tmp_path, capsys,
                                                                               monkeypatch):
    """--niter 1 --niter_decay 0 ends epoch 1 at LR 0; resumed with --niter 2, epoch 2 must train at
    the full --lr (it ran at 0, the rate restored from the checkpoint, before TrainingState)."""
    from models.cycle_gan_model import CycleGANModel
    ck = tmp_path / 'ck'
    short = argv(shapes_root, ck, 'ext', 'cycle_gan', '--niter', '1', '--niter_decay', '0', '--lr', '0.001')
    assert train_script.main(short) == 0
    assert 'lr 0.0000000' in capsys.readouterr().out          # epoch 1 ended with the rate decayed to 0
    rates = []
    original = CycleGANModel.optimize_parameters

    def record(self):
        rates.append([o.param_groups[0]['lr'] for o in self.optimizers])
        return original(self)
    monkeypatch.setattr(CycleGANModel, 'optimize_parameters', record)
    longer = argv(shapes_root, ck, 'ext', 'cycle_gan', '--niter', '2', '--niter_decay', '0', '--lr', '0.001',
                  '--continue_train')
    assert train_script.main(longer) == 0
    out = capsys.readouterr().out
    assert rates and all(r == [0.001, 0.001] for r in rates), rates
    assert 'resuming after epoch 1' in out
    lines = [line for line in out.splitlines() if 'schedule options differ' in line]
    assert len(lines) == 1 and '--n_epochs 1 -> 2' in lines[0]


def test_resuming_with_the_same_options_prints_no_schedule_line(shapes_root, tmp_path, capsys):
    ck = tmp_path / 'ck'
    assert train_script.main(argv(shapes_root, ck, 'same', 'cycle_gan', '--max_iters_per_epoch', '1')) == 0
    assert train_script.main(argv(shapes_root, ck, 'same', 'cycle_gan', '--max_iters_per_epoch', '1',
                                  '--continue_train')) == 0
    assert 'schedule options differ' not in capsys.readouterr().out
