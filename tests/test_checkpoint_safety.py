"""Checkpoints survive crashes and refuse unsafe content; bad losses and bad data stop training
cleanly: atomic saves under SIGKILL, weights_only loads, NaN stop/skip before the optimizer step,
loader-worker errors that name the file."""
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
import torch

import train as train_script
from models import create_model
from models.base_model import NonFiniteLoss
from options.train_options import TrainOptions
from util import checkpoint
from util.training_state import TrainingState
from util.errors import UserInputError

TINY = ['--ngf', '4', '--ndf', '4', '--load_size', '36', '--crop_size', '32', '--gpu_ids', '-1',
        '--num_threads', '0', '--seed', '0', '--print_freq', '1000', '--display_freq', '1000', '--no_html']
CYCLE = ['--model', 'cycle_gan', '--netG', 'resnet_6blocks']


def argv(root, ck, name, *extra):
    return ['--dataroot', root, '--checkpoints_dir', str(ck), '--name', name, *CYCLE, *TINY, *extra]


# ----------------------------------------------------------------------------- unsafe / corrupt files
class Payload:
    """Unpickling this runs ``open(marker, 'w')``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_checkpoint_whose_unpickling_runs_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / 'marker'
    path = tmp_path / 'ck' / 'latest_net_G_A.pth'
    path.parent.mkdir()
    torch.save({'model.1.weight': torch.zeros(1), 'x': Payload(str(marker))}, path)
    with pytest.raises(UserInputError) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value) and 'refusing to load' in str(err.value)
    assert not marker.exists()
    # through the model's loader too
    opt = TrainOptions(['--dataroot', 'x', '--checkpoints_dir', str(tmp_path), '--name', 'ck', *CYCLE,
                        *TINY]).parse()
    model = create_model(opt)
    with pytest.raises(UserInputError) as err:
        model.load_networks('latest')
    assert str(path) in str(err.value)
    assert not marker.exists()
    # control: an unrestricted load would indeed have run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_checkpoint_gives_an_error_naming_the_file(tmp_path):
    path = tmp_path / 'a.pth'
    checkpoint.save({'w': torch.arange(1000.0)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(UserInputError, match='corrupt or truncated') as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_a_network_file_from_another_save_than_its_training_state_is_detected(shapes_root, tmp_path):
    ck = tmp_path / 'ck'
    assert train_script.main(argv(shapes_root, ck, 'r', '--n_epochs', '2', '--n_epochs_decay', '0',
                                  '--max_iters_per_epoch', '1', '--save_epoch_freq', '1')) == 0
    folder = ck / 'r'
    shutil.copy(folder / '1_net_G_B.pth', folder / 'latest_net_G_B.pth')   # as if a save was cut between files
    opt = TrainOptions(argv(shapes_root, ck, 'r', '--continue_train')).parse()
    model = create_model(opt)
    model.setup(opt)
    with pytest.raises(UserInputError) as err:
        TrainingState(model).load('latest')
    assert 'latest_net_G_B.pth' in str(err.value) and 'latest_train_state.pth' in str(err.value)


# ----------------------------------------------------------------------------- kill -9 while saving
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_training(args):
    """train.py in a fresh interpreter (not a fork of this multi-threaded one, which can deadlock)."""
    code = 'import sys, torch, train; torch.set_num_threads(1); sys.exit(train.main(sys.argv[1:]))'
    return subprocess.Popen([sys.executable, '-c', code, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_killing_training_while_it_saves_never_leaves_a_partial_checkpoint(shapes_root, tmp_path):
    """Six training processes saving every iteration are killed with SIGKILL at random times;
    every checkpoint file left loads, and a resumed run cleans the temporary files up."""
    ck = tmp_path / 'ck'
    folder = ck / 'k'
    state_file = folder / 'latest_train_state.pth'
    args = argv(shapes_root, ck, 'k', '--ngf', '16', '--ndf', '16', '--n_epochs', '1000', '--save_latest_freq', '1')
    resume = argv(shapes_root, ck, 'k', '--ngf', '16', '--ndf', '16', '--n_epochs', '1', '--n_epochs_decay', '0',
                  '--max_iters_per_epoch', '1', '--continue_train')
    rng = random.Random(0)
    temps_seen = 0
    for _ in range(6):
        before = state_file.stat().st_mtime_ns if state_file.exists() else None
        proc = _start_training(args)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:   # wait for this process's first save
            if state_file.exists() and state_file.stat().st_mtime_ns != before:
                break
            time.sleep(0.01)
        saved = time.time() < deadline
        time.sleep(rng.uniform(0, 0.4))                 # then kill it at a random point of its saves
        alive = proc.poll() is None
        proc.kill()                                     # SIGKILL
        proc.wait(timeout=60)
        assert alive, f'the training process ended (status {proc.returncode}) before it was killed'
        assert saved, 'the training process saved nothing within 120 s'
        names = os.listdir(folder)
        temps_seen += sum(n.endswith('.tmp') for n in names)
        for name in names:
            if name.endswith('.pth'):
                checkpoint.load(folder / name)          # raises on a partial file
    # the interrupted run resumes from what is left, and removes the temporary files
    assert train_script.main(resume) == 0
    assert not [n for n in os.listdir(folder) if n.endswith('.tmp')]
    print(f'temporary files found after the kills: {temps_seen}')


# ----------------------------------------------------------------------------- non-finite losses
@pytest.fixture
def nan_at(monkeypatch):
    """``nan_at(model_class, k)``: batch k (1-based) of training gets NaN images."""
    def install(cls, k):
        original, count = cls.set_input, [0]

        def set_input(self, batch):
            count[0] += 1
            if count[0] == k:
                batch = dict(batch, A=batch['A'] * float('nan'))
            return original(self, batch)
        monkeypatch.setattr(cls, 'set_input', set_input)
    return install


def test_nan_loss_stops_before_the_step_and_the_last_checkpoint_stays_intact(shapes_root, tmp_path, capsys, nan_at):
    from models.cycle_gan_model import CycleGANModel
    nan_at(CycleGANModel, 3)
    ck = tmp_path / 'ck'
    rc = train_script.main(argv(shapes_root, ck, 'n', '--n_epochs', '1', '--n_epochs_decay', '0',
                                '--save_latest_freq', '1', '--save_by_iter'))
    assert rc == 3
    err = capsys.readouterr().err
    assert 'loss G_A is nan' in err and 'epoch 1, iteration 3' in err and 'latest/iter_2' in err
    folder = ck / 'n'
    assert not [n for n in os.listdir(folder) if n.startswith('iter_3')]
    for net in ('G_A', 'G_B', 'D_A', 'D_B'):     # latest is the good checkpoint of iteration 2
        assert (folder / f'latest_net_{net}.pth').read_bytes() == (folder / f'iter_2_net_{net}.pth').read_bytes()
        weights = checkpoint.load(folder / f'latest_net_{net}.pth')
        assert all(torch.isfinite(v).all() for v in weights.values())
    assert checkpoint.load(folder / 'latest_train_state.pth')['total_iters'] == 2


@pytest.mark.parametrize('model', ['cycle_gan', 'insta_gan'])
def test_nan_policy_skip_leaves_weights_and_optimizer_state_untouched(shapes_root, tmp_path, model):
    from data import create_dataset
    extra = CYCLE[2:] if model == 'cycle_gan' else []
    opt = TrainOptions(['--dataroot', shapes_root, '--checkpoints_dir', str(tmp_path), '--name', 's',
                        '--model', model, *extra, *TINY, '--nan_policy', 'skip']).parse()
    model = create_model(opt)
    model.setup(opt)
    batch = next(iter(create_dataset(opt)))
    model.set_input(batch)
    model.optimize_parameters()       # a good step first: the optimizers have state to keep
    params = {n: [p.detach().clone() for p in net.parameters()] for n, net in model.nets()}
    states = [[v.clone() for s in o.optimizer.state.values() for v in s.values()] for o in model.optimizers]
    model.set_input(dict(batch, A=batch['A'] * float('nan')))
    model.optimize_parameters()
    assert model.skipped_steps >= 2   # the G and the D step of the bad batch
    for n, net in model.nets():
        assert all(torch.equal(a, b) for a, b in zip(params[n], net.parameters())), n
    after = [[v for s in o.optimizer.state.values() for v in s.values()] for o in model.optimizers]
    for a, b in zip(states, after):
        assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))
    # NaN policy stop raises before the step instead
    for o in model.optimizers:
        o.nan_policy = 'stop'
    with pytest.raises(NonFiniteLoss):
        model.optimize_parameters()
    for n, net in model.nets():
        assert all(torch.equal(a, b) for a, b in zip(params[n], net.parameters())), n


def test_nan_policy_skip_trains_on_and_reports_the_skipped_steps(shapes_root, tmp_path, capsys, nan_at):
    from models.cycle_gan_model import CycleGANModel
    nan_at(CycleGANModel, 2)
    rc = train_script.main(argv(shapes_root, tmp_path / 'ck', 's', '--n_epochs', '1', '--n_epochs_decay', '0',
                                '--max_iters_per_epoch', '3', '--nan_policy', 'skip'))
    assert rc == 0
    assert 'epoch 1: skipped 2 optimizer steps on non-finite losses' in capsys.readouterr().out


def test_a_model_stepping_its_optimizers_itself_is_stopped_after_a_nan_step(shapes_root, tmp_path, capsys,
                                                                           nan_at, monkeypatch):
    """Models that bypass OptimWrapper.update cannot skip: training stops, with no checkpoint after it."""
    from models.cycle_gan_model import CycleGANModel
    from util.train_step import OptimWrapper

    def step_directly(self, losses):     # backward and optimizer.step() as a model doing it itself would
        self.optimizer.zero_grad()
        sum(losses.values()).backward()
        self.optimizer.step()             # (self.steps not counted: no update went through the wrapper)
    monkeypatch.setattr(OptimWrapper, 'update', step_directly)
    nan_at(CycleGANModel, 2)
    rc = train_script.main(argv(shapes_root, tmp_path / 'ck', 'd', '--n_epochs', '1', '--n_epochs_decay', '0',
                                '--max_iters_per_epoch', '3', '--nan_policy', 'skip', '--save_latest_freq', '1'))
    assert rc == 3
    err = capsys.readouterr().err
    assert 'is nan at epoch 1, iteration 2' in err and 'no checkpoint was written after this step' in err
    assert checkpoint.load(tmp_path / 'ck' / 'd' / 'latest_train_state.pth')['total_iters'] == 1


# ----------------------------------------------------------------------------- bad data in a worker
def test_unreadable_image_in_a_loader_worker_gives_the_datasets_message(shapes_root, tmp_path, capsys):
    root = tmp_path / 'data'
    shutil.copytree(shapes_root, root)
    bad = sorted((root / 'trainA').iterdir())[0]
    bad.write_bytes(b'not an image')
    rc = train_script.main(['--dataroot', str(root), '--checkpoints_dir', str(tmp_path / 'ck'), '--name', 'b',
                            *CYCLE, *TINY, '--num_threads', '1', '--serial_batches', '--n_epochs', '1',
                            '--n_epochs_decay', '0', '--max_iters_per_epoch', '1'])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith('error: Cannot read image') and str(bad) in err
    assert 'Traceback' not in err and 'DataLoader worker' not in err
