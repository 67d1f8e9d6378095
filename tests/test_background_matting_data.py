"""``--dataset_mode background_matting``: one set of random parameters keeps src / bgr / pha / fgr
aligned, the misaligned plate stays close to the background, test layout read at full size, bad
input (a plate missing or of another size) named, the built-in synthetic set read as it is."""
import argparse
import os

import cv2
import numpy as np
import pytest
import torch

from data.background_matting_dataset import BackgroundMattingDataset
from datasets.make_matting_dataset import make_matting_dataset
from util.errors import UserInputError


def opt_for(root, phase='train', crop_size=48, **kw):
    opt = argparse.Namespace(dataroot=str(root), phase=phase, isTrain=phase == 'train', crop_size=crop_size,
                             max_dataset_size=float('inf'), no_flip=False, seed=0)
    for k, v in kw.items():
        setattr(opt, k, v)
    return opt


def write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp('bm_synth')
    return make_matting_dataset(str(out), n_train=2, n_test=2, n_bg=2, size=40, seed=0)


def geometry_only(params):
    """The parameters with every photometric augmentation off (geometry kept)."""
    return dict(params, fg_jitter=None, bg_jitter=None, shadow=None, noise=None, plate_jitter=None,
                plate_affine=None)


def test_one_parameter_set_keeps_src_bgr_pha_fgr_aligned(synth):
    ds = BackgroundMattingDataset(opt_for(os.path.join(synth, 'train')))
    rng = np.random.default_rng(0)
    pha = rng.random((30, 44)).astype(np.float32)
    fgr = np.repeat(pha[..., None], 3, axis=2)               # fgr carries pha: any misalignment shows
    bg = rng.random((50, 36, 3)).astype(np.float32)
    for seed in range(20):                                   # affine, flips, blurs, sharpen all drawn
        p = geometry_only(ds.draw_params(np.random.default_rng(seed), n_backgrounds=1))
        out = ds.compose(fgr, pha, bg, p)
        assert out['src'].shape == out['bgr'].shape == out['fgr'].shape == (48, 48, 3)
        assert out['pha'].shape == (48, 48)
        np.testing.assert_allclose(out['fgr'][..., 0], out['pha'], atol=1e-6)
        a = out['pha'][..., None]
        np.testing.assert_allclose(out['src'], a * out['fgr'] + (1 - a) * out['bgr'], atol=1e-6)
        for v in out.values():
            assert v.min() >= 0 and v.max() <= 1


