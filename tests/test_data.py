"""Translation datasets: folders, shared augmentation, instance masks (unaligned[_seg], single[_seg])."""
import argparse
import os
import random
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from data.base_dataset import (apply_transform, get_params, get_transform, nearest_indices, to_grayscale,
                               transform_masks)
from data.image_folder import (as_uint8, as_unit, check_same_size, index_masks, make_dataset, match_by_stem,
                               open_image, read_gray, read_rgb)
from data.single_dataset import SingleDataset
from data.single_seg_dataset import SingleSegDataset
from data.unaligned_dataset import UnalignedDataset
from data.unaligned_seg_dataset import UnalignedSegDataset
from util.errors import UserInputError

MHP_SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'datasets', 'samples',
                           'pants2skirt_mhp')


def make_opt(dataroot='.', **kw):
    opt = dict(dataroot=str(dataroot), phase='train', direction='AtoB', input_nc=3, output_nc=3,
               preprocess='resize_and_crop', load_size_h=40, load_size_w=40, crop_size_h=32, crop_size_w=32,
               no_flip=False, max_dataset_size=float('inf'), serial_batches=False, isTrain=True, seed=None,
               max_instances=20)
    opt.update(kw)
    return argparse.Namespace(**opt)


def save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def rect_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def write_domain(root, name, samples, ext='png'):
    """samples: {id: (image (H, W, 3) uint8, [masks (H, W) uint8])} -> <root>/<name>, <name>_seg."""
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for id_, (img, masks) in samples.items():
        Image.fromarray(img).save(os.path.join(root, name, f'{id_}.{ext}'))
        for k, m in enumerate(masks):
            save(os.path.join(root, name + '_seg', f'{id_}_{k}.png'), m)


