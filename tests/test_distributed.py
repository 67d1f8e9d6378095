"""Multi-process training (torchrun / gloo on CPU): every rank ends with the same weights, equal to
one process training on the same global batch; ranks read disjoint shards; only rank 0 writes.

The equality runs in float64: Adam's first update is ``lr * sign(g)``, so in float32 a weight whose
gradient is below the float noise (e.g. a conv bias right before instance norm, whose gradient is
zero in exact arithmetic) may step the other way, and the next steps spread that difference. In
float64 that noise is far below every real gradient, so the comparison can be tight.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ['--ngf', '4', '--ndf', '4', '--load_size', '32', '--crop_size', '32', '--no_flip', '--serial_batches',
        '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0', '--n_epochs', '1', '--n_epochs_decay', '0',
        '--max_iters_per_epoch', '3', '--print_freq', '1000', '--display_freq', '1000', '--no_html']
RUNS = {
    'cycle_gan': ['--model', 'cycle_gan', '--netG', 'resnet_6blocks'],
    'insta_gan': ['--model', 'insta_gan', '--ins_max', '2', '--ins_per', '2'],
    # composited translation and the matting losses (host-side edge bands) keep ranks in step too
    'insta_gan_matte': ['--model', 'insta_gan', '--ins_max', '2', '--ins_per', '2', '--blend', 'matte',
                        '--lambda_alpha', '1', '--lambda_comp', '1'],
}


def run_argv(root, ck, name, run, world):
    return ['--dataroot', root, '--checkpoints_dir', ck, '--name', name, *TINY, *RUNS[run],
            '--batch_size', str(2 // world)]


def float64_batches():
    """Make networks (default dtype) and every loaded batch float64 (see the module docstring)."""
    import data
    torch.set_default_dtype(torch.float64)
    loader_iter = data.CustomDatasetDataLoader.__iter__

    def iter64(self):
        for batch in loader_iter(self):
            yield {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    data.CustomDatasetDataLoader.__iter__ = iter64


def make_uneven_root(root):
    """Two 32 px images per domain with 1 and 3 instances (A) and 3 and 1 (B): with ``--ins_max 4
    --ins_per 2`` on two ranks (batch 1 each), each rank has one side without instances in the
    second pass while the other rank has some."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for d, counts in (('A', (1, 3)), ('B', (3, 1))):
        os.makedirs(os.path.join(root, 'train' + d))
        os.makedirs(os.path.join(root, 'train' + d + '_seg'))
        for i, n in enumerate(counts):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(os.path.join(root, 'train' + d, f'{i}.png'))
            for k in range(n):
                m = np.zeros((32, 32), np.uint8)
                m[2 + 9 * k:9 + 9 * k, 4 + 6 * k:14 + 6 * k] = 255          # decreasing order is k order
                m[2 + 9 * k:9 + 9 * k, 4:4 + max(1, 8 - 3 * k)] = 255
                Image.fromarray(m).save(os.path.join(root, 'train' + d + '_seg', f'{i}_{k}.png'))
    return root


def train_and_record(argv, direct_steps=False, types=None, stand_ins=None):
    """Train; return (final state dicts, the A image paths of each batch, the initial state dicts).
    ``types``: a dict filled with each network's wrapper class name; ``stand_ins``: a list filled
    with InstaGAN's (stand_in_A, stand_in_B) of every pass."""
    import train
    from options.train_options import TrainOptions
    from util import distributed
    from util.distributed import unwrap
    from util.train_step import OptimWrapper
    seen, initial = [], {}
    opt = distributed.init_distributed(TrainOptions(argv).parse())
    if direct_steps:   # a model that calls loss.backward() and optimizer.step() itself
        def step_directly(self, losses):
            self.optimizer.zero_grad()
            sum(losses.values()).backward()
            self.optimizer.step()
        OptimWrapper.update = step_directly
    from models import find_model_using_name
    cls = find_model_using_name(opt.model)
    original = cls.set_input

    def spy(self, batch):
        if not seen:
            initial.update({n: {k: v.clone() for k, v in unwrap(net).state_dict().items()} for n, net in self.nets()})
        seen.append(list(batch['A_paths'] if 'A_paths' in batch else batch['path']))
        return original(self, batch)
    cls.set_input = spy
    forward = cls.forward
    if stand_ins is not None:
        def record(self, *args, **kwargs):
            step = forward(self, *args, **kwargs)
            if step is not None and torch.is_grad_enabled():
                stand_ins.append((step.A.part.stand_in, step.B.part.stand_in))
            return step
        cls.forward = record
    try:
        model = train.train(opt)
    finally:
        cls.set_input, cls.forward = original, forward
    if types is not None:
        types.update({n: type(net).__name__ for n, net in model.nets()})
    final = {n: {k: v.clone() for k, v in unwrap(net).state_dict().items()} for n, net in model.nets()}
    return final, seen, initial


