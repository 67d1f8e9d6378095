"""Shared fixtures: the repository on sys.path, small datasets made once per session."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')

# The tests use tiny tensors: one thread avoids thread-pool overhead that dominates at this size
# (a tiny training step: 0.1-0.2 s with 1 thread, 1-12 s with 2 on a busy 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory):
    """A tiny built-in shapes dataset (official InstaGAN layout), 32 px."""
    from datasets.make_shapes_dataset import make_shapes_dataset
    out = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(str(out), n_train=6, n_test=3, size=32, seed=0)
    return str(out)


@pytest.fixture(scope='session')
def shared_dir():
    if not os.path.isdir(SHARED):
        pytest.fail(f'{SHARED} is missing: the tests need the shared fixtures beside the checkout')
    return SHARED
