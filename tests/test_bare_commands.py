"""Bare and bad command lines: without --dataroot the built-in set of the dataset mode's layout is
used (made on first use, datasets/builtin.py); every other bad command line is an argparse error
(exit status 2) or a message with status 2, never a traceback.

The built-in sets are made under a temporary INSTAGAN_BUILTIN_DIR, never in the repository."""
import os
import subprocess
import sys

import pytest

from datasets import builtin
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import UserInputError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def builtin_dir(tmp_path_factory):
    """One folder of built-in sets for this module (each set is made once, by the first test)."""
    path = tmp_path_factory.mktemp('builtin')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(builtin.ENV, str(path))
        yield path


def parse(options, tmp_path, *args):
    return options(['--checkpoints_dir', str(tmp_path), '--gpu_ids', '-1', *args]).parse(save=False)


@pytest.mark.parametrize('model', ['cycle_gan', 'insta_gan', 'template'])
def test_translation_models_without_dataroot_train_on_the_shapes_set(builtin_dir, tmp_path, model):
    opt = parse(TrainOptions, tmp_path, '--model', model)
    assert opt.dataroot == str(builtin_dir / 'shapes')
    assert all((builtin_dir / 'shapes' / d).is_dir() for d in ('trainA', 'trainB_seg', 'testA', 'testB_seg'))


def test_the_shapes_set_is_read_at_its_own_size_unless_sizes_are_given(builtin_dir, tmp_path, capsys):
    opt = parse(TrainOptions, tmp_path, '--model', 'insta_gan')
    sizes = [opt.load_size, opt.crop_size, opt.load_size_h, opt.load_size_w, opt.crop_size_h, opt.crop_size_w]
    assert sizes == [64] * 6          # not 286 / 256: the 64 px shapes are not upscaled 4x
    assert '--load_size 64 --crop_size 64' in capsys.readouterr().out
    opt = parse(TrainOptions, tmp_path, '--model', 'insta_gan', '--crop_size', '48')
    assert (opt.load_size, opt.crop_size, opt.crop_size_h) == (286, 48, 48)    # a size given: as given
    opt = parse(TrainOptions, tmp_path, '--model', 'alphagan')
    assert opt.crop_size == 320                                                 # matting keeps its own


def test_single_mode_without_dataroot_reads_one_domain_of_the_shapes_set(builtin_dir, tmp_path):
    assert parse(TestOptions, tmp_path).dataroot == str(builtin_dir / 'shapes' / 'testA')   # --model test
    assert parse(TestOptions, tmp_path, '--direction', 'BtoA').dataroot == str(builtin_dir / 'shapes' / 'testB')


def test_matting_model_without_dataroot_uses_the_synthetic_matting_set(builtin_dir, tmp_path):
    for options in (TrainOptions, TestOptions):
        assert parse(options, tmp_path, '--model', 'alphagan').dataroot == str(builtin_dir / 'matting_synth')
    assert (builtin_dir / 'matting_synth' / 'train' / 'fg').is_dir()
    assert (builtin_dir / 'matting_synth' / 'test' / 'merged').is_dir()


def test_a_given_dataroot_is_used_as_it_is(builtin_dir, tmp_path):
    assert parse(TrainOptions, tmp_path, '--dataroot', 'elsewhere').dataroot == 'elsewhere'


def test_the_builtin_set_is_made_once_with_one_line_saying_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(builtin.ENV, str(tmp_path / 'sets'))
    made = []
    monkeypatch.setitem(builtin.SETS, 'matting', builtin.SETS['matting'][:2] + (made.append,))
    monkeypatch.setattr(builtin, 'is_complete', lambda kind, root=None: bool(made))
    path = builtin.ensure_builtin('matting', reason='--dataroot not given')
    first = capsys.readouterr().out.splitlines()
    assert made == [path] and path == str(tmp_path / 'sets' / 'matting_synth')
    assert len(first) == 1 and first[0].startswith('--dataroot not given: using the built-in matting set at ')
    assert '(made now, ' in first[0]
    assert builtin.ensure_builtin('matting', reason='--dataroot not given') == path
    second = capsys.readouterr().out.splitlines()
    assert made == [path] and len(second) == 1 and 'made now' not in second[0]


def test_a_dataset_mode_without_a_builtin_set_needs_dataroot(tmp_path, monkeypatch, capsys):
    from data.unaligned_dataset import UnalignedDataset
    monkeypatch.setattr(UnalignedDataset, 'builtin_data', None)
    with pytest.raises(SystemExit) as e:
        parse(TrainOptions, tmp_path, '--model', 'cycle_gan')
    assert e.value.code == 2 and '--dataroot is required' in capsys.readouterr().err


@pytest.mark.parametrize('options,args', [
    (TrainOptions, ['--model', 'nope']),
    (TrainOptions, ['--dataset_mode', 'nope']),
    (TrainOptions, ['--batch_size', '-1']),
    (TrainOptions, ['--gpu_ids', 'x']),
    (TrainOptions, ['--netG', 'nope']),
    (TrainOptions, ['--which_model_netD', 'nope']),     # a legacy alias: argparse does not check it
    (TrainOptions, ['--resize_or_crop', 'nope']),
    (TrainOptions, ['--num_threads', '-1']),
    (TrainOptions, ['--lr_policy', 'step', '--lr_decay_iters', '0']),
    (TrainOptions, ['--suffix', '{nope}']),
    (TestOptions, ['--num_test', '-1']),
    (TestOptions, ['--load_size', '0']),
])
def test_bad_options_are_argparse_errors(tmp_path, capsys, options, args):
    with pytest.raises(SystemExit) as e:
        parse(options, tmp_path, '--dataroot', 'x', *args)
    assert e.value.code == 2 and 'error: ' in capsys.readouterr().err


def test_run_cli_maps_user_errors_and_listed_exceptions_to_exit_statuses(capsys):
    class Special(RuntimeError):
        pass

    class MoreSpecial(Special):
        pass

    def fails(exc):
        def main(argv):
            raise exc
        return main

    assert run_cli(fails(UserInputError('fix the folder'))) == 2
    assert capsys.readouterr().err == 'error: fix the folder\n'
    assert run_cli(fails(MoreSpecial('nan')), exit_codes={Special: 3}) == 3
    assert run_cli(fails(MoreSpecial('nan')), exit_codes={Special: 3, MoreSpecial: 4}) == 4
    assert run_cli(lambda argv: 0 if argv == ['a'] else 1, ['a']) == 0
    with pytest.raises(ValueError):   # anything else is a bug: its traceback is shown
        run_cli(fails(ValueError('bug')), exit_codes={Special: 3})


def _run(script, *args, cwd, builtin_root):
    env = dict(os.environ, **{builtin.ENV: str(builtin_root)})
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_bare_test_py_says_to_train_first(builtin_dir, tmp_path):
    """``python test.py`` with no arguments: the built-in shapes set, then no checkpoint: status 2
    and a message, no traceback."""
    r = _run('test.py', cwd=tmp_path, builtin_root=builtin_dir)
    assert r.returncode == 2, r.stderr
    assert 'Traceback' not in r.stderr and 'Train first' in r.stderr
    assert '--dataroot not given: using the built-in shapes set at ' in r.stdout


def test_bad_command_line_exits_2_without_traceback(tmp_path):
    r = _run('train.py', '--gpu_ids', 'x', cwd=tmp_path, builtin_root=tmp_path / 'none')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'error: --gpu_ids x' in r.stderr
    assert not (tmp_path / 'none').exists()   # nothing made for a command line that is wrong anyway
