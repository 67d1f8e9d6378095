"""Dataset registry and loader: ``--dataset_mode NAME`` -> ``data/NAME_dataset.py`` ->
its ``BaseDataset`` subclass, wrapped in a ``DataLoader`` that reads this rank's shard under
torchrun, in an order fixed by (seed, epoch), and can start an epoch part-way (exact resume)."""
import os
import re

import torch.utils.data

from data.base_dataset import BaseDataset
from util import registry
from util.errors import UserInputError

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


class EpochSampler(torch.utils.data.distributed.DistributedSampler):
    """This rank's sample indices for one epoch, optionally from position ``start`` on.

    The order is a pure function of (``seed``, epoch): ``torch.randperm`` from a generator seeded
    with ``seed + epoch`` (``shuffle``) or 0, 1, 2, ... (``--serial_batches``), padded to a
    multiple of ``num_replicas`` and dealt out rank by rank (``DistributedSampler``'s rule; with
    one process it is the plain order). ``set_epoch(epoch, start)`` skips the first ``start``
    indices of this rank: a run resumed mid-epoch reads exactly the samples the interrupted one
    had not reached. Needs no process group (``num_replicas`` and ``rank`` are given)."""

    def __init__(self, dataset, num_replicas, rank, shuffle, seed):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.start = 0

    def set_epoch(self, epoch, start=0):
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self):
        return max(0, self.num_samples - self.start)


class CustomDatasetDataLoader:
    """A dataset mode wrapped in a DataLoader; under torchrun each rank reads its own shard.

    ``seed``: the data order's seed, ``--seed`` or, without it, a random one shared by the ranks
    (saved in the training state so that a resumed run keeps the order). The workers' seeds of
    epoch ``e`` also come from (seed, e, rank), so a run resumed at an epoch boundary reads the
    same batches, augmented the same way, as an uninterrupted one."""

    def __init__(self, opt):
        from util import distributed
        self.opt = opt
        self.dataset = find_dataset_using_name(opt.dataset_mode)(opt)
        self.world, self.rank = opt.world_size, opt.rank   # set by BaseOptions.parse
        seed = opt.seed
        if seed is None:   # from the OS, not torch's generator: the global RNG streams stay untouched
            seed = distributed.broadcast_object(int.from_bytes(os.urandom(4), 'little') >> 1)
        self.seed = seed
        self.sampler = EpochSampler(self.dataset, self.world, self.rank, not opt.serial_batches, seed)
        # always a generator of our own: the loader draws its workers' base seed from it (from the
        # global RNG otherwise, which would shift every random number after a resume)
        self.generator = torch.Generator().manual_seed(seed)
        self.start_batch = 0
        self.dataloader = torch.utils.data.DataLoader(
            self.dataset, batch_size=opt.batch_size, shuffle=False, sampler=self.sampler,
            num_workers=int(opt.num_threads), generator=self.generator,
            drop_last=bool(opt.isTrain and len(self.dataset) >= opt.batch_size * self.world),
            persistent_workers=False)
        if opt.verbose:
            print(f'dataset [{type(self.dataset).__name__}] was created ({len(self.dataset)} samples)')

    def set_seed(self, seed):
        """Use another order seed (a resumed run takes the interrupted run's)."""
        self.seed = self.sampler.seed = int(seed)

    def set_epoch(self, epoch, start_batch=0):
        """Start epoch ``epoch`` at its batch ``start_batch`` (0: from the beginning)."""
        self.start_batch = start_batch
        self.sampler.set_epoch(epoch, start_batch * self.opt.batch_size)
        # the workers' base seed is drawn from this generator when the epoch's iterator starts
        self.generator.manual_seed((self.seed + epoch) * 1000003 + self.rank)

    def __len__(self):
        return min(len(self.dataset), self.opt.max_dataset_size)

    def __iter__(self):
        """Batches of this epoch from ``start_batch`` on. An error raised in a loader worker
        process comes out as the dataset raised it (UserInputError naming the file), not wrapped
        in the worker's traceback."""
        it = iter(self.dataloader)
        i = self.start_batch
        while True:
            if i * self.opt.batch_size >= self.opt.max_dataset_size:
                break
            try:
                batch = next(it)
            except StopIteration:
                break
            except UserInputError as e:
                raise UserInputError(worker_error_message(e)) from None
            yield batch
            i += 1


def worker_error_message(error):
    """The original message of an exception that a DataLoader worker re-raised.

    DataLoader re-raises a worker's exception as the same type with the message
    ``Caught <Type> in DataLoader worker process N.\\nOriginal Traceback ...\\n<module>.<Type>: <message>``;
    this returns ``<message>`` (the whole text when it is not such a wrapper)."""
    text = str(error)
    if not text.startswith('Caught ') or 'Original Traceback' not in text:
        return text
    name = type(error).__name__
    match = None
    for match in re.finditer(rf'^(?:[\w.]+\.)?{re.escape(name)}: ', text, flags=re.M):
        pass
    return text[match.end():].rstrip() if match else text