def rank_worker(rank, port, root, ck, out):
    """One rank: the two models, the direct-step variant, and small checks of the helpers."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    float64_batches()
    from util import distributed
    from util.errors import UserInputError
    from util.train_step import OptimWrapper
    result = {'types': {}}
    for run in RUNS:
        result['types'][run] = {}
        result[run] = train_and_record(run_argv(root, ck, f'{run}_w2', run, 2), types=result['types'][run])
    # InstaGAN where each rank lacks instances on one side in the second pass
    result['uneven_stand_ins'] = []
    uneven = [*run_argv(os.path.join(out, 'uneven'), ck, 'uneven_w2', 'insta_gan', 2), '--ins_max', '4',
              '--ins_per', '2']
    result['uneven'] = train_and_record(uneven, stand_ins=result['uneven_stand_ins'])
    # AlphaGAN (ResNet-50 encoder): 2 steps at 64 px
    result['types']['alphagan'] = {}
    matting = ['--dataroot', os.path.join(out, 'matting'), '--checkpoints_dir', ck, '--name', 'alphagan_w2',
               '--model', 'alphagan', '--crop_size', '64', '--crop_sizes', '64', '--ndf', '8', '--gpu_ids', '-1',
               '--num_threads', '0', '--seed', '0', '--n_epochs', '1', '--n_epochs_decay', '0',
               '--max_iters_per_epoch', '2', '--print_freq', '1000', '--display_freq', '1000', '--no_html',
               '--serial_batches', '--batch_size', '1']
    result['alphagan'] = train_and_record(matting, types=result['types']['alphagan'])
    update = OptimWrapper.update
    try:
        result['direct'] = train_and_record(run_argv(root, ck, 'direct_w2', 'cycle_gan', 2), direct_steps=True)
    finally:
        OptimWrapper.update = update
    # --norm sync_batch needs GPUs: a clear error on CPU
    try:
        train_and_record(run_argv(root, ck, 'sync', 'cycle_gan', 2) + ['--norm', 'sync_batch'])
        result['sync_batch'] = None
    except UserInputError as e:
        result['sync_batch'] = str(e)
    # BatchNorm running statistics are averaged over the ranks
    bn = torch.nn.BatchNorm2d(2)
    bn.running_mean.fill_(float(rank))
    distributed.average_batchnorm_stats(bn)
    result['bn_mean'] = bn.running_mean.clone()
    torch.save(result, os.path.join(out, f'rank{rank}.pth'))
    distributed.cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(shapes_root, tmp_path_factory):
    """Two gloo ranks (forked from this process: no second import of torch) and one process."""
    import torch.multiprocessing as mp
    tmp = tmp_path_factory.mktemp('ddp')
    ck = str(tmp / 'ck')
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    try:
        make_uneven_root(str(tmp / 'uneven'))
        from datasets.make_matting_dataset import make_matting_dataset
        make_matting_dataset(str(tmp / 'matting'), n_train=4, n_test=1, n_bg=2, size=48, seed=0)
        mp.start_processes(rank_worker, args=(free_port(), shapes_root, ck, str(tmp)), nprocs=2,
                           start_method='fork')
        ranks = [torch.load(tmp / f'rank{r}.pth', weights_only=False) for r in range(2)]
        import data
        loader_iter = data.CustomDatasetDataLoader.__iter__
        float64_batches()
        try:
            single = {run: train_and_record(run_argv(shapes_root, ck, f'{run}_w1', run, 1)) for run in RUNS}
        finally:
            data.CustomDatasetDataLoader.__iter__ = loader_iter
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
    return ranks, single, ck


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for net in a:
        for k in a[net]:
            diff = (a[net][k] - b[net][k]).abs().max()
            assert torch.allclose(a[net][k], b[net][k], rtol=0, atol=atol), (net, k, diff)


@pytest.mark.parametrize('run', ['cycle_gan', 'insta_gan'])
def test_two_ranks_end_with_the_weights_of_one_process_on_the_global_batch(runs, run):
    ranks, single, _ = runs
    (w0, seen0, start0), (w1, seen1, _) = ranks[0][run], ranks[1][run]
    w_single, seen_single, start_single = single[run]
    # the ranks read different samples, which together are the single process's batches
    assert len(seen0) == len(seen1) == len(seen_single) == 3
    for a, b, both in zip(seen0, seen1, seen_single):
        assert a != b and sorted(a + b) == sorted(both)
    for net in w0:     # identical on both ranks, bit for bit
        assert all(torch.equal(w0[net][k], w1[net][k]) for k in w0[net]), net
    assert_same_weights(start0, start_single, atol=0)   # rank 0's initial weights, broadcast
    assert_same_weights(w0, w_single, atol=1e-7)
    for net in w0:    # and training moved every network well beyond that tolerance
        assert max((w0[net][k] - start0[net][k]).abs().max() for k in w0[net]) > 1e-4, net


def test_insta_gan_blend_matte_with_matting_losses_keeps_ranks_in_step(runs):
    """--blend matte with --lambda_alpha / --lambda_comp: identical weights on both ranks. Not the
    single process's to 1e-7: the edge-band and background means are taken per rank (DDP averages
    the ranks' means, and the ranks' bands differ in size), as for the matting models' losses."""
    ranks, single, _ = runs
    (w0, _, start0), (w1, _, _) = ranks[0]['insta_gan_matte'], ranks[1]['insta_gan_matte']
    for net in w0:
        assert all(torch.equal(w0[net][k], w1[net][k]) for k in w0[net]), net
        assert max((w0[net][k] - start0[net][k]).abs().max() for k in w0[net]) > 1e-4, net
    assert_same_weights(w0, single['insta_gan_matte'][0], atol=1e-2)   # close to it all the same


