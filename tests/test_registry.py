"""Registries: unknown names fail with status 2 and list the choices; known ones resolve."""
import os
import subprocess
import sys

import pytest

import data
import models
from util.errors import UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(*args):
    return subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_unknown_model_exits_2_and_lists_models():
    r = run_train('--model', 'nope', '--dataroot', 'x')
    assert r.returncode == 2
    assert "unknown model 'nope'" in r.stderr
    for name in ('cycle_gan', 'test'):
        assert name in r.stderr


def test_unknown_dataset_mode_exits_2_and_lists_modes():
    r = run_train('--model', 'cycle_gan', '--dataset_mode', 'nope', '--dataroot', 'x')
    assert r.returncode == 2
    assert "unknown dataset mode 'nope'" in r.stderr and 'unaligned' in r.stderr


def test_missing_dataroot_names_the_folder_and_layout(tmp_path):
    missing = tmp_path / 'no_such_data'
    r = run_train('--model', 'cycle_gan', '--dataroot', str(missing), '--checkpoints_dir', str(tmp_path),
                  '--gpu_ids', '-1')
    assert r.returncode == 2
    assert str(missing) in r.stderr and 'trainA' in r.stderr
    assert 'Traceback' not in r.stderr


def test_empty_dataroot_names_the_folder(tmp_path):
    (tmp_path / 'empty' / 'trainA').mkdir(parents=True)
    (tmp_path / 'empty' / 'trainB').mkdir(parents=True)
    r = run_train('--model', 'cycle_gan', '--dataroot', str(tmp_path / 'empty'), '--checkpoints_dir',
                  str(tmp_path), '--gpu_ids', '-1')
    assert r.returncode == 2 and 'trainA' in r.stderr and 'Traceback' not in r.stderr


def test_registry_resolves_class_names():
    assert models.find_model_using_name('cycle_gan').__name__ == 'CycleGANModel'
    assert models.find_model_using_name('test').__name__ == 'TestModel'
    assert 'base' not in models.available_models()
    assert 'unaligned' in data.available_datasets()
    with pytest.raises(UserInputError, match='choose one of'):
        models.find_model_using_name('cyclegan')
