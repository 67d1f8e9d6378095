"""Train a model: ``python train.py --model insta_gan --dataroot datasets/shapes --name run``.

Multi-process (one per GPU, or gloo on CPU): ``torchrun --nproc_per_node=N train.py ...``: each
rank reads its shard of every epoch, gradients are averaged over the ranks at every optimizer step
(see util/distributed.py), and only rank 0 prints, plots, writes HTML and checkpoints.
``--batch_size`` is per process (the global batch is N times it).

Resume: ``--continue_train`` (from ``latest``; ``--epoch N`` or ``--load_iter N`` for others) with
optimizers, schedulers, GradScalers, image pools, RNG states and the data position as they were.
A checkpoint saved at the end of an epoch resumes with the next epoch; one saved mid-epoch
(``--save_latest_freq``) resumes that epoch at the batch after it, in the same order. With
``--seed`` and ``--num_threads 0`` the resumed run equals an uninterrupted one bit for bit
(with loader workers the data order is still the same but workers restart their random
augmentation streams mid-epoch).

A NaN or infinite loss stops training before the optimizer step that would use it (exit status
3, the message names the loss, epoch and iteration; no checkpoint is written after it), or with
``--nan_policy skip`` skips that step and reports the count at the end of each epoch.
"""
import sys
import time

import torch
from tqdm import tqdm

from data import create_dataset
from models import create_model
from options.train_options import TrainOptions
from util import checkpoint, distributed, train_step
from util.errors import run_cli
from util.train_step import NonFiniteLoss
from util.training_state import TrainingState

__all__ = ['train', 'main', 'NonFiniteLoss']


def crossed(before, after, freq):
    """True when a counter going from ``before`` to ``after`` passes a multiple of ``freq``."""
    return freq > 0 and before // freq != after // freq


def to_channels_last(batch):
    """The batch with every 4-D floating tensor in channels-last memory format."""
    return {k: (v.contiguous(memory_format=torch.channels_last)
                if torch.is_tensor(v) and v.dim() == 4 and v.is_floating_point() else v)
            for k, v in batch.items()}


def resume_point(opt, training_state, dataset):
    """(start epoch, start batch, total_iters) from the training state of ``--continue_train``."""
    if not opt.continue_train:
        return opt.epoch_count, 0, 0
    label = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
    state = training_state.load(label)
    if state is None:
        if distributed.is_main(opt):
            print(f'{label}: networks only (no training state); starting at epoch {opt.epoch_count} '
                  'with fresh optimizers')
        return opt.epoch_count, 0, 0
    if 'data_seed' in state:
        dataset.set_seed(state['data_seed'])
    epoch, total = state['epoch'], state['total_iters']
    if state.get('epoch_done', True):
        where, start = (epoch + 1, 0), f'after epoch {epoch}'
    elif (state.get('batch_size'), state.get('world_size')) == (opt.batch_size, opt.world_size):
        where, start = (epoch, state['epoch_iter']), f'in epoch {epoch} at batch {state["epoch_iter"] + 1}'
    else:
        where, start = (epoch, 0), (f'at the start of epoch {epoch} (saved mid-epoch with batch size '
                                    f'{state.get("batch_size")} x {state.get("world_size")} processes)')
    if distributed.is_main(opt):
        print(f'resuming {start} ({total} samples seen)', flush=True)
    return where[0], where[1], total