def test_networks_are_wrapped_in_distributed_data_parallel(runs):
    ranks, _, _ = runs
    for r in ranks:
        for run in [*RUNS, 'alphagan']:
            assert set(r['types'][run].values()) == {'DistributedDataParallel'}, (run, r['types'][run])


def test_alphagan_trains_in_two_processes_with_identical_weights(runs):
    ranks, _, _ = runs
    (w0, seen0, start0), (w1, seen1, _) = ranks[0]['alphagan'], ranks[1]['alphagan']
    assert len(seen0) == len(seen1) == 2 and all(a != b for a, b in zip(seen0, seen1))
    for net in w0:
        assert all(torch.equal(w0[net][k], w1[net][k]) for k in w0[net]), net
        assert max((w0[net][k] - start0[net][k]).abs().max() for k in w0[net]) > 1e-4, net


def test_insta_gan_rank_without_instances_in_a_pass_runs_a_stand_in_and_stays_in_step(runs):
    """Second pass: rank 0 has no A instance, rank 1 no B instance. Each runs that side as a zero-loss
    stand-in (DDP's all-reduce needs every rank's backward); the ranks end with identical weights."""
    ranks, _, _ = runs
    flags = [r['uneven_stand_ins'] for r in ranks]
    assert len(flags[0]) == len(flags[1]) == 2          # 1 iteration (2 images, 2 ranks) x 2 passes
    assert {f for f in flags[0] + flags[1] if any(f)} == {(True, False), (False, True)}
    (w0, _, start0), (w1, _, _) = ranks[0]['uneven'], ranks[1]['uneven']
    for net in w0:
        assert all(torch.equal(w0[net][k], w1[net][k]) for k in w0[net]), net
        assert max((w0[net][k] - start0[net][k]).abs().max() for k in w0[net]) > 1e-4, net


