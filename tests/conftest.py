"""Shared fixtures: the repository on sys.path, small datasets made once per session, and the data
files the tests read: in the repository (tests/fixtures/, datasets/samples/), so that a clone alone
runs every test; ``shared_dir`` is only for larger data that stays in ``../shared`` (skips without it)."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
INSTAGAN_FIXTURE = os.path.join(FIXTURES, 'instagan_official')   # official-format checkpoints + outputs
MHP_SAMPLES = os.path.join(ROOT, 'datasets', 'samples', 'pants2skirt_mhp')  # 5 + 5 real images with masks

# The tests use tiny tensors: one thread avoids thread-pool overhead that dominates at this size
# (a tiny training step: 0.1-0.2 s with 1 thread, 1-12 s with 2 on a busy 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(scope='session', autouse=True)
def builtin_sets_outside_the_repository(tmp_path_factory):
    """Built-in sets (datasets/builtin.py, used without --dataroot) go to a temporary folder."""
    from datasets.builtin import ENV
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, str(tmp_path_factory.mktemp('builtin_sets')))
        yield


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory):
    """A tiny built-in shapes dataset (official InstaGAN layout), 32 px."""
    from datasets.make_shapes_dataset import make_shapes_dataset
    out = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(str(out), n_train=6, n_test=3, size=32, seed=0)
    return str(out)


@pytest.fixture(scope='session')
def instagan_fixture_dir():
    """Official InstaGAN checkpoints (ngf = ndf = 8) and their outputs; see its README.md."""
    return INSTAGAN_FIXTURE


@pytest.fixture(scope='session')
def mhp_samples_dir():
    """The official InstaGAN samples of pants2skirt_mhp (``sample{A,B}[_seg]``); datasets/samples/README.md."""
    return MHP_SAMPLES


@pytest.fixture(scope='session')
def shared_dir():
    """``../shared``, for data too large for the repository; the test is skipped without it."""
    if not os.path.isdir(SHARED):
        pytest.skip(f'{SHARED} is absent: this test needs the large shared data beside the checkout')
    return SHARED
