"""Dataset generators: the shapes dataset (and its instance judge), COCO, MHP and CCP converters."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image
from pycocotools import mask as mask_utils

from data.image_folder import output_folders
from data.unaligned_seg_dataset import UnalignedSegDataset
from datasets.generate_ccp_dataset import generate_ccp_dataset
from datasets.generate_coco_dataset import generate_coco_dataset
from datasets.generate_mhp_dataset import MHP_LABELS, generate_mhp_dataset
from datasets.make_shapes_dataset import (BACKGROUNDS, classify_instance, colour_score, make_sample,
                                          make_shapes_dataset, shape_score)
from util.errors import UserInputError

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')  # pycocotools + numpy 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = [f'{s}{d}{x}' for s in ('train', 'test') for d in 'AB' for x in ('', '_seg')]


def files_of(root):
    return sorted(os.path.relpath(os.path.join(r, f), root) for r, _, fs in os.walk(root) for f in fs)


def read(path):
    return np.asarray(Image.open(path))


def stems(folder):
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder))


def masks_of(seg_dir, stem):
    names = sorted((f for f in os.listdir(seg_dir) if f.rsplit('_', 1)[0] == stem),
                   key=lambda f: int(f.rsplit('_', 1)[1].split('.')[0]))
    return [read(os.path.join(seg_dir, f)) for f in names]


# ---------------------------------------------------------------------------- shapes
def test_shapes_same_seed_same_bytes_other_seed_other_images(tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        make_shapes_dataset(str(tmp_path / name), n_train=4, n_test=2, size=32, seed=seed)
    files = files_of(tmp_path / 'a')
    assert files == files_of(tmp_path / 'b')
    assert all((tmp_path / 'a' / f).read_bytes() == (tmp_path / 'b' / f).read_bytes() for f in files)
    assert (tmp_path / 'a/trainA/0000.png').read_bytes() != (tmp_path / 'c/trainA/0000.png').read_bytes()


def test_shapes_layout_binary_disjoint_masks_and_loadable(tmp_path):
    out = tmp_path / 'shapes'
    counts = make_shapes_dataset(str(out), n_train=6, n_test=3, size=48, seed=0)
    assert counts == {'trainA': 6, 'trainB': 6, 'testA': 3, 'testB': 3}
    assert sorted(os.listdir(out)) == sorted(FOLDERS)  # nothing else (no temporary folder left)
    for split, n in (('train', 6), ('test', 3)):
        for d in 'AB':
            assert stems(out / f'{split}{d}') == [f'{i:04d}' for i in range(n)]
            for stem in stems(out / f'{split}{d}'):
                img = read(out / f'{split}{d}' / f'{stem}.png')
                masks = masks_of(out / f'{split}{d}_seg', stem)
                assert img.shape == (48, 48, 3) and img.dtype == np.uint8
                assert 1 <= len(masks) <= 4
                stack = np.stack(masks)
                assert set(np.unique(stack)) <= {0, 255} and (stack > 0).any((1, 2)).all()
                assert (stack > 0).sum(0).max() == 1  # disjoint
                areas = (stack > 0).sum((1, 2))
                assert list(areas) == sorted(areas, reverse=True)  # k = 0 is the largest
    opt = argparse.Namespace(dataroot=str(out), phase='train', direction='AtoB', input_nc=3, output_nc=3,
                             preprocess='resize_and_crop', load_size_h=56, load_size_w=56, crop_size_h=48,
                             crop_size_w=48, no_flip=False, serial_batches=False, max_dataset_size=float('inf'),
                             isTrain=True, seed=None, max_instances=4)
    s = UnalignedSegDataset(opt)[0]
    assert s['A'].shape == (3, 48, 48) and s['A_segs'].shape == (4, 48, 48)


def test_shapes_have_touching_and_border_cut_instances_and_same_backgrounds():
    rng_samples = {d: [make_sample(d, np.random.default_rng([7, i, ord(d)]), 64) for i in range(60)] for d in 'AB'}
    touching = cut = 0
    background = {}
    for d, samples in rng_samples.items():
        levels = []
        for img, masks in samples:
            union = masks.any(0)
            grown = [np.pad(m, 1)[2:, 1:-1] | np.pad(m, 1)[:-2, 1:-1] | np.pad(m, 1)[1:-1, 2:] | np.pad(m, 1)[1:-1, :-2]
                     for m in masks]
            touching += sum((g & masks[j]).any() for i, g in enumerate(grown) for j in range(len(masks)) if j != i)
            cut += sum(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in masks)
            levels.append(img[~union].mean())
            assert img[~union].reshape(-1, 3).std(0).mean() > 3  # textured, not flat
        background[d] = np.array(levels)
    assert touching > 0 and cut > 0
    # same background law: per-image mean gray levels of the two domains agree
    assert abs(background['A'].mean() - background['B'].mean()) < 15
    assert abs(background['A'].std() - background['B'].std()) < 15


def test_shapes_background_option_gives_the_texture_the_default_would_draw_under_that_name():
    """``--background K`` replaces only the texture draw: a seed whose default draw is K gives the same
    sample with or without it, another kind gives another background (same instances' law)."""
    seen = set()
    for i in range(12):
        seed = [3, i]
        drawn = BACKGROUNDS[np.random.default_rng(seed).integers(len(BACKGROUNDS))]
        seen.add(drawn)
        default_img, default_masks = make_sample('A', np.random.default_rng(seed), 64)
        img, masks = make_sample('A', np.random.default_rng(seed), 64, background=drawn)
        assert np.array_equal(img, default_img) and np.array_equal(masks, default_masks)
        other = BACKGROUNDS[(BACKGROUNDS.index(drawn) + 1) % len(BACKGROUNDS)]
        assert not np.array_equal(make_sample('A', np.random.default_rng(seed), 64, background=other)[0], default_img)
    assert seen == set(BACKGROUNDS)


def test_instance_judge_classifies_generated_instances(tmp_path):
    out = tmp_path / 'shapes'
    make_shapes_dataset(str(out), n_train=40, n_test=0, size=64, seed=1)
    right = {'shape': 0, 'colour': 0, 'both': 0}
    total = 0
    for d in 'AB':
        for stem in stems(out / f'train{d}'):
            img = read(out / f'train{d}' / f'{stem}.png')
            for m in masks_of(out / f'train{d}_seg', stem):
                mask = m > 127
                total += 1
                right['shape'] += (shape_score(mask) >= 0.5) == (d == 'B')
                right['colour'] += (colour_score(img, mask) >= 0.5) == (d == 'B')
                label, conf = classify_instance(img, mask)
                right['both'] += label == d
                assert 0.5 <= conf <= 1
    assert total > 100
    assert all(v / total >= 0.95 for v in right.values()), right
    # the judge is not fooled by swapping: a square painted warm is not fully B
    img = np.full((32, 32, 3), 128, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    img[mask] = (215, 45, 35)
    assert shape_score(mask) > 0.9 and colour_score(img, mask) < 0.1


def test_output_folders_refuse_to_overwrite_and_leave_nothing_on_failure(tmp_path):
    make_shapes_dataset(str(tmp_path / 's'), n_train=1, n_test=1, size=32)
    with pytest.raises(UserInputError, match='--overwrite'):
        make_shapes_dataset(str(tmp_path / 's'), n_train=1, n_test=1, size=32)
    make_shapes_dataset(str(tmp_path / 's'), n_train=2, n_test=1, size=32, overwrite=True)
    assert stems(tmp_path / 's' / 'trainA') == ['0000', '0001']
    with pytest.raises(RuntimeError):
        with output_folders(str(tmp_path / 'o'), ['x'], False) as tmp:
            os.makedirs(os.path.join(tmp, 'x'))
            raise RuntimeError('interrupted')
    assert os.listdir(tmp_path / 'o') == []


def test_shapes_command_line_writes_and_refuses_existing(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, 'datasets', 'make_shapes_dataset.py'), '--out', str(tmp_path / 's'),
           '--n_train', '2', '--n_test', '1', '--size', '32']
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert 'wrote 6 images' in done.stdout and len(os.listdir(tmp_path / 's' / 'trainA')) == 2
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert again.returncode == 2 and '--overwrite' in again.stderr and 'Traceback' not in again.stderr


# ---------------------------------------------------------------------------- COCO
SHEEP, GIRAFFE, CROWD = (220, 30, 30), (30, 200, 40), (30, 40, 220)


def uncompressed_rle(mask):
    flat = mask.flatten(order='F').astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {'size': list(mask.shape), 'counts': counts}


def compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_coco(tmp_path):
    """4 images 60x40 (w x h): 1 sheep x2 + tiny sheep + crowd; 2 giraffe; 3 both; 4 crowd only."""
    h, w = 40, 60
    root = tmp_path / 'coco'
    os.makedirs(root / 'images')
    anns, images = [], []

    def add(img_id, cat, seg, crowd=0):
        anns.append({'id': len(anns) + 1, 'image_id': img_id, 'category_id': cat, 'segmentation': seg,
                     'iscrowd': crowd, 'area': 1.0, 'bbox': [0, 0, 1, 1]})

    for img_id in (1, 2, 3, 4):
        img = np.full((h, w, 3), 128, np.uint8)
        if img_id == 1:
            img[5:30, 5:25] = SHEEP
            add(1, 20, [[5, 5, 25, 5, 25, 30, 5, 30]])                    # polygon
            img[10:20, 35:55] = SHEEP
            add(1, 20, compressed_rle(box(h, w, 10, 20, 35, 55)))         # compressed RLE
            img[30:32, 30:32] = SHEEP
            add(1, 20, [[30, 30, 32, 30, 32, 32, 30, 32]])                # tiny
            img[25:38, 40:50] = CROWD
            add(1, 20, uncompressed_rle(box(h, w, 25, 38, 40, 50)), crowd=1)
            add(1, 1, [[0, 0, 4, 0, 4, 4, 0, 4]])                         # a person: other category
        if img_id == 2:
            img[8:36, 20:44] = GIRAFFE
            add(2, 25, uncompressed_rle(box(h, w, 8, 36, 20, 44)))       # uncompressed RLE, not crowd
        if img_id == 3:
            img[5:15, 10:20] = SHEEP
            add(3, 20, [[10, 5, 20, 5, 20, 15, 10, 15]])
            img[20:35, 30:50] = GIRAFFE
            add(3, 25, [[30, 20, 50, 20, 50, 35, 30, 35]])
        if img_id == 4:
            add(4, 20, uncompressed_rle(box(h, w, 5, 30, 5, 30)), crowd=1)
        Image.fromarray(img).save(root / 'images' / f'{img_id:012d}.png')
        images.append({'id': img_id, 'file_name': f'{img_id:012d}.png', 'width': w, 'height': h})
    cats = [{'id': 1, 'name': 'person'}, {'id': 20, 'name': 'sheep'}, {'id': 25, 'name': 'giraffe'}]
    ann_file = root / 'instances.json'
    ann_file.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': cats}))
    return str(root / 'images'), str(ann_file)


def colour_fraction(img, mask, colour, tol=40):
    return (np.abs(img[mask].astype(int) - colour).max(1) < tol).mean()


def test_coco_polygon_and_rle_instances_crowd_and_small_excluded(tmp_path):
    images, ann_file = make_coco(tmp_path)
    out = tmp_path / 'out'
    counts = generate_coco_dataset(images, ann_file, 'sheep', 'giraffe', str(out), 'train', (32, 32), min_area=20)
    assert counts == {'trainA': 1, 'trainB': 1}
    assert stems(out / 'trainA') == ['000000000001'] and stems(out / 'trainB') == ['000000000002']
    img = read(out / 'trainA' / '000000000001.png')
    masks = masks_of(out / 'trainA_seg', '000000000001')
    assert img.shape == (32, 32, 3) and len(masks) == 2  # crowd and tiny sheep left out
    for m in masks:
        assert set(np.unique(m)) <= {0, 255} and m.shape == (32, 32)
        assert colour_fraction(img, m > 0, SHEEP) > 0.8  # masks sit on the sheep after resize + crop
    assert (masks[0] > 0).sum() > (masks[1] > 0).sum()
    union = np.any([m > 0 for m in masks], 0)
    assert not union[np.abs(img.astype(int) - CROWD).max(-1) < 40].any()
    b_mask = masks_of(out / 'trainB_seg', '000000000002')
    assert len(b_mask) == 1 and colour_fraction(read(out / 'trainB' / '000000000002.png'), b_mask[0] > 0, GIRAFFE) > 0.8


def test_coco_min_area_as_fraction_and_keep_both(tmp_path):
    images, ann_file = make_coco(tmp_path)
    generate_coco_dataset(images, ann_file, 'sheep', 'giraffe', str(tmp_path / 'o1'), 'val', (32, 32), min_area=0)
    assert len(masks_of(tmp_path / 'o1' / 'valA_seg', '000000000001')) == 3  # tiny sheep kept
    generate_coco_dataset(images, ann_file, 'sheep', 'giraffe', str(tmp_path / 'o2'), 'val', (32, 32),
                          min_area=0.02, keep_both=True)  # 0.02 * 32 * 32 = 20 pixels
    assert len(masks_of(tmp_path / 'o2' / 'valA_seg', '000000000001')) == 2
    assert stems(tmp_path / 'o2' / 'valA') == ['000000000001', '000000000003']
    assert stems(tmp_path / 'o2' / 'valB') == ['000000000002', '000000000003']


def test_coco_bad_inputs_raise_user_input_error(tmp_path):
    images, ann_file = make_coco(tmp_path)
    with pytest.raises(UserInputError, match="'horse'.*giraffe, person, sheep"):
        generate_coco_dataset(images, ann_file, 'horse', 'giraffe', str(tmp_path / 'o'))
    with pytest.raises(UserInputError, match='missing.json'):
        generate_coco_dataset(images, str(tmp_path / 'missing.json'), 'sheep', 'giraffe', str(tmp_path / 'o'))
    os.remove(os.path.join(images, '000000000002.png'))
    with pytest.raises(UserInputError, match='000000000002.png'):
        generate_coco_dataset(images, ann_file, 'sheep', 'giraffe', str(tmp_path / 'o'), size=(32, 32))
    assert not os.path.exists(tmp_path / 'o' / 'trainA')  # nothing half-written


# ---------------------------------------------------------------------------- MHP
PANTS, SKIRT = MHP_LABELS['pants'], MHP_LABELS['skirt']


def make_mhp(tmp_path):
    """Images 30x45 (w x h): 1 two persons in pants; 2 skirt; 3 pants + skirt; 4 horizontal with pants."""
    root = tmp_path / 'LV-MHP-v1'
    os.makedirs(root / 'images')
    os.makedirs(root / 'annotations')
    people = {1: [(PANTS, (20, 40, 2, 12)), (PANTS, (15, 35, 15, 28))], 2: [(SKIRT, (25, 40, 5, 25))],
              3: [(PANTS, (20, 40, 2, 12)), (SKIRT, (20, 35, 15, 28))], 4: [(PANTS, (5, 25, 5, 40))]}
    for id_, persons in people.items():
        h, w = (30, 45) if id_ == 4 else (45, 30)
        img = np.full((h, w, 3), 100, np.uint8)
        for k, (label, (y0, y1, x0, x1)) in enumerate(persons):
            parsing = np.zeros((h, w, 3), np.uint8)  # MHP maps have 3 equal channels
            parsing[y0:y1, x0:x1] = label
            parsing[max(0, y0 - 5):y0, x0:x1] = MHP_LABELS['upper-clothes']
            Image.fromarray(parsing).save(root / 'annotations' / f'{id_}_{len(persons):02d}_{k + 1:02d}.png')
            img[y0:y1, x0:x1] = SHEEP if label == PANTS else GIRAFFE
        Image.fromarray(img).save(root / 'images' / f'{id_}.png')
    (root / 'train_list.txt').write_text('1.jpg\n2.jpg\n3.jpg\n4.jpg\n')
    (root / 'test_list.txt').write_text('2.jpg\n')
    return str(root)


def test_mhp_one_mask_per_person_and_filters(tmp_path):
    root = make_mhp(tmp_path)
    out = tmp_path / 'pants2skirt'
    counts = generate_mhp_dataset(root, str(out), size=(24, 16))
    assert counts == {'trainA': 1, 'trainB': 1, 'testA': 0, 'testB': 1}
    assert stems(out / 'trainA') == ['1'] and stems(out / 'trainB') == ['2'] and stems(out / 'testB') == ['2']
    img = read(out / 'trainA' / '1.png')
    masks = masks_of(out / 'trainA_seg', '1')
    assert img.shape == (24, 16, 3) and len(masks) == 2
    for m in masks:
        assert set(np.unique(m)) <= {0, 255}  # binary, unlike the official antialiased RGB masks
        assert colour_fraction(img, m > 0, SHEEP) > 0.8
    assert not ((masks[0] > 0) & (masks[1] > 0)).any()
    counts = generate_mhp_dataset(root, str(tmp_path / 'all'), size=(24, 16), keep_both=True, skip_horizontal=False,
                                  phases=('train',))
    assert counts == {'trainA': 3, 'trainB': 2}


def test_mhp_unknown_label_and_missing_list_are_user_errors(tmp_path):
    root = make_mhp(tmp_path)
    with pytest.raises(UserInputError, match="'jeans'.*pants"):
        generate_mhp_dataset(root, str(tmp_path / 'o'), cat_A='jeans')
    with pytest.raises(UserInputError, match='val_list.txt'):
        generate_mhp_dataset(root, str(tmp_path / 'o'), phases=('val',))


# ---------------------------------------------------------------------------- CCP
def make_ccp(tmp_path):
    """Pixel-level: 0001 jeans, 0002 skirt, 0003 both, 0004 neither; image-level: 0005 jeans, 0006 skirt."""
    root = tmp_path / 'ccp'
    for sub in ('photos', 'annotations/pixel-level', 'annotations/image-level'):
        os.makedirs(root / sub)
    sio.savemat(root / 'label_list.mat', {'label_list': np.array(['null', 'accessories', 'jeans', 'skirt'],
                                                                  dtype=object)})
    h, w = 36, 24
    regions = {1: [(2, (20, 34, 4, 20))], 2: [(3, (18, 30, 3, 21))], 3: [(2, (25, 34, 2, 10)), (3, (10, 20, 5, 15))],
               4: [(1, (0, 5, 0, 5))]}
    for id_, items in regions.items():
        gt = np.zeros((h, w), np.uint16)
        img = np.full((h, w, 3), 90, np.uint8)
        for label, (y0, y1, x0, x1) in items:
            gt[y0:y1, x0:x1] = label
            img[y0:y1, x0:x1] = 200
        sio.savemat(root / 'annotations/pixel-level' / f'{id_:04d}.mat', {'groundtruth': gt})
        Image.fromarray(img).save(root / 'photos' / f'{id_:04d}.jpg', format='JPEG')
    for id_, tags in ((5, [1, 2]), (6, [3])):
        sio.savemat(root / 'annotations/image-level' / f'{id_:04d}.mat', {'tags': np.array([tags])})
        Image.fromarray(np.full((h, w, 3), 60, np.uint8)).save(root / 'photos' / f'{id_:04d}.jpg', format='JPEG')
    return str(root), regions


def test_ccp_train_masks_from_pixel_labels_val_images_from_tags(tmp_path):
    root, regions = make_ccp(tmp_path)
    out = tmp_path / 'jeans2skirt'
    counts = generate_ccp_dataset(root, str(out))
    assert counts == {'trainA': 1, 'trainB': 1, 'valA': 1, 'valB': 1}
    assert stems(out / 'trainA') == ['0001'] and stems(out / 'trainB') == ['0002']
    assert stems(out / 'valA') == ['0005'] and stems(out / 'valB') == ['0006']
    assert os.listdir(out / 'valA_seg') == [] and os.listdir(out / 'valB_seg') == []
    mask = masks_of(out / 'trainA_seg', '0001')
    expected = np.zeros((36, 24), np.uint8)
    y0, y1, x0, x1 = regions[1][0][1]
    expected[y0:y1, x0:x1] = 255
    assert len(mask) == 1 and np.array_equal(mask[0], expected)
    assert read(out / 'trainA' / '0001.png').shape == (36, 24, 3)
    counts = generate_ccp_dataset(root, str(tmp_path / 'small'), phases=('train',), size=(18, 12), keep_both=True)
    assert counts == {'trainA': 2, 'trainB': 2}
    assert read(tmp_path / 'small' / 'trainA' / '0003.png').shape == (18, 12, 3)
    assert masks_of(tmp_path / 'small' / 'trainB_seg', '0003')[0].shape == (18, 12)


def test_ccp_unknown_label_lists_known_ones(tmp_path):
    root, _ = make_ccp(tmp_path)
    with pytest.raises(UserInputError, match="'dress'.*null, accessories, jeans, skirt"):
        generate_ccp_dataset(root, str(tmp_path / 'o'), cat_B='dress')
