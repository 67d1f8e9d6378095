"""InstaGAN model: official outputs reproduced, sequential translation fixed where the official
code is wrong (per-sample passes, remainder pass, mean of pass losses), batch invariance."""
import os
import re
import shutil

import pytest
import torch

import test as test_script
from data import create_dataset
from models import create_model
from models.insta_gan_model import merge_masks
from options.test_options import TestOptions
from options.train_options import TrainOptions

TINY = ['--ngf', '4', '--ndf', '4', '--load_size', '36', '--crop_size', '32', '--gpu_ids', '-1',
        '--num_threads', '0', '--seed', '0']


def make_train(tmp_path, root, *extra):
    opt = TrainOptions(['--dataroot', root, '--checkpoints_dir', str(tmp_path), '--name', 'ig',
                        '--model', 'insta_gan', *TINY, *extra]).parse()
    model = create_model(opt)
    model.setup(opt)
    return opt, model


def blob_segs(n_inst, n_slots=4, size=32, start=0):
    """(n_slots, size, size) masks in {-1, 1}: ``n_inst`` squares of decreasing size, then empty slots."""
    segs = -torch.ones(n_slots, size, size)
    for k in range(n_inst):
        s = 12 - 2 * k
        y = x = 2 + 7 * (k + start) % (size - s)
        segs[k, y:y + s, x:x + s] = 1
    return segs


def batch_of(counts_A, counts_B, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(counts_A)
    return {'A': torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            'B': torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            'A_segs': torch.stack([blob_segs(c, size=size) for c in counts_A]),
            'B_segs': torch.stack([blob_segs(c, size=size, start=1) for c in counts_B]),
            'A_paths': [f'a{i}.png' for i in range(n)], 'B_paths': [f'b{i}.png' for i in range(n)]}


def test_official_checkpoints_reproduce_the_official_sequential_translation(instagan_fixture_dir, tmp_path):
    """Official-format G_A/G_B files load through load_networks, and test-time sequential
    mini-batch translation (ins_per 2, 2 passes) reproduces every official output: to 1e-5, or,
    where the official float32 output is itself further than that from the exact (float64) result,
    to within 1e-5 of its own error."""
    case = torch.load(os.path.join(instagan_fixture_dir, 'case.pth'), weights_only=True)
    (tmp_path / 'off').mkdir()
    for net in ('G_A', 'G_B'):
        shutil.copy(os.path.join(instagan_fixture_dir, f'10_net_{net}.pth'), tmp_path / 'off' / f'10_net_{net}.pth')
    opt = TestOptions(['--dataroot', 'x', '--checkpoints_dir', str(tmp_path), '--name', 'off', '--model',
                       'insta_gan', '--ngf', '8', '--epoch', '10', '--ins_max', '4', '--ins_per', '2',
                       '--gpu_ids', '-1']).parse()
    model = create_model(opt)
    model.setup(opt)
    model.eval()
    inputs = dict(case['inputs'], A_paths=['a'], B_paths=['b'])
    model.set_input(inputs)
    assert torch.equal(model.real_A, case['inputs']['real_A'])   # same instance selection
    model.test()
    out = case['outputs']
    names = ('fake_B_img', 'fake_B_seg', 'fake_A_img', 'fake_A_seg', 'rec_A_img', 'rec_A_seg', 'rec_B_img')
    ours = {n: getattr(model, n).clone() for n in names}
    # The exact values of the same computation (float64): the official float32 outputs themselves
    # are off by up to 2.4e-5 there on rec_* (two generators deep, 4 soft masks merged), so no
    # float32 code can promise 1e-5 on those; it is promised wherever the official output is exact
    # to 1e-5, and elsewhere within 1e-5 of the official output's own float32 error.
    model.netG_A.double(), model.netG_B.double()
    model.set_input({k: v.double() if torch.is_tensor(v) else v for k, v in inputs.items()})
    model.test()
    for name in names:
        exact = getattr(model, name)
        official_noise = float((out[name].double() - exact).abs().max())
        assert official_noise < 5e-5, (name, official_noise)      # the official algorithm is ours
        err = float((ours[name] - out[name]).abs().max())
        assert err <= max(1e-5, official_noise + 1e-5), (name, err, official_noise)
        assert float((ours[name].double() - exact).abs().max()) < 5e-5, name
    model.netG_A.float(), model.netG_B.float()
    model.set_input(inputs)
    model.test()
    # B has 2 instances, so the second pass has none: the official code then re-appends the first
    # pass's stale reconstructed masks and merges them twice (soft values counted double). Here
    # each instance counts once; the official figure is ours with that duplicate.
    rec = model.seq_B.rec_segs[:, :2]
    assert torch.allclose(merge_masks(torch.cat([rec, rec], 1)), out['rec_B_seg'], atol=1e-4)
    assert (model.rec_B_seg - out['rec_B_seg']).abs().max() > 0.1


def test_training_iteration_on_shapes_gives_finite_losses_and_updates(shapes_root, tmp_path):
    opt, model = make_train(tmp_path, shapes_root, '--batch_size', '2')
    before = [p.detach().clone() for p in model.netG_A.parameters()]
    before_d = [p.detach().clone() for p in model.netD_B.parameters()]
    model.set_input(next(iter(create_dataset(opt))))
    model.optimize_parameters()
    losses = model.get_current_losses()
    assert set(losses) == set(model.loss_names)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses['ctx_A'] > 0 and losses['cyc_B'] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.netG_A.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, model.netD_B.parameters()))


