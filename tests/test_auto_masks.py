"""Masks without annotations: the COCO Mask R-CNN mask maker, --auto_masks in the instance
datasets and test.py, and datasets/make_auto_masks.py.

No weights can be downloaded here, so the detector is torchvision's maskrcnn_resnet50_fpn,
randomly initialised, then rigged through its state dict so that its output is known: every
proposal covers the whole image, the box head scores 'person' and 'dog' above all other labels
and turns the whole image into a centred box of a chosen relative size per label, and the mask
head fills its box. The real model code runs end to end; only the weights are made up.
"""
import math
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
from data.single_seg_dataset import SingleSegDataset
from data.unaligned_seg_dataset import UnalignedSegDataset
from datasets.make_auto_masks import main as make_auto_masks_main
from datasets.make_auto_masks import make_auto_masks
from util.auto_masks import COCO_CATEGORIES, MaskDetector, parse_categories, select_instances
from util.errors import UserInputError

PERSON, DOG = COCO_CATEGORIES.index('person'), COCO_CATEGORIES.index('dog')
# label: (box side as a fraction of the image side, class logit). Dog: larger box, lower score.
RIG = {PERSON: (0.5, 10.0), DOG: (0.75, 9.0)}
SMALL = dict(min_size=64, max_size=128)  # the detector's own resizing: fast on CPU


def rigged_scores():
    """Softmax scores of the rigged box head: person ~0.73, dog ~0.27, every other label ~3e-5."""
    logits = torch.zeros(len(COCO_CATEGORIES))
    for label, (_, logit) in RIG.items():
        logits[label] = logit
    return logits.softmax(0)