def test_shadow_noise_jitter_and_misaligned_plate_change_only_what_they_should(synth):
    ds = BackgroundMattingDataset(opt_for(os.path.join(synth, 'train')))
    rng = np.random.default_rng(1)
    pha = np.zeros((48, 48), np.float32)
    pha[12:36, 12:36] = 1
    fgr = rng.random((48, 48, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32) / 48
    bg = np.stack([yy, xx, 0.5 * (yy + xx)], axis=2)         # smooth: a small warp changes it little
    base = geometry_only(ds.draw_params(np.random.default_rng(2), n_backgrounds=1))
    plain = ds.compose(fgr, pha, bg, base)
    misaligned = ds.compose(fgr, pha, bg, dict(base, plate_affine={'angle': 1.0, 'shear': 0.0,
                                                                  'translate': (0.01, -0.01), 'scale': 1.0}))
    for k in ('src', 'pha', 'fgr', 'background'):
        np.testing.assert_array_equal(misaligned[k], plain[k])
    diff = np.abs(misaligned['bgr'] - plain['bgr'])
    assert 0 < diff.mean() < 0.02
    shadow = ds.compose(fgr, pha, bg, dict(base, shadow={'strength': 0.3, 'blur': 21, 'affine': {
        'angle': 0.0, 'shear': 0.0, 'translate': (0.2, 0.0), 'scale': 1.0}}))
    np.testing.assert_array_equal(shadow['bgr'], plain['bgr'])        # the plate has no shadow
    assert (shadow['src'] <= plain['src'] + 1e-6).all() and (shadow['src'] < plain['src'] - 1e-3).any()


def test_training_sample_is_one_draw_and_repeatable(synth):
    ds = BackgroundMattingDataset(opt_for(os.path.join(synth, 'train')))
    a, b = ds.sample(1, np.random.default_rng(7)), ds.sample(1, np.random.default_rng(7))
    assert set(a) == {'src', 'bgr', 'pha', 'fgr', 'path', 'bgr_path'}
    for k in ('src', 'bgr', 'pha', 'fgr'):
        assert torch.equal(a[k], b[k]) and a[k].dtype == torch.float32 and a[k].shape[1:] == (48, 48)
        assert a[k].min() >= 0 and a[k].max() <= 1
    c = ds.sample(1, np.random.default_rng(8))
    assert not torch.equal(a['src'], c['src'])


def test_builtin_synthetic_set_reads_in_both_layouts(synth):
    train = BackgroundMattingDataset(opt_for(synth))
    assert train.layout == 'train' and len(train) == 2 and train.bg_paths[0].endswith(os.path.join('bg', 'bg_0000.png'))
    test = BackgroundMattingDataset(opt_for(synth, phase='test'))
    assert test.layout == 'test' and len(test) == 2
    item = test[0]
    h, w = cv2.imread(test.src_paths[0]).shape[:2]
    assert item['src'].shape == item['bgr'].shape == (3, h, w) and item['pha'].shape == (1, h, w)
    assert item['name'] == 'test_0000'
    # the plate is the background as a second photo shows it: close to, not equal to, the true one
    bg = cv2.cvtColor(cv2.imread(os.path.join(synth, 'test', 'bg', 'test_0000.png')), cv2.COLOR_BGR2RGB)
    plate = (item['bgr'].permute(1, 2, 0).numpy() * 255).round()
    assert 0 < np.abs(plate - bg).mean() < 12      # grain shifts: a random image differs by ~85


def write_test_layout(tmp_path, sizes=((32, 40), (32, 40)), pha=True):
    rng = np.random.default_rng(0)
    for sub, (h, w) in zip(('src', 'bgr'), sizes):
        write(tmp_path / sub / 'a.png', rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if pha:
        write(tmp_path / 'pha' / 'a.png', rng.integers(0, 256, sizes[0], dtype=np.uint8))
    return tmp_path


def test_test_layout_without_ground_truth_has_no_pha(tmp_path):
    root = write_test_layout(tmp_path, pha=False)
    ds = BackgroundMattingDataset(opt_for(root, phase='test'))
    assert 'pha' not in ds[0] and ds[0]['src'].shape == (3, 32, 40)


def test_missing_plate_names_the_image_and_the_plate_expected(tmp_path):
    root = write_test_layout(tmp_path)
    write(root / 'src' / 'b.png', np.zeros((32, 40, 3), np.uint8))
    with pytest.raises(UserInputError) as e:
        BackgroundMattingDataset(opt_for(root, phase='test'))
    assert str(root / 'src' / 'b.png') in str(e.value) and os.path.join(str(root / 'bgr'), 'b') in str(e.value)


def test_plate_of_another_size_names_both_files(tmp_path):
    root = write_test_layout(tmp_path, sizes=((32, 40), (32, 44)))
    ds = BackgroundMattingDataset(opt_for(root, phase='test'))
    with pytest.raises(UserInputError) as e:
        ds[0]
    assert str(root / 'src' / 'a.png') in str(e.value) and str(root / 'bgr' / 'a.png') in str(e.value)
    assert '44x32' in str(e.value)


def test_no_plate_folder_at_all_is_named(tmp_path):
    write(tmp_path / 'src' / 'a.png', np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserInputError, match='bgr'):
        BackgroundMattingDataset(opt_for(tmp_path, phase='test'))
