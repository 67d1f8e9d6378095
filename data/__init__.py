"""Dataset registry and loader: ``--dataset_mode NAME`` -> ``data/NAME_dataset.py`` ->
its ``BaseDataset`` subclass, wrapped in a ``DataLoader`` (``DistributedSampler`` under torchrun)."""
import os

import torch.utils.data

from data.base_dataset import BaseDataset
from util import registry

_DIR = os.path.dirname(os.path.abspath(__file__))


def available_datasets():
    """Names accepted by ``--dataset_mode``."""
    return registry.available(_DIR, '_dataset', exclude=('base',))


def find_dataset_using_name(dataset_name):
    return registry.find_class('data', _DIR, dataset_name, '_dataset', BaseDataset, 'dataset mode',
                               exclude=('base',))


def get_option_setter(dataset_name, parser=None):
    """The dataset's ``modify_commandline_options``; with a parser, a bad name exits with status 2."""
    if parser is None:
        return find_dataset_using_name(dataset_name).modify_commandline_options
    return registry.option_setter('data', _DIR, dataset_name, '_dataset', BaseDataset, 'dataset mode', parser,
                                  exclude=('base',))


def create_dataset(opt):
    """``dataset = create_dataset(opt)``: an iterable of batches with ``len(dataset)`` samples."""
    return CustomDatasetDataLoader(opt)


class CustomDatasetDataLoader:
    """A dataset mode wrapped in a DataLoader; under torchrun each rank reads its own shard."""

    def __init__(self, opt):
        self.opt = opt
        self.dataset = find_dataset_using_name(opt.dataset_mode)(opt)
        world = getattr(opt, 'world_size', 1)
        self.sampler = None
        shuffle = not opt.serial_batches
        if world > 1:
            self.sampler = torch.utils.data.distributed.DistributedSampler(
                self.dataset, num_replicas=world, rank=opt.rank, shuffle=shuffle,
                seed=opt.seed if opt.seed is not None else 0, drop_last=False)
            shuffle = False
        # With --seed, the shuffling and the workers' seeds of epoch e come from seed + e, so a run
        # resumed at an epoch boundary reads the same batches as an uninterrupted one.
        self.generator = None
        if getattr(opt, 'seed', None) is not None:
            self.generator = torch.Generator().manual_seed(opt.seed)
        self.dataloader = torch.utils.data.DataLoader(
            self.dataset, batch_size=opt.batch_size, shuffle=shuffle, sampler=self.sampler,
            num_workers=int(opt.num_threads), generator=self.generator,
            drop_last=bool(getattr(opt, 'isTrain', False) and len(self.dataset) >= opt.batch_size * world),
            persistent_workers=False)
        if getattr(opt, 'verbose', False):
            print(f'dataset [{type(self.dataset).__name__}] was created ({len(self.dataset)} samples)')

    def set_epoch(self, epoch):
        """Start epoch ``epoch``: reseed the shuffling (with --seed) and the distributed shards."""
        if self.generator is not None:
            self.generator.manual_seed(self.opt.seed + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def load_data(self):
        return self

    def __len__(self):
        return min(len(self.dataset), self.opt.max_dataset_size)

    def __iter__(self):
        for i, batch in enumerate(self.dataloader):
            if i * self.opt.batch_size >= self.opt.max_dataset_size:
                break
            yield batch
