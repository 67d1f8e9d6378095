"""Train a model: ``python train.py --model insta_gan --dataroot datasets/shapes --name run``.

Multi-GPU: ``torchrun --nproc_per_node=N train.py ...``. Resume: ``--continue_train`` (from
``latest``, with optimizers, schedulers, image pools and RNG states as they were).
"""
import math
import sys
import time

from tqdm import tqdm

from data import create_dataset
from models import create_model
from options.train_options import TrainOptions
from util import distributed
from util.errors import UserInputError


class NonFiniteLoss(RuntimeError):
    pass


def crossed(before, after, freq):
    """True when a counter going from ``before`` to ``after`` passes a multiple of ``freq``."""
    return freq > 0 and before // freq != after // freq


def train(opt):
    """The training loop; returns the model. Saves ``latest`` and per-epoch checkpoints."""
    from util.visualizer import Visualizer
    main_rank = distributed.is_main(opt)
    if opt.seed is not None:
        distributed.seed_everything(opt.seed + opt.rank, getattr(opt, 'deterministic', False))
    dataset = create_dataset(opt)
    model = create_model(opt)
    model.setup(opt)
    total_iters, start_epoch = 0, opt.epoch_count
    if opt.continue_train:
        label = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
        resumed = model.load_training_state(label)
        if resumed is not None:
            done_epoch, total_iters = resumed
            start_epoch = done_epoch + 1
            if main_rank:
                print(f'resuming after epoch {done_epoch} ({total_iters} samples seen)')
    visualizer = Visualizer(opt) if main_rank else None
    n_epochs = opt.n_epochs + opt.n_epochs_decay
    per_epoch = len(dataset) // max(1, opt.world_size)
    if opt.max_iters_per_epoch:
        per_epoch = min(per_epoch, opt.max_iters_per_epoch * opt.batch_size)
    for epoch in range(start_epoch, n_epochs + 1):
        dataset.set_epoch(epoch)
        epoch_start, epoch_iter = time.time(), 0
        if visualizer is not None:
            visualizer.reset()
        bar = tqdm(total=per_epoch, desc=f'epoch {epoch}/{n_epochs}', unit='img', disable=not main_rank,
                   file=sys.stdout, dynamic_ncols=True, leave=False)
        t_data = time.time()
        for i, batch in enumerate(dataset):
            if opt.max_iters_per_epoch and i >= opt.max_iters_per_epoch:
                break
            t0 = time.time()
            model.set_input(batch)
            model.optimize_parameters()
            n = opt.batch_size * opt.world_size
            before, total_iters, epoch_iter = total_iters, total_iters + n, epoch_iter + opt.batch_size
            losses = model.get_current_losses()
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLoss(f'loss {bad[0]} is {losses[bad[0]]} at epoch {epoch}, iteration '
                                    f'{total_iters}; the last saved checkpoint is untouched')
            bar.update(opt.batch_size)
            bar.set_postfix({k: f'{v:.3f}' for k, v in losses.items()}, refresh=False)
            if visualizer is not None:
                if crossed(before, total_iters, opt.display_freq):
                    model.compute_visuals()
                    visualizer.display_current_results(model.get_current_visuals(), epoch,
                                                       crossed(before, total_iters, opt.update_html_freq),
                                                       value_range=getattr(model, 'visual_value_range', (-1, 1)))
                if crossed(before, total_iters, opt.print_freq):
                    t_comp = (time.time() - t0) / opt.batch_size
                    visualizer.print_current_losses(epoch, epoch_iter, losses, t_comp, t0 - t_data)
                    if opt.display_id > 0:
                        visualizer.plot_current_losses(epoch, min(1.0, epoch_iter / max(1, per_epoch)), losses)
                if crossed(before, total_iters, opt.save_latest_freq) and opt.save_by_iter:
                    model.save_networks(f'iter_{total_iters}')
            t_data = time.time()
        bar.close()
        model.update_learning_rate()
        if main_rank:
            model.save_networks('latest')
            model.save_training_state('latest', epoch, total_iters)
            if opt.save_epoch_freq > 0 and epoch % opt.save_epoch_freq == 0:
                model.save_networks(epoch)
                model.save_training_state(epoch, epoch, total_iters)
            lr = model.optimizers[0].param_groups[0]['lr'] if model.optimizers else 0
            print(f'End of epoch {epoch} / {n_epochs} \t Time Taken: {time.time() - epoch_start:.1f} sec '
                  f'\t lr {lr:.7f}', flush=True)
    return model


def main(argv=None):
    try:
        opt = TrainOptions(argv).parse()
        opt = distributed.init_distributed(opt)
        train(opt)
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    finally:
        distributed.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