def noise_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- image folders
def test_make_dataset_lists_images_sorted_recursive_any_case(tmp_path):
    for name in ['b.PNG', 'a.jpg', 'sub/c.JpEg', 'sub/deep/d.webp', 'e.TIFF', 'f.bmp', 'notes.txt', 'g.png.bak']:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'x')
    found = make_dataset(str(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in found] == sorted(
        ['a.jpg', 'b.PNG', 'e.TIFF', 'f.bmp', 'sub/c.JpEg', 'sub/deep/d.webp'])
    assert make_dataset(str(tmp_path), max_size=2) == found[:2]


def test_make_dataset_missing_or_empty_folder_names_folder_and_layout(tmp_path):
    with pytest.raises(UserInputError, match='nope') as e:
        make_dataset(str(tmp_path / 'nope'), layout='<dataroot>/trainA/<id>.png')
    assert '<dataroot>/trainA/<id>.png' in str(e.value)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('no images')
    with pytest.raises(UserInputError, match='empty.*holds no image'):
        make_dataset(str(tmp_path / 'empty'), layout='L')


def test_index_masks_groups_by_id_in_k_order_across_subfolders(tmp_path):
    for name in ['1_0.png', '1_10.png', '1_2.png', 'a_b_0.png', 'sub/7_1.png', 'sub/7_0.png', 'bad.png', '3_x.png']:
        save(str(tmp_path / name), np.zeros((2, 2)))
    index = index_masks(str(tmp_path))
    names = {k: [os.path.relpath(p, tmp_path) for p in v] for k, v in index.items()}
    assert names == {'1': ['1_0.png', '1_2.png', '1_10.png'], 'a_b': ['a_b_0.png'],
                     'sub/7': ['sub/7_0.png', 'sub/7_1.png']}


def test_flat_listing_skips_sub_folders_and_names_the_role(tmp_path):
    for name in ['b.png', 'a.jpg', 'sub/c.png']:
        save(str(tmp_path / name), np.zeros((2, 2)))
    assert [os.path.basename(p) for p in make_dataset(str(tmp_path), recursive=False)] == ['a.jpg', 'b.png']
    with pytest.raises(UserInputError, match=r"'.*nope' \(alpha matte images\) does not exist"):
        make_dataset(str(tmp_path / 'nope'), recursive=False, role='alpha matte')


def test_match_by_stem_pairs_sibling_folders_and_names_a_missing_partner(tmp_path):
    for name in ['src/1.jpg', 'src/2.png', 'pha/2.png', 'pha/1.png', 'bgr/1.png', 'bgr/2.jpg']:
        save(str(tmp_path / name), np.zeros((2, 2)))
    found = match_by_stem({'image': str(tmp_path / 'src'), 'alpha': str(tmp_path / 'pha'),
                           'background': str(tmp_path / 'bgr')})
    rel = {k: [os.path.relpath(p, tmp_path) for p in v] for k, v in found.items()}
    assert rel == {'image': ['src/1.jpg', 'src/2.png'], 'alpha': ['pha/1.png', 'pha/2.png'],
                   'background': ['bgr/1.png', 'bgr/2.jpg']}
    assert match_by_stem({'image': str(tmp_path / 'src'), 'alpha': str(tmp_path / 'pha')}, max_size=1)['alpha'] == [
        str(tmp_path / 'pha' / '1.png')]
    os.remove(tmp_path / 'pha' / '2.png')
    with pytest.raises(UserInputError) as e:
        match_by_stem({'image': str(tmp_path / 'src'), 'alpha': str(tmp_path / 'pha')}, hints={'alpha': 'add it'})
    message = str(e.value)
    assert str(tmp_path / 'src' / '2.png') in message and os.path.join(str(tmp_path / 'pha'), '2') in message
    assert 'add it' in message
    save(str(tmp_path / 'bgr' / '1.jpg'), np.zeros((2, 2)))   # bgr/1.png and bgr/1.jpg: which one?
    with pytest.raises(UserInputError, match=r"1\.jpg.*1\.png|1\.png.*1\.jpg"):
        match_by_stem({'image': str(tmp_path / 'src'), 'background': str(tmp_path / 'bgr')})


# ---------------------------------------------------------------------------- reading
def test_reading_matches_pil_for_8_bit_files(tmp_path):
    """The one decoder (OpenCV) gives what PIL's ``Image.open(...).convert(...)`` gives: RGB, gray,
    palette, alpha and 1-bit PNGs bit for bit (colour to gray with PIL's luma); JPEG up to the
    IDCT's rounding (identical with the libjpeg-turbo of both here)."""
    rgb = noise_image(64, 96, 4)   # enough pixels for OpenCV's own luma to differ from PIL's somewhere
    gray = rgb[..., 0]
    images = {'rgb.png': Image.fromarray(rgb), 'gray.png': Image.fromarray(gray),
              'rgba.png': Image.fromarray(np.dstack([rgb, gray])),
              'la.png': Image.fromarray(np.dstack([gray, gray]), 'LA'),
              'p.png': Image.fromarray(rgb).quantize(37), 'one.png': Image.fromarray(gray > 128),
              'rgb.jpg': Image.fromarray(rgb), 'gray.jpg': Image.fromarray(gray)}
    for name, img in images.items():
        img.save(tmp_path / name)
        with Image.open(tmp_path / name) as ref:
            ref_rgb, ref_gray = np.asarray(ref.convert('RGB')), np.asarray(ref.convert('L'))
        got_rgb, got_gray = np.asarray(open_image(str(tmp_path / name))), read_gray(str(tmp_path / name))
        assert got_rgb.dtype == got_gray.dtype == np.uint8 and got_rgb.shape == ref_rgb.shape, name
        tolerance = 3 if name.endswith('.jpg') else 0
        assert np.abs(got_rgb.astype(int) - ref_rgb).max() <= tolerance, name
        assert np.abs(got_gray.astype(int) - ref_gray).max() <= tolerance, name
        assert np.array_equal(open_image(str(tmp_path / name), 'L'), got_gray), name


def test_exif_orientation_is_not_applied(tmp_path):
    """As PIL's Image.open: a rotated-by-EXIF photo keeps its stored size, so its masks still fit."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(noise_image(20, 30)).save(tmp_path / 'r.jpg', exif=exif)
    assert open_image(str(tmp_path / 'r.jpg')).size == (30, 20)


def test_sixteen_bit_files_keep_their_depth(tmp_path):
    import cv2
    gray = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 109
    colour = np.stack([gray, gray[::-1], 65535 - gray], -1)
    cv2.imwrite(str(tmp_path / 'g16.png'), gray)
    cv2.imwrite(str(tmp_path / 'c16.png'), colour[..., ::-1])   # cv2 writes BGR
    assert np.array_equal(read_gray(str(tmp_path / 'g16.png')), gray)
    assert np.array_equal(read_rgb(str(tmp_path / 'c16.png')), colour)
    luma_8 = np.asarray(Image.fromarray(as_uint8(colour)).convert('L')).astype(int)
    assert np.abs(as_uint8(read_gray(str(tmp_path / 'c16.png'))).astype(int) - luma_8).max() <= 1
    assert np.allclose(as_unit(gray), gray / 65535.0)
    assert np.array_equal(as_uint8(gray), np.round(gray / 257.0).astype(np.uint8))
    assert np.array_equal(np.asarray(open_image(str(tmp_path / 'g16.png')))[..., 0], as_uint8(gray))


def test_unreadable_missing_or_mismatched_files_are_named(tmp_path):
    (tmp_path / 'bad.png').write_bytes(b'\x89PNG but not really')
    (tmp_path / 'empty.png').write_bytes(b'')
    for name in ('bad.png', 'empty.png', 'missing.png'):
        with pytest.raises(UserInputError, match=rf"Cannot read trimap '.*{name}'"):
            read_gray(str(tmp_path / name), role='trimap')
    with pytest.raises(UserInputError, match=r"'m\.png' is 4x3 but 'i\.png' is 5x3 .*resize or regenerate 'm\.png'"):
        check_same_size((3, 5, 3), (3, 4), 'i.png', 'm.png')
    check_same_size((3, 5, 3), (3, 5), 'i.png', 'm.png')


# ---------------------------------------------------------------------------- parameters
def test_params_come_from_torch_generator_not_python_random():
    opt = make_opt(load_size_h=80, load_size_w=120, crop_size_h=40, crop_size_w=60)
    draws = []
    for torch_seed in (0, 0, 1):
        random.seed(123)  # the official code's reseed: must have no say here
        torch.manual_seed(torch_seed)
        draws.append([get_params(opt, (50, 50)) for _ in range(20)])
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [get_params(opt, (9, 9), g1) for _ in range(5)] == [get_params(opt, (9, 9), g2) for _ in range(5)]


def test_params_cover_every_crop_position_and_both_flips():
    opt = make_opt(load_size_h=6, load_size_w=7, crop_size_h=4, crop_size_w=4)
    g = torch.Generator().manual_seed(0)
    params = [get_params(opt, (30, 20), g) for _ in range(400)]
    assert {p['crop'][:2] for p in params} == {(x, y) for x in range(4) for y in range(3)}
    assert {p['flip'] for p in params} == {True, False}
    assert all(p['resize'] == (7, 6) and p['crop'][2:] == (4, 4) for p in params)


def test_test_time_params_are_centred_and_unflipped():
    opt = make_opt(isTrain=False, load_size_h=10, load_size_w=12, crop_size_h=4, crop_size_w=6)
    params = {str(get_params(opt, (30, 20))) for _ in range(20)}
    assert params == {str({'size': (30, 20), 'resize': (12, 10), 'crop': (3, 3, 6, 4), 'flip': False})}


@pytest.mark.parametrize('preprocess, size, out_hw', [
    ('resize_and_crop', (300, 450), (48, 32)),   # non-square load 60x40 -> crop 48x32
    ('crop', (50, 70), (48, 32)),
    ('scale_width', (80, 100), (75, 60)),        # width -> load_size_w 60, height in proportion
    ('scale_width_and_crop', (80, 100), (48, 32)),
    ('none', (43, 30), (32, 44)),                # sides rounded to multiples of 4
])
def test_output_sizes_for_each_preprocess_mode(preprocess, size, out_hw):
    opt = make_opt(preprocess=preprocess, load_size_h=60, load_size_w=60, crop_size_h=48, crop_size_w=32)
    p = get_params(opt, size)
    img = noise_image(size[1], size[0])
    assert apply_transform(img, opt, p, 'image').shape == (3, *out_hw)
    assert transform_masks(np.zeros((2, size[1], size[0]), bool), p).shape == (2, *out_hw)


def test_crop_larger_than_image_raises_user_input_error():
    opt = make_opt(preprocess='crop', crop_size_h=64, crop_size_w=64)
    with pytest.raises(UserInputError, match='small.jpg.*smaller than the crop'):
        get_params(opt, (50, 80), name='small.jpg')


def test_mask_geometry_is_pil_nearest_with_the_same_crop_and_flip():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    for resize, crop, flip in [((80, 61), (5, 7, 64, 48), True), ((20, 15), (2, 1, 16, 12), False)]:
        p = {'size': (53, 37), 'resize': resize, 'crop': crop, 'flip': flip}
        x, y, w, h = crop
        ref = Image.fromarray(mask).resize(resize, Image.NEAREST).crop((x, y, x + w, y + h))
        ref = np.asarray(ref.transpose(Image.FLIP_LEFT_RIGHT) if flip else ref)
        assert np.array_equal(transform_masks(mask[None], p)[0].numpy(), ref)
        assert np.array_equal(np.asarray(mask)[np.ix_(*nearest_indices(p))], ref)


def test_image_values_in_minus_one_one_and_masks_stay_binary():
    opt = make_opt(load_size_h=50, load_size_w=45)
    img = noise_image(33, 27)
    mask = np.random.default_rng(1).random((33, 27)) > 0.5
    p = get_params(opt, (27, 33))
    t = apply_transform(img, opt, p, 'image')
    assert t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1 and t.min() < -0.9 and t.max() > 0.9
    assert set(apply_transform(mask, opt, p, 'mask').unique().tolist()) == {-1.0, 1.0}
    assert transform_masks(mask[None], p).dtype == torch.bool


def test_to_grayscale_is_luma_and_get_transform_gives_one_channel():
    colour = torch.tensor([0.2, -0.6, 1.0]).view(3, 1, 1).expand(3, 4, 5)
    gray = to_grayscale(colour)
    assert gray.shape == (1, 4, 5)
    assert torch.allclose(gray, torch.full((1, 4, 5), 0.299 * 0.2 - 0.587 * 0.6 + 0.114))
    t = get_transform(make_opt(), grayscale=True)(noise_image(40, 40))
    assert t.shape == (1, 32, 32)


# ---------------------------------------------------------------------------- shared augmentation
PALETTE = np.array([[240, 210, 40], [200, 240, 230], [30, 40, 110], [90, 20, 30]], np.uint8)  # 2 bright, 2 dark
BRIGHT = {0, 1}


def block_sample(seed, h=64, w=96, block=16):
    """Image of flat-colour blocks; one instance mask per bright block (masks from the image's own pixels)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(PALETTE), (h // block, w // block))
    img = PALETTE[np.kron(labels, np.ones((block, block), int))]
    masks = [rect_mask(h, w, by * block, (by + 1) * block, bx * block, (bx + 1) * block)
             for by, bx in zip(*np.nonzero(np.isin(labels, list(BRIGHT))))]
    return img, masks


def agreement_on_clean_pixels(image, segs):
    """Where the returned image shows an unmixed palette colour, does 'bright' equal 'in a mask'?

    Interpolation mixes colours only next to block edges; a pixel that still has a palette colour
    comes from inside one block, where nearest neighbour picks that same block for the masks.
    Returns (agreement, fraction of clean pixels).
    """
    rgb = (image.permute(1, 2, 0).numpy() + 1) * 127.5
    dist = np.abs(rgb[:, :, None, :] - PALETTE[None, None].astype(float)).max(-1)
    clean = dist.min(-1) < 6
    bright = np.isin(dist.argmin(-1), list(BRIGHT))
    in_mask = (segs > 0).any(0).numpy()
    return (bright == in_mask)[clean].mean(), clean.mean()


@pytest.mark.parametrize('preprocess, load_hw', [
    ('resize_and_crop', (80, 120)),   # upscale then crop
    ('resize_and_crop', (56, 84)),    # downscale (antialiased) then crop
    ('scale_width_and_crop', (0, 132)),
    ('crop', (0, 0)),
])
def test_image_and_masks_stay_aligned_under_random_resize_crop_flip(tmp_path, preprocess, load_hw):
    root = tmp_path / 'data'
    for d in 'AB':
        os.makedirs(root / f'train{d}')
        write_domain(str(root), f'train{d}', {f'{i}': block_sample(10 * i + (d == 'B')) for i in range(4)})
    opt = make_opt(root, preprocess=preprocess, load_size_h=load_hw[0], load_size_w=load_hw[1],
                   crop_size_h=48, crop_size_w=80, max_instances=24)
    ds = UnalignedSegDataset(opt)
    torch.manual_seed(0)
    outcomes = set()
    for i in range(60):
        s = ds[i]
        for key in 'AB':
            agree, clean = agreement_on_clean_pixels(s[key], s[key + '_segs'])
            assert clean > 0.6
            assert agree == 1.0, (i, key, agree)
        outcomes.add(s['A'].numpy().tobytes())
    assert len(outcomes) > 10  # the augmentation did vary


def test_alignment_check_fails_when_image_and_masks_draw_separately():
    """What the official reseed approach does under torchvision >= 0.8: independent draws for the
    image and the masks. The same check then fails on most samples, so the test above has teeth."""
    opt = make_opt(load_size_h=80, load_size_w=120, crop_size_h=48, crop_size_w=80)
    torch.manual_seed(0)
    failures = 0
    for i in range(30):
        img, masks = block_sample(i)
        stack = np.stack(masks) > 0
        p_img, p_mask = get_params(opt, (96, 64)), get_params(opt, (96, 64))
        image = apply_transform(img, opt, p_img, 'image')
        segs = transform_masks(stack, p_mask).float() * 2 - 1
        failures += agreement_on_clean_pixels(image, segs)[0] < 0.99
    assert failures >= 25


# ---------------------------------------------------------------------------- instance datasets
def two_domain_root(tmp_path, name='data', ext='png', h=32, w=32):
    """trainA: 2 images with masks; trainB: 1 image with a mask."""
    root = tmp_path / name
    os.makedirs(root / 'trainA')
    os.makedirs(root / 'trainB')
    write_domain(str(root), 'trainA', {
        '1': (noise_image(h, w, 1), [rect_mask(h, w, 0, 8, 0, 8), rect_mask(h, w, 10, 30, 10, 30)]),
        '2': (noise_image(h, w, 2), [rect_mask(h, w, 4, 12, 4, 20)])}, ext)
    write_domain(str(root), 'trainB', {'9': (noise_image(h, w, 9), [rect_mask(h, w, 2, 6, 2, 6)])}, ext)
    return root


def n_instances(segs):
    return int(((segs > 0).flatten(1).any(1)).sum())


def test_seg_folder_found_when_capital_a_appears_elsewhere_in_path(tmp_path):
    root = two_domain_root(tmp_path, name='DATA_A')  # official: 'DATA_A/trainA' -> 'DATA_A_seg/trainA_seg'
    ds = UnalignedSegDataset(make_opt(root, isTrain=False, load_size_h=32, load_size_w=32))
    s = ds[0]
    assert s['A_paths'].endswith(os.path.join('DATA_A', 'trainA', '1.png'))
    assert n_instances(s['A_segs']) == 2 and n_instances(s['B_segs']) == 1


def test_jpg_images_find_their_png_masks(tmp_path):
    root = two_domain_root(tmp_path, ext='jpg')
    ds = UnalignedSegDataset(make_opt(root, isTrain=False, load_size_h=32, load_size_w=32))
    assert [n_instances(ds[i]['A_segs']) for i in range(2)] == [2, 1]


def test_sample_has_documented_keys_shapes_and_ranges(tmp_path):
    root = two_domain_root(tmp_path)
    ds = UnalignedSegDataset(make_opt(root, max_instances=5, input_nc=1))
    s = ds[1]
    assert set(s) == {'A', 'B', 'A_segs', 'B_segs', 'A_paths', 'B_paths'}
    assert s['A'].shape == (1, 32, 32) and s['B'].shape == (3, 32, 32)
    assert s['A_segs'].shape == s['B_segs'].shape == (5, 32, 32)
    assert s['A'].min() >= -1 and s['A'].max() <= 1
    assert set(torch.cat([s['A_segs'], s['B_segs']]).unique().tolist()) == {-1.0, 1.0}
    assert len(ds) == 2


def test_images_without_masks_skipped_in_training_kept_at_test(tmp_path, capsys):
    root = two_domain_root(tmp_path)
    save(str(root / 'trainA' / '3.png'), noise_image(32, 32, 3))  # no mask
    train = UnalignedSegDataset(make_opt(root, unmasked='skip'))
    assert len(train) == 2 and all(not p.endswith('3.png') for p, _ in train.A.items)
    out = capsys.readouterr().out
    assert out.count('1 of 3 images have no mask') == 1 and 'skipped' in out
    test = UnalignedSegDataset(make_opt(root, isTrain=False, unmasked='keep', load_size_h=32, load_size_w=32))
    assert len(test) == 3
    s = test[2]
    assert s['A_paths'].endswith('3.png') and bool((s['A_segs'] == -1).all())
    assert 'kept with all mask slots empty' in capsys.readouterr().out


def test_unmasked_default_depends_on_training(tmp_path):
    parser = argparse.ArgumentParser()
    assert UnalignedSegDataset.modify_commandline_options(parser, True).parse_args([]).unmasked == 'skip'
    parser = argparse.ArgumentParser()
    args = UnalignedSegDataset.modify_commandline_options(parser, False).parse_args([])
    assert args.unmasked == 'keep' and args.max_instances == 20


def test_antialiased_rgb_masks_are_binarised_at_half_range():
    opt = make_opt(MHP_SAMPLES, phase='sample', isTrain=False, load_size_h=450, load_size_w=300,
                   crop_size_h=450, crop_size_w=300)
    ds = UnalignedSegDataset(opt)
    s = ds[2]
    stem = os.path.splitext(os.path.basename(s['A_paths']))[0]
    files = sorted(f for f in os.listdir(os.path.join(MHP_SAMPLES, 'sampleA_seg')) if f.startswith(stem + '_'))
    raw = [Image.open(os.path.join(MHP_SAMPLES, 'sampleA_seg', f)) for f in files]
    assert raw[0].mode == 'RGB' and len(np.unique(np.asarray(raw[0]))) > 2  # really antialiased RGB
    expected = sorted((np.asarray(m.convert('L')) >= 128 for m in raw), key=lambda m: -m.sum())
    assert s['A'].shape == (3, 450, 300) and s['A_segs'].shape == (20, 450, 300)
    assert set(s['A_segs'].unique().tolist()) == {-1.0, 1.0}
    for k, m in enumerate(expected):
        assert np.array_equal(s['A_segs'][k].numpy() > 0, m)
    assert bool((s['A_segs'][len(expected):] == -1).all())


def test_mask_size_mismatch_names_both_files(tmp_path):
    root = two_domain_root(tmp_path)
    save(str(root / 'trainA_seg' / '2_1.png'), np.zeros((20, 32)))
    ds = UnalignedSegDataset(make_opt(root, serial_batches=True))
    with pytest.raises(UserInputError) as e:
        ds[1]
    assert os.path.join('trainA_seg', '2_1.png') in str(e.value) and os.path.join('trainA', '2.png') in str(e.value)


def test_unreadable_image_names_the_file(tmp_path):
    root = two_domain_root(tmp_path)
    (root / 'trainA' / '2.png').write_bytes(b'not a png at all')
    ds = UnalignedSegDataset(make_opt(root, serial_batches=True))
    with pytest.raises(UserInputError, match=r'Cannot read image .*trainA.2\.png'):
        ds[1]


def test_too_many_instances_keep_the_largest_with_one_warning(tmp_path):
    root = tmp_path / 'data'
    sides = [3, 9, 5, 11, 7]  # k order is not area order
    for d in 'AB':
        os.makedirs(root / f'train{d}')
        write_domain(str(root), f'train{d}', {
            str(i): (noise_image(32, 32, i), [rect_mask(32, 32, 0, s, 0, s) for s in sides]) for i in range(3)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ds = UnalignedSegDataset(make_opt(root, isTrain=False, load_size_h=32, load_size_w=32, max_instances=3))
        samples = [ds[i] for i in range(3) for _ in range(3)]
    assert len(caught) == 1
    assert '6 images' in str(caught[0].message) and '3 in trainA' in str(caught[0].message)
    for s in samples:
        areas = (s['A_segs'] > 0).flatten(1).sum(1).tolist()
        assert areas == [121, 81, 49]


def test_instances_ordered_by_area_after_crop_and_cropped_away_become_empty(tmp_path):
    root = tmp_path / 'data'
    h = w = 40
    masks = [rect_mask(h, w, 0, 3, 0, 3),         # in the corner: cropped away by the centre crop
             rect_mask(h, w, 10, 14, 10, 14),     # 16 px, stays
             rect_mask(h, w, 30, 38, 30, 38)]     # 64 px, but only 4x4 inside the 24x24 centre crop
    for d in 'AB':
        os.makedirs(root / f'train{d}')
        write_domain(str(root), f'train{d}', {'1': (noise_image(h, w), masks + [rect_mask(h, w, 20, 29, 20, 29)])})
    ds = UnalignedSegDataset(make_opt(root, isTrain=False, preprocess='crop', crop_size_h=24, crop_size_w=24,
                                      max_instances=5))
    areas = (ds[0]['A_segs'] > 0).flatten(1).sum(1).tolist()
    assert areas == [81, 16, 4, 0, 0]


def test_unaligned_pairs_serially_or_by_torch_draws(tmp_path):
    root = tmp_path / 'data'
    for d, n in (('A', 3), ('B', 5)):
        for i in range(n):
            save(str(root / f'train{d}' / f'{i}.png'), noise_image(20, 24, i))
    ds = UnalignedDataset(make_opt(root, serial_batches=True, direction='BtoA', output_nc=1))
    assert len(ds) == 5
    s = ds[4]
    assert os.path.basename(s['A_paths']) == '1.png' and os.path.basename(s['B_paths']) == '4.png'
    assert s['A'].shape == (1, 32, 32) and s['B'].shape == (3, 32, 32)  # BtoA: A has output_nc channels
    ds = UnalignedDataset(make_opt(root))
    torch.manual_seed(3)
    first = [ds[0]['B_paths'] for _ in range(30)]
    torch.manual_seed(3)
    assert [ds[0]['B_paths'] for _ in range(30)] == first and len(set(first)) > 2


def test_single_reads_dataroot_itself(tmp_path):
    save(str(tmp_path / 'x' / 'b.png'), noise_image(40, 50))
    save(str(tmp_path / 'x' / 'a.png'), noise_image(40, 50))
    ds = SingleDataset(make_opt(tmp_path / 'x', isTrain=False, phase='test'))
    s = ds[0]
    assert len(ds) == 2 and set(s) == {'A', 'A_paths'} and s['A_paths'].endswith('a.png')
    assert s['A'].shape == (3, 32, 32)


def test_single_seg_reads_one_domain_with_masks(tmp_path):
    root = two_domain_root(tmp_path)
    ds = SingleSegDataset(make_opt(root, isTrain=False, load_size_h=32, load_size_w=32, max_instances=4))
    s = ds[0]
    assert set(s) == {'A', 'A_segs', 'A_paths'} and s['A_segs'].shape == (4, 32, 32) and n_instances(s['A_segs']) == 2
    ds = SingleSegDataset(make_opt(root, isTrain=False, direction='BtoA', load_size_h=32, load_size_w=32))
    assert len(ds) == 1 and ds[0]['A_paths'].endswith('9.png')
    other = tmp_path / 'my_masks'
    shutil.copytree(root / 'trainA_seg', other)
    shutil.rmtree(root / 'trainA_seg')
    ds = SingleSegDataset(make_opt(root, isTrain=False, seg_dir=str(other), load_size_h=32, load_size_w=32))
    assert n_instances(ds[0]['A_segs']) == 2


def test_dataloader_batches_samples(tmp_path):
    root = two_domain_root(tmp_path)
    ds = UnalignedSegDataset(make_opt(root, max_instances=4))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch['A'].shape == (2, 3, 32, 32) and batch['A_segs'].shape == (2, 4, 32, 32)
    assert len(batch['A_paths']) == 2