def test_a_side_without_instances_is_skipped_not_crashed(tmp_path):
    """Official code: no instance in the first pass -> fake_B_img_sng undefined -> crash."""
    _, model = make_train(tmp_path, 'x', '--batch_size', '2')
    model.set_input(batch_of([0, 0], [2, 1]))
    model.optimize_parameters()
    losses = model.get_current_losses()
    assert losses['G_A'] == 0 and losses['cyc_A'] == 0 and losses['ctx_A'] == 0
    assert losses['G_B'] > 0 and losses['cyc_B'] > 0
    assert torch.equal(model.fake_B_img, model.real_A_img)    # untouched: nothing to translate
    assert torch.all(model.fake_B_seg == -1)


def test_remainder_pass_translates_the_last_instance(tmp_path):
    """ins_max 3, ins_per 2: the official code runs 3 // 2 = 1 pass and drops the third instance."""
    _, model = make_train(tmp_path, 'x', '--ins_max', '3', '--ins_per', '2')
    assert model.n_passes == 2
    model.set_input(batch_of([3], [3]))
    model.test()
    assert torch.all(model.seq_A.fake_segs[:, 2] > -1)     # third slot produced by the generator
    assert not torch.equal(model.seq_A.fake_segs[:, 2], model.real_A_segs[:, 2])


def test_reported_losses_are_the_mean_over_passes(tmp_path, monkeypatch):
    _, model = make_train(tmp_path, 'x', '--ins_max', '4', '--ins_per', '1')
    seen = []
    original = model.generator_losses

    def spy(step):
        losses = original(step)
        seen.append({k: float(v.detach()) for k, v in losses.items()})
        return losses
    monkeypatch.setattr(model, 'generator_losses', spy)
    model.set_input(batch_of([4], [2]))     # A: 4 passes run; B: only passes 0 and 1 have instances
    model.optimize_parameters()
    assert len(seen) == 4
    assert model.loss_cyc_A == pytest.approx(sum(s['cyc_A'] for s in seen) / 4, rel=1e-6)
    assert model.loss_cyc_B == pytest.approx(sum(s['cyc_B'] for s in seen[:2]) / 2, rel=1e-6)
    assert seen[3]['cyc_A'] != seen[0]['cyc_A']


def test_sequential_translation_is_batch_invariant(tmp_path):
    """Each sample's translation in a batch with different instance counts equals its own."""
    _, model = make_train(tmp_path, 'x', '--ins_max', '4', '--ins_per', '2')
    model.eval()
    batch = batch_of([3, 0, 1], [1, 4, 2])
    model.set_input(batch)
    model.test()
    together = {k: getattr(model, k).clone() for k in model.visual_names}
    for i in range(3):
        model.set_input({k: (v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1]) for k, v in batch.items()})
        model.test()
        for k in model.visual_names:   # float32 kernels differ by up to ~8e-6 after two generators
            assert torch.allclose(getattr(model, k), together[k][i:i + 1], atol=5e-5), (i, k)


def test_discriminator_sees_masks_of_all_passes(tmp_path):
    _, model = make_train(tmp_path, 'x', '--ins_max', '4', '--ins_per', '2')
    model.set_input(batch_of([4], [4]))
    model.start_passes()
    model.forward(0)
    fake_mul = model.current_pass.A.fake_set
    assert fake_mul.shape[1] == 3 + 4
    assert torch.all(fake_mul[:, 5:] == -1)           # later passes not yet translated
    model.forward(1)
    fake_mul = model.current_pass.A.fake_set
    assert torch.all(fake_mul[:, 3:5] > -1) and torch.all(fake_mul[:, 5:] > -1)
    assert fake_mul.requires_grad                      # current pass keeps its graph


def test_merge_masks_is_the_union():
    a = -torch.ones(1, 2, 4, 4)
    a[0, 0, 0, 0] = 1
    a[0, 1, 0, 0] = 1
    a[0, 1, 1, 1] = 1
    m = merge_masks(a)
    assert m.shape == (1, 1, 4, 4) and m[0, 0, 0, 0] == 1 and m[0, 0, 1, 1] == 1 and m.sum() == -16 + 4


def test_official_readme_test_command_runs_on_mhp_samples(instagan_fixture_dir, mhp_samples_dir, tmp_path):
    """The official README's test command, unchanged but for --ngf (the fixture's size) and paths."""
    ck = tmp_path / 'checkpoints' / 'X'
    ck.mkdir(parents=True)
    for net in ('G_A', 'G_B'):
        shutil.copy(os.path.join(instagan_fixture_dir, f'10_net_{net}.pth'), ck / f'200_net_{net}.pth')
    results = tmp_path / 'results'
    rc = test_script.main(['--dataroot', mhp_samples_dir, '--model',
                           'insta_gan', '--name', 'X', '--loadSizeH', '240', '--loadSizeW', '160', '--fineSizeH',
                           '240', '--fineSizeW', '160', '--ins_per', '2', '--ins_max', '20', '--phase', 'sample',
                           '--epoch', '200', '--ngf', '8', '--checkpoints_dir', str(tmp_path / 'checkpoints'),
                           '--results_dir', str(results), '--gpu_ids', '-1', '--num_test', '2'])
    assert rc == 0
    page = results / 'X' / 'sample_200' / 'index.html'
    html = page.read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    names = {s.split('/')[-1].split('_', 1)[1] for s in srcs}
    assert names == {f'{v}.png' for v in ('real_A_img', 'fake_B_img', 'rec_A_img', 'real_A_seg', 'fake_B_seg',
                                          'rec_A_seg', 'real_B_img', 'fake_A_img', 'rec_B_img', 'real_B_seg',
                                          'fake_A_seg', 'rec_B_seg')}
    from PIL import Image
    for s in srcs:
        im = Image.open(page.parent / s)
        assert im.size == (160, 240)
