"""`make demo`: the project's main job on built-in data, end to end, in a few minutes on a CPU.

1. makes the shapes dataset (warm discs <-> cool squares with instance masks) in datasets/shapes;
2. trains InstaGAN on it (small: 64 px, ngf 16, 3 residual blocks per encoder);
3. runs test.py on the test images and prints where the HTML page is.

A GPU is used when one is present. Options are forwarded to train.py and test.py after ``--``,
e.g. ``python scripts/demo.py -- --n_epochs 10``.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
sys.path.insert(0, ROOT)

from datasets.make_shapes_dataset import make_shapes_dataset  # noqa: E402

NAME = 'shapes_insta_gan'
COMMON = ['--model', 'insta_gan', '--dataroot', 'datasets/shapes', '--name', NAME, '--ngf', '16', '--ndf', '16',
          '--n_blocks', '3', '--load_size', '64', '--crop_size', '64', '--ins_max', '4', '--ins_per', '2']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n_epochs', type=int, default=1, help='epochs at the initial learning rate')
    parser.add_argument('--n_epochs_decay', type=int, default=1, help='epochs of linear decay')
    parser.add_argument('--n_train', type=int, default=200, help='training images per domain')
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != '--']
    import torch
    if not torch.cuda.is_available():
        torch.set_num_threads(1)   # tiny convolutions: one thread beats two on a 2-core CPU
    t0 = time.time()
    if not os.path.isdir('datasets/shapes/trainA'):
        make_shapes_dataset('datasets/shapes', n_train=args.n_train, n_test=20, size=64, seed=0)
        print(f'made datasets/shapes in {time.time() - t0:.1f} s')
    import test as test_script
    import train as train_script
    rc = train_script.main([*COMMON, '--n_epochs', str(args.n_epochs), '--n_epochs_decay', str(args.n_epochs_decay),
                            '--lr', '0.0004', '--num_threads', '1', '--seed', '0', '--print_freq', '200',
                            '--display_freq', '200', *extra])
    if rc != 0:
        return rc
    print(f'trained in {time.time() - t0:.0f} s')
    rc = test_script.main([*COMMON, '--ins_max', '8', '--num_test', '20', *extra])
    if rc == 0:
        page = os.path.join(ROOT, 'results', NAME, 'test_latest', 'index.html')
        print(f'\nDemo done in {time.time() - t0:.0f} s. Open {page}')
    return rc


if __name__ == '__main__':
    sys.exit(main())