@pytest.fixture(scope='module')
def rigged_path(tmp_path_factory):
    """A state dict of torchvision's maskrcnn_resnet50_fpn (random init) with known detections."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(COCO_CATEGORIES))
    with torch.no_grad():
        rpn = model.rpn.head.bbox_pred                       # proposals: anchors x 62 (clamped), clipped
        rpn.weight.zero_()
        rpn.bias.view(-1, 4).copy_(torch.tensor([0.0, 0.0, 10.0, 10.0]))
        box = model.roi_heads.box_predictor
        box.cls_score.weight.zero_()
        box.bbox_pred.weight.zero_()
        box.cls_score.bias.zero_()
        box.bbox_pred.bias.zero_()
        for label, (side, logit) in RIG.items():
            box.cls_score.bias[label] = logit
            box.bbox_pred.bias.view(-1, 4)[label, 2:] = 5 * math.log(side)   # box coder weights (10, 10, 5, 5)
        mask = model.roi_heads.mask_predictor.mask_fcn_logits
        mask.weight.zero_()
        mask.bias.fill_(10.0)
    path = tmp_path_factory.mktemp('maskrcnn') / 'rigged_maskrcnn.pth'
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope='module')
def detector(rigged_path):
    return MaskDetector(['person', 'dog'], score_thresh=0.2, min_area=0.001, model_path=rigged_path, **SMALL)


def noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def centred_box(h, w, side):
    """Bool (h, w): the centred box of relative size ``side``, as the rigged detector finds it."""
    m = np.zeros((h, w), bool)
    bh, bw = h * side, w * side
    m[int(round((h - bh) / 2)):int(round((h + bh) / 2)), int(round((w - bw) / 2)):int(round((w + bw) / 2))] = True
    return m


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ---------------------------------------------------------------------------- selection (synthetic output)
def fake_output(labels, scores, boxes, h=20, w=30, soft=0.9):
    """A torchvision detection dict whose soft masks are ``soft`` inside the given (y0, y1, x0, x1) boxes."""
    masks = torch.zeros(len(labels), 1, h, w)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        masks[i, 0, y0:y1, x0:x1] = soft
    return {'labels': torch.tensor(labels), 'scores': torch.tensor(scores), 'masks': masks}


def test_selection_keeps_requested_labels_above_score_and_area_largest_first():
    out = fake_output([PERSON, DOG, PERSON, PERSON, PERSON], [0.9, 0.95, 0.8, 0.3, 0.7],
                      [(0, 4, 0, 4), (0, 20, 0, 30), (0, 10, 0, 10), (0, 20, 0, 20), (5, 6, 5, 6)])
    masks = select_instances(out, [PERSON], score_thresh=0.5, min_area_px=2)
    # dog: other label; score 0.3: below threshold; 1-pixel mask: below the area
    assert masks.dtype == bool and masks.shape == (2, 20, 30)
    assert masks.reshape(2, -1).sum(1).tolist() == [100, 16]          # by area, not by score
    assert masks[0, :10, :10].all() and not masks[0, 10:].any()
    masks = select_instances(out, [PERSON, DOG], score_thresh=0.0, min_area_px=1, max_instances=3)
    assert masks.reshape(3, -1).sum(1).tolist() == [600, 400, 100]


def test_selection_thresholds_the_soft_masks_and_may_return_nothing():
    out = fake_output([PERSON, PERSON], [0.9, 0.9], [(0, 5, 0, 5), (0, 8, 0, 8)], soft=0.4)
    assert select_instances(out, [PERSON], mask_thresh=0.5).shape == (0, 20, 30)
    assert select_instances(out, [PERSON], mask_thresh=0.3).shape == (2, 20, 30)
    assert select_instances(out, [DOG], mask_thresh=0.3).shape == (0, 20, 30)


# ---------------------------------------------------------------------------- categories and bad input
def test_unknown_category_lists_valid_names(rigged_path):
    with pytest.raises(UserInputError, match="Unknown mask category 'unicorn'.*giraffe.*person"):
        parse_categories('person,unicorn')
    with pytest.raises(UserInputError, match="'unicorn'.*giraffe"):
        MaskDetector(['unicorn'], model_path=rigged_path)


def test_categories_one_list_for_both_domains_or_one_per_domain():
    assert parse_categories('person') == {'A': ['person'], 'B': ['person']}
    assert parse_categories('sheep, cow') == {'A': ['sheep', 'cow'], 'B': ['sheep', 'cow']}
    assert parse_categories('A:sheep,cow; B:giraffe') == {'A': ['sheep', 'cow'], 'B': ['giraffe']}
    assert parse_categories('B:giraffe', domains=('B',)) == {'B': ['giraffe']}
    with pytest.raises(UserInputError, match='no category for domain B'):
        parse_categories('A:sheep')
    with pytest.raises(UserInputError, match='needs --mask_categories'):
        parse_categories(None)
    with pytest.raises(UserInputError, match="'C:cat'"):
        parse_categories('A:sheep;C:cat')


def test_bad_model_path_names_the_file(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(UserInputError, match=re.escape(str(missing))):
        MaskDetector(['person'], model_path=str(missing))
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(UserInputError, match=re.escape(str(garbage)) + '.*state dict'):
        MaskDetector(['person'], model_path=str(garbage))
    other = tmp_path / 'other_model.pth'
    torch.save({'conv.weight': torch.zeros(3, 3)}, other)
    with pytest.raises(UserInputError, match=re.escape(str(other)) + ".*maskrcnn_resnet50_fpn"):
        MaskDetector(['person'], model_path=str(other))


def test_failed_download_suggests_mask_model_path(monkeypatch):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise OSError('Temporary failure in name resolution')
    monkeypatch.setattr(api, 'load_state_dict_from_url', offline)
    with pytest.raises(UserInputError, match='Could not download.*maskrcnn_resnet50_fpn_coco.*--mask_model_path'):
        MaskDetector(['person'])


# ---------------------------------------------------------------------------- the detector
def test_detector_finds_the_rigged_instances_filtered_and_largest_first(detector, rigged_path):
    """Batched detection of two image sizes: each image gets the centred dog box (larger) then the
    person box; asking for 'person' alone drops the dog."""
    images = [noise(48, 64), noise(40, 36, seed=1)]
    for image, masks in zip(images, detector.detect_batch(images)):
        h, w = image.shape[:2]
        assert masks.dtype == bool and masks.shape == (2, h, w)
        assert iou(masks[0], centred_box(h, w, RIG[DOG][0])) > 0.85
        assert iou(masks[1], centred_box(h, w, RIG[PERSON][0])) > 0.85
    only_person = detector.detect(images[0], ['person'])
    assert only_person.shape == (1, 48, 64) and iou(only_person[0], centred_box(48, 64, RIG[PERSON][0])) > 0.85


def test_detector_area_threshold_is_a_fraction_of_the_image(rigged_path):
    # person covers ~1/4 of the image, dog ~9/16: a 0.4 fraction keeps the dog only
    image = noise(48, 64)
    big = MaskDetector(['person', 'dog'], score_thresh=0.2, min_area=0.4, model_path=rigged_path, **SMALL)
    masks = big.detect(image)
    assert len(masks) == 1 and iou(masks[0], centred_box(48, 64, RIG[DOG][0])) > 0.85


# ---------------------------------------------------------------------------- datasets and test.py
def write_images(folder, n, h=48, w=64, seed=0):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        Image.fromarray(noise(h, w, seed + i)).save(os.path.join(folder, f'{i:03d}.png'))


def dataset_opt(root, rigged_path, **kw):
    import argparse
    opt = dict(dataroot=str(root), phase='test', direction='AtoB', input_nc=3, output_nc=3, preprocess='none',
               load_size_h=48, load_size_w=64, crop_size_h=48, crop_size_w=64, no_flip=True,
               max_dataset_size=float('inf'), serial_batches=True, isTrain=False, seed=None, max_instances=4,
               unmasked='keep', auto_masks=True, mask_categories='A:person;B:dog', mask_score_thresh=0.2,
               mask_min_area=0.001, mask_model_path=rigged_path, mask_min_size=64, mask_max_size=128,
               num_threads=0, device='cpu')
    opt.update(kw)
    return argparse.Namespace(**opt)


def test_dataset_makes_masks_from_images_alone_with_each_domains_categories(tmp_path, rigged_path):
    """No _seg folder: A_segs come from the detector, in {-1, 1}, the detected instance first and
    empty slots after; B asks for 'cat', which is not detected: empty slots and a warning naming
    the image. The built model is not pickled (workers started by 'spawn' build their own)."""
    write_images(tmp_path / 'testA', 2)
    write_images(tmp_path / 'testB', 1, seed=5)
    ds = UnalignedSegDataset(dataset_opt(tmp_path, rigged_path, mask_categories='A:person;B:cat'))
    assert len(ds) == 2
    with pytest.warns(UserWarning, match=r"no cat detected in '.*testB.000.png'"):
        s = ds[1]
    assert s['A'].shape == (3, 48, 64) and s['A_segs'].shape == (4, 48, 64) and s['B_segs'].shape == (4, 48, 64)
    assert set(s['A_segs'].unique().tolist()) == {-1.0, 1.0}
    assert iou(s['A_segs'][0].numpy() > 0, centred_box(48, 64, RIG[PERSON][0])) > 0.85
    assert (s['A_segs'][1:] == -1).all() and (s['B_segs'] == -1).all()
    assert s['A_paths'].endswith('001.png')
    assert len(pickle.dumps(ds)) < 100_000


def test_single_seg_auto_masks_read_one_domain_above_the_score_threshold(tmp_path, rigged_path):
    """--mask_score_thresh 0.5 keeps the person (score ~0.73) and drops the larger dog (~0.27)."""
    assert rigged_scores()[DOG] < 0.5 < rigged_scores()[PERSON]
    write_images(tmp_path / 'testB', 1)
    opt = dataset_opt(tmp_path, rigged_path, mask_categories='person,dog', direction='BtoA', mask_score_thresh=0.5)
    s = SingleSegDataset(opt)[0]                                        # no --seg_dir needed
    assert s['A_segs'].shape == (4, 48, 64) and s['A_paths'].endswith('testB/000.png')
    assert iou(s['A_segs'][0].numpy() > 0, centred_box(48, 64, RIG[PERSON][0])) > 0.85
    assert (s['A_segs'][1:] == -1).all()


def test_dataset_rejects_missing_model_and_unknown_category_before_loading(tmp_path):
    write_images(tmp_path / 'testA', 1)
    write_images(tmp_path / 'testB', 1)
    with pytest.raises(UserInputError, match='missing.pth'):
        UnalignedSegDataset(dataset_opt(tmp_path, str(tmp_path / 'missing.pth')))
    with pytest.raises(UserInputError, match="'zebraa'"):
        UnalignedSegDataset(dataset_opt(tmp_path, None, mask_categories='zebraa'))


@pytest.mark.slow
def test_test_py_translates_mhp_samples_with_auto_masks(instagan_fixture_dir, mhp_samples_dir, tmp_path,
                                                        rigged_path):
    """test.py with --auto_masks on the MHP samples (no _seg folder read): the official visual
    names are written and the real-A mask shown is the detected instance."""
    root = tmp_path / 'mhp'
    for d in 'AB':                                                      # images only
        shutil.copytree(os.path.join(mhp_samples_dir, f'sample{d}'), root / f'sample{d}')
    ck = tmp_path / 'checkpoints' / 'X'
    ck.mkdir(parents=True)
    for net in ('G_A', 'G_B'):
        shutil.copy(os.path.join(instagan_fixture_dir, f'10_net_{net}.pth'), ck / f'10_net_{net}.pth')
    results = tmp_path / 'results'
    rc = test_script.main(['--model', 'insta_gan', '--auto_masks', '--mask_categories', 'person',
                           '--mask_score_thresh', '0.2', '--mask_model_path', rigged_path, '--mask_min_size', '64',
                           '--mask_max_size', '128', '--dataroot', str(root), '--phase', 'sample', '--name', 'X',
                           '--epoch', '10', '--ngf', '8', '--load_size_h', '96', '--load_size_w', '64',
                           '--crop_size_h', '96', '--crop_size_w', '64', '--checkpoints_dir',
                           str(tmp_path / 'checkpoints'), '--results_dir', str(results), '--gpu_ids', '-1',
                           '--num_test', '1', '--max_dataset_size', '1'])
    assert rc == 0
    page = results / 'X' / 'sample_10' / 'index.html'
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page.read_text())
    assert {s.split('/')[-1].split('_', 1)[1] for s in srcs} == {
        f'{v}.png' for v in ('real_A_img', 'fake_B_img', 'rec_A_img', 'real_A_seg', 'fake_B_seg', 'rec_A_seg',
                             'real_B_img', 'fake_A_img', 'rec_B_img', 'real_B_seg', 'fake_A_seg', 'rec_B_seg')}
    seg = next(s for s in srcs if s.endswith('_real_A_seg.png'))
    mask = np.asarray(Image.open(page.parent / seg).convert('L')) > 127
    assert mask.shape == (96, 64) and iou(mask, centred_box(96, 64, RIG[PERSON][0])) > 0.8


# ---------------------------------------------------------------------------- make_auto_masks.py
def test_make_auto_masks_writes_binary_pngs_in_the_official_layout(tmp_path, detector, rigged_path):
    images = tmp_path / 'trainA'
    write_images(images, 2)
    write_images(images / 'sub', 1, h=40, w=36, seed=3)
    counts = make_auto_masks(str(images), ['person', 'dog'], detector=detector, batch_size=2)
    assert counts == {'000': 2, '001': 2, 'sub/000': 2}
    seg = tmp_path / 'trainA_seg'
    names = sorted(os.path.relpath(os.path.join(r, f), seg) for r, _, fs in os.walk(seg) for f in fs)
    assert names == ['000_0.png', '000_1.png', '001_0.png', '001_1.png', 'sub/000_0.png', 'sub/000_1.png']
    for name, label in (('000_0.png', DOG), ('000_1.png', PERSON)):
        arr = np.asarray(Image.open(seg / name))
        assert arr.dtype == np.uint8 and arr.shape == (48, 64) and set(np.unique(arr)) == {0, 255}
        assert iou(arr > 0, centred_box(48, 64, RIG[label][0])) > 0.85
    assert np.asarray(Image.open(seg / 'sub' / '000_0.png')).shape == (40, 36)
    # the written folder reads back as a dataset's masks; an existing folder needs --overwrite
    from data.image_folder import index_masks
    assert [len(v) for v in index_masks(str(seg)).values()] == [2, 2, 2]
    with pytest.raises(UserInputError, match='--overwrite'):
        make_auto_masks_main(['--images', str(images), '--categories', 'person', '--model_path', rigged_path])


def test_test_py_with_auto_masks_composites_as_trained_and_shows_the_alpha(tmp_path, rigged_path, capsys):
    """A model trained with --blend matte --feather 1: test.py with --auto_masks and no --blend
    composites as in training (train_opt.txt) and the page shows the alpha; outside it the
    translated image is the input."""
    from models import create_model
    from options.train_options import TrainOptions
    root = tmp_path / 'data'
    for d in 'AB':
        write_images(root / f'test{d}', 1, seed=ord(d))
    size = ['--load_size_h', '48', '--load_size_w', '64', '--crop_size_h', '48', '--crop_size_w', '64']
    common = ['--model', 'insta_gan', '--ngf', '4', '--ndf', '4', '--n_blocks', '1', '--ins_max', '2',
              '--ins_per', '2', '--gpu_ids', '-1', '--checkpoints_dir', str(tmp_path / 'checkpoints'),
              '--name', 'M', '--dataroot', str(root), *size]
    opt = TrainOptions([*common, '--blend', 'matte', '--feather', '1', '--display_id', '0']).parse()
    model = create_model(opt)
    for net in (model.netG_A, model.netG_B):      # translated masks empty: the alpha is the input's masks
        last = [m for m in net.decoder_seg if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(-10.0)
    model.save_networks('latest')
    capsys.readouterr()
    results = tmp_path / 'results'
    rc = test_script.main([*common, '--auto_masks', '--mask_categories', 'person', '--mask_score_thresh', '0.2',
                           '--mask_model_path', rigged_path, '--mask_min_size', '64', '--mask_max_size', '128',
                           '--phase', 'test', '--results_dir', str(results), '--num_test', '1', '--preprocess', 'none'])
    assert rc == 0
    assert '--blend matte: as trained' in capsys.readouterr().out
    page = results / 'M' / 'test_latest' / 'index.html'
    srcs = {s.split('/')[-1].split('_', 1)[1]: page.parent / s
            for s in re.findall(r'<img[^>]*src="([^"]+)"', page.read_text())}
    assert {'fake_B_alpha.png', 'fake_A_alpha.png'} <= set(srcs)
    alpha = np.asarray(Image.open(srcs['fake_B_alpha.png']).convert('L')).astype(int)
    real, fake = (np.asarray(Image.open(srcs[f'{v}.png']).convert('RGB')).astype(int)
                  for v in ('real_A_img', 'fake_B_img'))
    person = centred_box(48, 64, RIG[PERSON][0])
    assert alpha[person].min() > 0 and (alpha == 0).any()       # the detected instance is in the alpha
    assert np.abs(real - fake).max(2)[alpha == 0].max() <= 1    # outside it: the input (PNG rounding)