def train(opt):
    """The training loop; returns the model. Saves ``latest`` (every ``--save_latest_freq`` samples
    and at each epoch's end) and ``<epoch>`` checkpoints; every rank calls the saves, rank 0 writes."""
    from util.visualizer import Visualizer
    main_rank = distributed.is_main(opt)
    if len(opt.gpu_ids) > 1 and opt.world_size == 1:
        print(f'note: one process trains on cuda:{opt.gpu_ids[0]} only; for {len(opt.gpu_ids)} GPUs run '
              f'torchrun --nproc_per_node={len(opt.gpu_ids)} train.py ...', flush=True)
    if opt.seed is not None:
        distributed.seed_everything(opt.seed + opt.rank, opt.deterministic)
    elif opt.deterministic:
        distributed.set_deterministic()
    dataset = create_dataset(opt)
    model = create_model(opt)
    model.setup(opt)
    if main_rank:
        stray = checkpoint.remove_stray_temps(model.save_dir)
        if stray:
            print(f'removed {len(stray)} temporary files of an interrupted save from {model.save_dir}')
    training_state = TrainingState(model)
    start_epoch, start_batch, total_iters = resume_point(opt, training_state, dataset)
    visualizer = Visualizer(opt) if main_rank else None
    n_epochs = opt.n_epochs + opt.n_epochs_decay
    per_epoch = len(dataset) // max(1, opt.world_size)
    if opt.max_iters_per_epoch:
        per_epoch = min(per_epoch, opt.max_iters_per_epoch * opt.batch_size)

    def progress(epoch, batches, done):
        return {'epoch': epoch, 'epoch_iter': batches, 'epoch_done': done, 'total_iters': total_iters,
                'batch_size': opt.batch_size, 'world_size': opt.world_size, 'data_seed': dataset.seed}

    last_saved = 'the one resumed from' if opt.continue_train else 'none yet'
    for epoch in range(start_epoch, n_epochs + 1):
        skip = start_batch if epoch == start_epoch else 0
        dataset.set_epoch(epoch, skip)
        skipped_before = model.skipped_steps
        epoch_start, epoch_iter, batches = time.time(), skip * opt.batch_size, skip
        if visualizer is not None:
            visualizer.reset()
        bar = tqdm(total=per_epoch, initial=min(epoch_iter, per_epoch), desc=f'epoch {epoch}/{n_epochs}',
                   unit='img', disable=not main_rank, file=sys.stdout, dynamic_ncols=True, leave=False)
        t_data = time.time()
        for i, batch in enumerate(dataset, start=skip):
            if opt.max_iters_per_epoch and i >= opt.max_iters_per_epoch:
                break
            t0 = time.time()
            if opt.channels_last:
                batch = to_channels_last(batch)
            model.set_input(batch)
            try:
                losses = train_step.optimize(model)
            except NonFiniteLoss as e:
                when = ('before that optimizer step' if e.before_step else
                        'after a step the model took itself (not through its OptimWrapper)')
                raise NonFiniteLoss(e.name, e.value, f'{e} at epoch {epoch}, iteration {i + 1} of the epoch (samples '
                                    f'{total_iters + 1}-{total_iters + opt.batch_size * opt.world_size}); training '
                                    f'stopped {when} and no checkpoint was written after this step (the last: '
                                    f'{last_saved}). Lower --lr, check the data, or use --nan_policy skip.') from None
            n = opt.batch_size * opt.world_size
            before, total_iters = total_iters, total_iters + n
            epoch_iter, batches = epoch_iter + opt.batch_size, i + 1
            bar.update(opt.batch_size)
            bar.set_postfix({k: f'{v:.3f}' for k, v in losses.items()}, refresh=False)
            if visualizer is not None:
                if crossed(before, total_iters, opt.display_freq):
                    model.compute_visuals()
                    visualizer.display_current_results(model.get_current_visuals(), epoch,
                                                       crossed(before, total_iters, opt.update_html_freq),
                                                       value_range=model.visual_value_range)
                if crossed(before, total_iters, opt.print_freq):
                    t_comp = (time.time() - t0) / opt.batch_size
                    visualizer.print_current_losses(epoch, epoch_iter, losses, t_comp, t0 - t_data)
                    if opt.display_id > 0:
                        visualizer.plot_current_losses(epoch, min(1.0, epoch_iter / max(1, per_epoch)), losses)
            if crossed(before, total_iters, opt.save_latest_freq):
                labels = ['latest'] + ([f'iter_{total_iters}'] if opt.save_by_iter else [])
                training_state.save(labels, progress(epoch, batches, done=False))
                last_saved = f'{"/".join(labels)}, epoch {epoch} iteration {batches}'
            t_data = time.time()
        bar.close()
        model.update_learning_rate()
        labels = ['latest'] + ([epoch] if opt.save_epoch_freq > 0 and epoch % opt.save_epoch_freq == 0 else [])
        training_state.save(labels, progress(epoch, batches, done=True))
        last_saved = f'{"/".join(map(str, labels))}, end of epoch {epoch}'
        if main_rank:
            lr = model.optimizers[0].param_groups[0]['lr'] if model.optimizers else 0
            print(f'End of epoch {epoch} / {n_epochs} \t Time Taken: {time.time() - epoch_start:.1f} sec '
                  f'\t lr {lr:.7f}', flush=True)
            skipped = model.skipped_steps - skipped_before
            if skipped:
                print(f'epoch {epoch}: skipped {skipped} optimizer steps on non-finite losses (--nan_policy skip)',
                      flush=True)
    return model


def main(argv=None):
    """Exit status 0; 2 with a message on a user error (argparse's own errors exit 2 too); 3 when
    a loss is not finite (``--nan_policy stop``)."""
    def run(argv):
        train(distributed.init_distributed(TrainOptions(argv).parse()))
        return 0
    try:
        return run_cli(run, argv, exit_codes={NonFiniteLoss: 3})
    finally:
        distributed.cleanup()


if __name__ == '__main__':
    sys.exit(main())
