"""The contract every dataset mode keeps (data.base_dataset.BaseDataset), translation and matting alike:
a declared value range that its samples respect, options read from the real parser, hook defaults
filled in for hand-built options, and the shared folder rules."""
import argparse
import os

import pytest
import torch

import data
from data.base_dataset import BaseDataset
from data.unaligned_seg_dataset import UnalignedSegDataset
from datasets.make_matting_dataset import make_matting_dataset
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import UserInputError


@pytest.fixture(scope='module')
def matting_root(tmp_path_factory):
    return make_matting_dataset(str(tmp_path_factory.mktemp('matting')), n_train=2, n_test=2, n_bg=2, size=48,
                                seed=1)


def dataroot_of(mode, shapes_root, matting_root):
    """The smallest set with mode's layout; a new dataset mode adds its own here."""
    return {'unaligned': shapes_root, 'unaligned_seg': shapes_root, 'single': os.path.join(shapes_root, 'testA'),
            'single_seg': shapes_root, 'matting': matting_root, 'background_matting': matting_root}[mode]


def parsed(options, mode, root, *extra):
    sizes = ['--crop_size', '32', '--crop_sizes', '32,48'] if mode == 'matting' else ['--load_size', '36',
                                                                                    '--crop_size', '32']
    argv = ['--dataroot', root, '--dataset_mode', mode, '--gpu_ids', '-1', *sizes, *extra]
    return options(argv).parse(save=False)


def float_tensors(sample):
    return {k: v for k, v in sample.items() if torch.is_tensor(v) and v.is_floating_point()}


def test_every_dataset_mode_declares_its_value_range():
    modes = data.available_datasets()
    assert {'unaligned', 'unaligned_seg', 'single', 'single_seg', 'matting'} <= set(modes)
    for mode in modes:
        cls = data.find_dataset_using_name(mode)
        low, high = cls.value_range
        assert isinstance(low, float) and isinstance(high, float) and low < high, mode
    assert data.find_dataset_using_name('unaligned').value_range == (-1.0, 1.0)
    assert data.find_dataset_using_name('matting').value_range == (0.0, 1.0)


@pytest.mark.parametrize('mode', data.available_datasets())
@pytest.mark.parametrize('options', [TrainOptions, TestOptions])
def test_samples_built_from_the_real_options_lie_in_the_declared_range(mode, options, shapes_root, matting_root):
    """Built from the real parser (no hand-made option), every float tensor of a sample lies in
    value_range, and the image tensors use it: translation images reach below 0, matting stays >= 0."""
    opt = parsed(options, mode, dataroot_of(mode, shapes_root, matting_root))
    dataset = data.find_dataset_using_name(mode)(opt)
    low, high = dataset.value_range
    torch.manual_seed(0)
    sample = dataset[0]
    tensors = float_tensors(sample)
    assert tensors, mode
    for key, t in tensors.items():
        assert low <= float(t.min()) and float(t.max()) <= high, (mode, key, float(t.min()), float(t.max()))
    image = tensors[next(k for k in ('A', 'image', 'src') if k in tensors)]   # the mode's input image
    assert float(image.min()) < (low + high) / 2 < float(image.max())   # spread over the range, not a corner


def test_loader_batches_keep_the_range(shapes_root, matting_root):
    for mode in ('unaligned_seg', 'matting'):
        opt = parsed(TrainOptions, mode, dataroot_of(mode, shapes_root, matting_root), '--num_threads', '0',
                     '--batch_size', '2')
        loader = data.create_dataset(opt)
        low, high = loader.dataset.value_range
        batch = next(iter(loader))
        for t in float_tensors(batch).values():
            assert low <= float(t.min()) and float(t.max()) <= high


def test_a_mode_without_value_range_is_refused():
    class NoRangeDataset(BaseDataset):
        def __len__(self):
            return 0

        def __getitem__(self, index):
            return {}

    with pytest.raises(TypeError, match='value_range'):
        NoRangeDataset(argparse.Namespace(dataroot='.', isTrain=True))


def test_hand_built_options_get_the_hooks_defaults(shapes_root):
    """Options of the mode's own hook that a hand-built Namespace lacks take the hook's defaults,
    which depend on is_train as on the command line (--unmasked: skip to train, keep to test)."""
    base = dict(dataroot=shapes_root, direction='AtoB', input_nc=3, output_nc=3, preprocess='resize_and_crop',
                load_size_h=36, load_size_w=36, crop_size_h=32, crop_size_w=32, no_flip=False,
                max_dataset_size=float('inf'), serial_batches=False, seed=None)
    train = argparse.Namespace(phase='train', isTrain=True, **base)
    UnalignedSegDataset(train)
    assert (train.unmasked, train.max_instances, train.auto_masks) == ('skip', 20, False)
    test = argparse.Namespace(phase='test', isTrain=False, max_instances=8, **base)
    UnalignedSegDataset(test)
    assert (test.unmasked, test.max_instances) == ('keep', 8)   # given values stay
    assert UnalignedSegDataset.option_defaults(False)['unmasked'] == 'keep'


def test_phase_folder_wins_over_dataroot_and_a_missing_dataroot_shows_the_layout(matting_root, tmp_path):
    opt = parsed(TrainOptions, 'matting', matting_root)
    assert data.find_dataset_using_name('matting')(opt).base == os.path.join(matting_root, 'train')
    opt = parsed(TrainOptions, 'matting', os.path.join(matting_root, 'train'))   # no <phase> folder inside
    assert data.find_dataset_using_name('matting')(opt).base == os.path.join(matting_root, 'train')
    opt.dataroot = str(tmp_path / 'nothing_here')
    with pytest.raises(UserInputError, match=r'nothing_here is not a folder[\s\S]*fg/<name>'):
        data.find_dataset_using_name('matting')(opt)