def test_models_that_call_optimizer_step_themselves_are_averaged_too(runs):
    """DDP averages the gradients in backward, so a model that bypasses OptimWrapper.update is averaged too."""
    ranks, single, _ = runs
    w0, w1 = ranks[0]['direct'][0], ranks[1]['direct'][0]
    for net in w0:
        assert all(torch.equal(w0[net][k], w1[net][k]) for k in w0[net]), net
    assert_same_weights(w0, single['cycle_gan'][0], atol=1e-7)


def test_rank_0_checkpoint_holds_the_random_state_of_every_rank(runs):
    """Rank 0 writes one checkpoint with each rank's RNG state and image pools, so that a resumed
    multi-process run continues every rank where it was."""
    _, _, ck = runs
    folder = os.path.join(ck, 'cycle_gan_w2')
    assert os.path.isfile(os.path.join(folder, 'latest_net_G_A.pth'))
    state = torch.load(os.path.join(folder, 'latest_train_state.pth'), weights_only=True)
    assert state['world_size'] == 2 and len(state['ranks']) == 1
    assert not torch.equal(state['rng']['torch'], state['ranks'][0]['rng']['torch'])
    assert state['ranks'][0]['image_pools'].keys() == state['image_pools'].keys()


def test_sync_batch_norm_on_cpu_is_refused_with_a_clear_error(runs):
    ranks, _, _ = runs
    for r in ranks:
        message = r['sync_batch']
        assert message is not None and '--norm sync_batch' in message and '--norm batch' in message


def test_batchnorm_running_statistics_are_averaged_over_ranks(runs):
    ranks, _, _ = runs
    assert torch.equal(ranks[0]['bn_mean'], torch.full((2,), 0.5))
    assert torch.equal(ranks[1]['bn_mean'], torch.full((2,), 0.5))


def test_epoch_sampler_deals_disjoint_shards_and_resumes_mid_epoch():
    from data import EpochSampler
    data = list(range(10))
    shards = []
    for rank in range(2):
        s = EpochSampler(data, 2, rank, shuffle=True, seed=3)
        s.set_epoch(4)
        shards.append(list(s))
    assert sorted(shards[0] + shards[1]) == data and not set(shards[0]) & set(shards[1])
    s = EpochSampler(data, 2, 0, shuffle=True, seed=3)
    s.set_epoch(4, start=2)
    assert list(s) == shards[0][2:] and len(s) == 3
    s.set_epoch(5)
    assert list(s) != shards[0]          # another epoch, another order
    s = EpochSampler(data, 1, 0, shuffle=False, seed=3)
    s.set_epoch(7)
    assert list(s) == data               # --serial_batches, one process: the plain order


@pytest.mark.slow
def test_torchrun_command_trains_insta_gan_and_only_rank_0_prints(shapes_root, tmp_path):
    ck = str(tmp_path / 'ck')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
           '--dataroot', shapes_root, '--checkpoints_dir', ck, '--name', 'tr', '--model', 'insta_gan',
           '--ngf', '4', '--ndf', '4', '--load_size', '36', '--crop_size', '32', '--gpu_ids', '-1',
           '--num_threads', '0', '--seed', '0', '--n_epochs', '1', '--n_epochs_decay', '0',
           '--max_iters_per_epoch', '2', '--print_freq', '1', '--display_freq', '1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('End of epoch 1 / 1') == 1
    assert proc.stdout.count('Networks initialized') == 1
    assert os.path.isfile(os.path.join(ck, 'tr', 'latest_net_G_A.pth'))
    assert os.path.isfile(os.path.join(ck, 'tr', 'web', 'index.html'))
    state = torch.load(os.path.join(ck, 'tr', 'latest_train_state.pth'), weights_only=True)
    assert state['world_size'] == 2 and state['total_iters'] == 4     # 2 iterations x 2 ranks x batch 1
