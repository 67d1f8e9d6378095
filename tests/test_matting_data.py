"""Matting data: trimaps, the on-the-fly DIM protocol, the test layout, the synthetic set maker."""
import argparse
import os
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch

from data.matting_dataset import MattingDataset
from data.trimap import make_trimap, quantize_trimap
from datasets.generate_trimaps import main as generate_trimaps_main
from datasets.make_matting_dataset import make_matting_dataset
from util.errors import UserInputError

REAL_ALPHA = '/work/shared/samples/matting_real/alpha'


# ----------------------------------------------------------------------------- helpers
def make_opt(dataroot, phase='train', **kw):
    parser = MattingDataset.modify_commandline_options(argparse.ArgumentParser(), phase == 'train')
    opt = parser.parse_args([])
    opt.dataroot, opt.phase, opt.no_flip = str(dataroot), phase, False
    opt.max_dataset_size, opt.crop_size, opt.crop_sizes = float('inf'), 32, '32,48,64'
    opt.isTrain, opt.seed = phase == 'train', None
    for k, v in kw.items():
        setattr(opt, k, v)
    return opt


def write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), img)


def rand_rgb(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_train_set(root, alphas, rng, bg_size=(70, 90)):
    """One fg per alpha (uint8 arrays), random textures, two backgrounds of ``bg_size``."""
    for i, a in enumerate(alphas):
        write(os.path.join(root, 'fg', f'f{i}.png'), rand_rgb(rng, *a.shape))
        write(os.path.join(root, 'alpha', f'f{i}.png'), a)
    for j in range(2):
        write(os.path.join(root, 'bg', f'b{j}.png'), rand_rgb(rng, *bg_size))


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth')
    return make_matting_dataset(str(root), n_train=4, n_test=3, n_bg=3, size=48, seed=3)


def assert_trimap_consistent(trimap, alpha):
    """trimap (1,H,W) in {0,.5,1}; fractional alpha unknown; 1 only on alpha==1, 0 only on alpha==0."""
    assert set(torch.unique(trimap).tolist()) <= {0.0, 0.5, 1.0}
    frac = (alpha > 0) & (alpha < 1)
    assert torch.all(trimap[frac] == 0.5)
    assert torch.all(alpha[trimap == 1.0] == 1.0)
    assert torch.all(alpha[trimap == 0.0] == 0.0)


# ----------------------------------------------------------------------------- trimap.py
@pytest.mark.parametrize('mode', ['dilate', 'dilate_erode'])
def test_make_trimap_marks_every_fractional_alpha_unknown(mode):
    rng = np.random.default_rng(0)
    alpha = np.zeros((40, 40), np.uint8)
    alpha[10:30, 10:30] = 255
    alpha[12:14, 5:35] = 100   # a thin semi-transparent strip crossing the opaque square
    alpha[0, 0] = 1            # faintest possible value, at the border
    tri = make_trimap(alpha, rng, mode, (2, 3), (1, 3))
    assert set(np.unique(tri).tolist()) == {0, 128, 255}
    assert np.all(tri[(alpha > 0) & (alpha < 255)] == 128)
    assert np.all(alpha[tri == 255] == 255) and np.all(alpha[tri == 0] == 0)


def test_make_trimap_reads_uint8_and_float_alpha_alike():
    alpha = np.random.default_rng(1).integers(0, 256, size=(30, 30)).astype(np.uint8)
    alpha[alpha < 120] = 0
    alpha[alpha > 200] = 255
    for mode in ('dilate', 'dilate_erode'):
        t_u8 = make_trimap(alpha, np.random.default_rng(5), mode)
        t_f = make_trimap(alpha.astype(np.float32) / 255.0, np.random.default_rng(5), mode)
        assert np.array_equal(t_u8, t_f)


def test_dilate_erode_shrinks_foreground_that_dilate_keeps():
    alpha = np.zeros((40, 40), np.uint8)
    alpha[5:35, 5:35] = 255
    t_d = make_trimap(alpha, np.random.default_rng(0), 'dilate', (3, 3), (2, 2))
    t_de = make_trimap(alpha, np.random.default_rng(0), 'dilate_erode', (3, 3), (2, 2))
    assert np.array_equal(t_d == 255, alpha == 255)
    assert (t_de == 255).sum() < (alpha == 255).sum()
    assert np.all(t_de[alpha == 255][t_de[alpha == 255] != 255] == 128)


def test_quantize_trimap_snaps_to_nearest_and_counts_changes():
    t = np.array([[0, 3, 63, 64], [120, 128, 191, 192], [250, 255, 128, 0]], np.uint8)
    q, n = quantize_trimap(t)
    assert q.dtype == np.uint8
    assert q.tolist() == [[0, 0, 0, 128], [128, 128, 128, 255], [255, 255, 128, 0]]
    assert n == 7


def test_trimap_draws_come_only_from_the_generator_given():
    alpha = np.zeros((30, 30), np.uint8)
    alpha[10:20, 10:20] = 255
    state = np.random.get_state()
    a = [make_trimap(alpha, np.random.default_rng(7), 'dilate', (2, 5), (1, 8)) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    assert np.array_equal(np.random.get_state()[1], state[1])


# ----------------------------------------------------------------------------- training layout
def test_training_sample_image_is_alpha_fg_plus_one_minus_alpha_bg(synth):
    ds = MattingDataset(make_opt(synth))
    assert ds.layout == 'train' and len(ds) == 4
    torch.manual_seed(0)
    for i in range(len(ds)):
        d = ds[i]
        for key, ch in (('image', 3), ('fg', 3), ('bg', 3), ('alpha', 1), ('trimap', 1)):
            assert d[key].shape == (ch, 32, 32) and d[key].dtype == torch.float32
            assert 0.0 <= float(d[key].min()) and float(d[key].max()) <= 1.0
        expected = d['alpha'] * d['fg'] + (1 - d['alpha']) * d['bg']
        assert torch.allclose(d['image'], expected, atol=1e-5, rtol=0)
        assert d['path'].endswith('.png') and os.sep + 'fg' + os.sep in d['path']


@pytest.mark.parametrize('mode', ['dilate', 'dilate_erode'])
def test_training_trimap_is_ternary_and_covers_fractional_alpha(synth, mode):
    ds = MattingDataset(make_opt(synth, trimap_mode=mode, bg_per_fg=3))
    assert len(ds) == 12
    torch.manual_seed(1)
    for i in range(len(ds)):
        d = ds[i]
        assert_trimap_consistent(d['trimap'], d['alpha'])


@pytest.mark.parametrize('crop_size, crop_sizes', [(32, '32,48,64'), (16, '64')])
def test_crops_always_contain_unknown_pixels(tmp_path, crop_size, crop_sizes):
    rng = np.random.default_rng(0)
    corner = np.zeros((100, 120), np.uint8)
    corner[1:3, 116:118] = 90                 # tiny band at the top-right border, nothing else
    hard = np.zeros((90, 90), np.uint8)
    hard[:, 85:] = 255                        # hard matte, edge near the right border
    small = np.zeros((40, 50), np.uint8)      # smaller than every crop: padded
    small[38:, 20:22] = 200
    write_train_set(tmp_path, [corner, hard, small], rng, bg_size=(30, 20))
    ds = MattingDataset(make_opt(tmp_path, crop_size=crop_size, crop_sizes=crop_sizes))
    for seed in range(25):
        for i in range(len(ds)):
            d = ds.sample(i, np.random.default_rng([seed, i]))
            assert d['image'].shape == (3, crop_size, crop_size)
            assert (d['trimap'] == 0.5).any(), (seed, i)
            assert (d['alpha'] > 0).any() and (d['alpha'] < 1).any(), (seed, i)  # the transition
            assert_trimap_consistent(d['trimap'], d['alpha'])
            expected = d['alpha'] * d['fg'] + (1 - d['alpha']) * d['bg']
            assert torch.allclose(d['image'], expected, atol=1e-5, rtol=0)


def test_resize_happens_before_composite(tmp_path):
    """With crop = image (64) resized to 32 and no flip, the sample must be the composite of the
    resized parts, which here differs clearly from resizing the full-size composite."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    fg = np.where(((yy // 2 + xx // 3) % 2 == 0)[..., None], [250, 20, 20], [20, 250, 20]).astype(np.uint8)
    alpha = np.where((yy + xx) % 3 == 0, 255, np.where(xx > 40, 128, 0)).astype(np.uint8)
    bg = rand_rgb(rng, 64, 64)
    write(tmp_path / 'fg' / 'a.png', fg)
    write(tmp_path / 'alpha' / 'a.png', alpha)
    write(tmp_path / 'bg' / 'b.png', bg)
    ds = MattingDataset(make_opt(tmp_path, crop_sizes='64', crop_size=32, no_flip=True))
    d = ds.sample(0, np.random.default_rng(0))

    def load(img):  # as the dataset reads the PNG: RGB float in [0, 1]
        img = img.astype(np.float32) / 255.0
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img[..., None]

    def down(x):
        y = cv2.resize(x, (32, 32), interpolation=cv2.INTER_LINEAR)
        return y if y.ndim == 3 else y[..., None]

    F, A, B = load(fg), load(alpha), load(bg)
    right = down(A) * down(F) + (1 - down(A)) * down(B)
    wrong = down(A * F + (1 - A) * B)
    got = d['image'].permute(1, 2, 0).numpy()
    assert np.abs(right - wrong).max() > 0.05        # the two orders really differ here
    assert np.abs(got - right).max() < 1e-5
    assert np.abs(got - wrong).max() > 0.05


def test_getitem_draws_from_torch_generator_not_numpy_global(synth):
    ds = MattingDataset(make_opt(synth))
    np_state = np.random.get_state()[1].copy()
    torch.manual_seed(123)
    a = [ds[0]['image'] for _ in range(4)]
    torch.manual_seed(123)
    b = [ds[0]['image'] for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))          # repeatable under torch.manual_seed
    assert not all(torch.equal(a[0], x) for x in a[1:])           # but not the same every call
    assert np.array_equal(np.random.get_state()[1], np_state)     # numpy's global state untouched


def test_bg_per_fg_index_pairing_and_phase_folder_wins(tmp_path, synth):
    root = tmp_path / 'root'
    shutil.copytree(os.path.join(synth, 'train'), root / 'train')
    os.makedirs(root / 'fg')   # an empty top-level fg/ must be ignored: <dataroot>/<phase>/ wins
    ds = MattingDataset(make_opt(root, bg_per_fg=3, bg_choice='index'))
    assert ds.base == str(root / 'train') and len(ds) == 12
    bgs = [ds.sample(i, np.random.default_rng(i))['bg_path'] for i in range(6)]
    fgs = [ds.sample(i, np.random.default_rng(i))['path'] for i in range(6)]
    assert [os.path.basename(p) for p in bgs] == [f'bg_{i % 3:04d}.png' for i in range(6)]
    assert fgs[0] == fgs[1] == fgs[2] != fgs[3]


def test_dataloader_collates_training_batches(synth):
    ds = MattingDataset(make_opt(synth))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)))
    assert batch['image'].shape == (2, 3, 32, 32) and len(batch['path']) == 2


# ----------------------------------------------------------------------------- test layout
def test_test_layout_loads_full_resolution_with_alpha(synth):
    ds = MattingDataset(make_opt(synth, phase='test'))
    assert ds.layout == 'test' and len(ds) == 3
    for i in range(len(ds)):
        d = ds[i]
        merged = cv2.imread(d['path'])
        h, w = merged.shape[:2]
        assert d['image'].shape == (3, h, w) and d['trimap'].shape == (1, h, w)
        assert d['alpha'].shape == (1, h, w) and d['has_alpha'] is True
        assert torch.allclose(d['image'], torch.from_numpy(merged[..., ::-1].copy()).permute(2, 0, 1) / 255.0)
        assert d['name'] == os.path.splitext(os.path.basename(d['path']))[0]
        assert_trimap_consistent(d['trimap'], d['alpha'])
    assert ds.n_trimaps_quantized == 0


def test_test_layout_without_alpha_serves_inference(tmp_path, synth):
    shutil.copytree(os.path.join(synth, 'test', 'merged'), tmp_path / 'merged')
    shutil.copytree(os.path.join(synth, 'test', 'trimaps'), tmp_path / 'trimaps')
    ds = MattingDataset(make_opt(tmp_path, phase='test'))
    d = ds[0]
    assert 'alpha' not in d and d['has_alpha'] is False
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert 'alpha' not in batch and batch['image'].shape[:2] == (1, 3)


def test_stray_trimap_values_are_quantised_with_one_warning_and_counted(tmp_path, synth):
    shutil.copytree(os.path.join(synth, 'test'), tmp_path / 'test')
    tri_dir = tmp_path / 'test' / 'trimaps'
    names = sorted(os.listdir(tri_dir))
    clean = {n: cv2.imread(str(tri_dir / n), cv2.IMREAD_GRAYSCALE) for n in names}
    near = {0: 3, 128: 125, 255: 250}   # JPEG-like values next to the true ones
    n_strays = {names[0]: 40, names[2]: 7}
    for n, k in n_strays.items():
        t = clean[n].copy()
        t.reshape(-1)[:k] = [near[int(v)] for v in t.reshape(-1)[:k]]
        write(tri_dir / n, t)
    ds = MattingDataset(make_opt(tmp_path, phase='test'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert ds.scan_trimaps() == 2
        items = [ds[i] for i in range(len(ds))]
    assert len([w for w in caught if 'trimap' in str(w.message)]) == 1
    assert ds.n_trimaps_quantized == 2 and ds.n_trimap_pixels_quantized == 47
    for i, n in enumerate(names):
        expected = torch.from_numpy(clean[n]).float()
        expected = torch.where(expected == 128, torch.tensor(0.5), expected / 255.0)
        assert torch.equal(items[i]['trimap'][0], expected)


def test_missing_trimap_names_the_image(tmp_path, synth):
    shutil.copytree(os.path.join(synth, 'test'), tmp_path / 'test')
    os.remove(tmp_path / 'test' / 'trimaps' / 'test_0001.png')
    with pytest.raises(UserInputError, match='test_0001'):
        MattingDataset(make_opt(tmp_path, phase='test'))


def test_trimap_of_other_size_names_both_files(tmp_path, synth):
    shutil.copytree(os.path.join(synth, 'test'), tmp_path / 'test')
    write(tmp_path / 'test' / 'trimaps' / 'test_0002.png', np.zeros((10, 12), np.uint8))
    ds = MattingDataset(make_opt(tmp_path, phase='test'))
    with pytest.raises(UserInputError) as err:
        ds[2]
    assert os.path.join('merged', 'test_0002.png') in str(err.value)
    assert os.path.join('trimaps', 'test_0002.png') in str(err.value)


@pytest.mark.parametrize('remove, phase, folder', [
    ('train/bg', 'train', 'bg'), ('train/alpha', 'train', 'alpha'),
    ('test/trimaps', 'test', 'trimaps'), (None, 'train', 'fg')])
def test_bad_layout_raises_naming_the_folder(tmp_path, synth, remove, phase, folder):
    shutil.copytree(synth, tmp_path / 'd')
    if remove:
        shutil.rmtree(tmp_path / 'd' / remove)
    else:   # an empty fg folder
        for f in os.listdir(tmp_path / 'd' / 'train' / 'fg'):
            os.remove(tmp_path / 'd' / 'train' / 'fg' / f)
    with pytest.raises(UserInputError) as err:
        MattingDataset(make_opt(tmp_path / 'd', phase=phase))
    msg = str(err.value)
    assert os.path.join(str(tmp_path / 'd' / phase), folder) in msg and 'Expected layout' in msg


def test_foreground_without_alpha_raises_naming_it(tmp_path, synth):
    shutil.copytree(os.path.join(synth, 'train'), tmp_path / 'train')
    os.remove(tmp_path / 'train' / 'alpha' / 'fg_0002.png')
    with pytest.raises(UserInputError, match='fg_0002'):
        MattingDataset(make_opt(tmp_path))


def test_missing_dataroot_raises():
    with pytest.raises(UserInputError, match='does_not_exist'):
        MattingDataset(make_opt('/tmp/does_not_exist_matting'))


# ----------------------------------------------------------------------------- dataset maker
def _all_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, 'rb') as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def test_make_matting_dataset_is_deterministic_by_seed(tmp_path):
    kw = dict(n_train=2, n_test=2, n_bg=2, size=40)
    a = _all_bytes(make_matting_dataset(str(tmp_path / 'a'), seed=5, **kw))
    b = _all_bytes(make_matting_dataset(str(tmp_path / 'b'), seed=5, **kw))
    c = _all_bytes(make_matting_dataset(str(tmp_path / 'c'), seed=6, **kw))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    assert all(k.endswith('.png') for k in a)
    # An existing set is kept unless overwrite; overwriting with the same seed gives the same bytes.
    with pytest.raises(UserInputError, match='overwrite'):
        make_matting_dataset(str(tmp_path / 'a'), seed=6, **kw)
    assert _all_bytes(str(tmp_path / 'a')) == a
    assert _all_bytes(make_matting_dataset(str(tmp_path / 'a'), seed=5, overwrite=True, **kw)) == a


def test_synthetic_mattes_have_soft_edges_strands_and_translucent_areas(synth):
    for sub in ('train/fg', 'train/alpha', 'train/bg', 'test/merged', 'test/trimaps', 'test/alpha',
                'test/fg', 'test/bg'):
        assert os.listdir(os.path.join(synth, sub))
    alpha_dir = os.path.join(synth, 'train', 'alpha')
    for name in os.listdir(alpha_dir):
        a = cv2.imread(os.path.join(alpha_dir, name), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
        assert (a == 1).any() and (a == 0).any()
        translucent = ((a > 0.1) & (a < 0.9)).astype(np.uint8)
        # an area of partial opacity, not only one-pixel edges: survives a 3x3 erosion
        assert cv2.erode(translucent, np.ones((3, 3), np.uint8)).any()
    test = os.path.join(synth, 'test')
    for name in os.listdir(os.path.join(test, 'merged')):
        m, f, b = (cv2.imread(os.path.join(test, s, name)).astype(np.float32) for s in ('merged', 'fg', 'bg'))
        a = cv2.imread(os.path.join(test, 'alpha', name), cv2.IMREAD_UNCHANGED)[..., None] / 255.0
        assert np.abs(m - (a * f + (1 - a) * b)).max() <= 0.5 + 1e-3
        t = cv2.imread(os.path.join(test, 'trimaps', name), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(t).tolist()) <= {0, 128, 255}
        assert np.all(t[(a[..., 0] > 0) & (a[..., 0] < 1)] == 128)


def test_thin_strands_have_fractional_alpha():
    from datasets.make_matting_dataset import _strands
    s = _strands(np.random.default_rng(0), 64, 64, 32, 32, 10, 20)
    assert s.max() > 0.3 and ((s > 0) & (s < 1)).sum() > 0.8 * (s > 0).sum()


# ----------------------------------------------------------------------------- generate_trimaps
@pytest.mark.skipif(not os.path.isdir(REAL_ALPHA), reason='shared real mattes not available')
@pytest.mark.parametrize('args', [[], ['--mode', 'dilate_erode', '--kernel', '2,4', '--iterations', '3']])
def test_generate_trimaps_on_real_mattes_covers_fractional_alpha(tmp_path, args):
    assert generate_trimaps_main(['--alpha', REAL_ALPHA, '--out', str(tmp_path)] + args) == 0
    names = sorted(os.listdir(REAL_ALPHA))
    assert sorted(os.listdir(tmp_path)) == names
    for n in names:
        a = cv2.imread(os.path.join(REAL_ALPHA, n), cv2.IMREAD_UNCHANGED)
        t = cv2.imread(str(tmp_path / n), cv2.IMREAD_UNCHANGED)
        assert t.dtype == np.uint8 and t.shape == a.shape
        assert set(np.unique(t).tolist()) == {0, 128, 255}
        assert np.all(t[(a > 0) & (a < 255)] == 128)
        assert np.all(a[t == 255] == 255) and np.all(a[t == 0] == 0)


def test_generate_trimaps_reports_missing_folder(tmp_path, capsys):
    assert generate_trimaps_main(['--alpha', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')]) == 2
    assert 'nope' in capsys.readouterr().err
