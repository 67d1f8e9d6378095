"""Shared fixtures: the repository on sys.path, small datasets made once per session."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')


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
