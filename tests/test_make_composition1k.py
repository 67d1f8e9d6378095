"""datasets/make_composition1k.py on tiny generated images: foreground i over backgrounds
i * num_bgs ... of the list, the script's resize rule (upscale by max(w / bw, h / bh) when > 1,
bicubic, top-left crop), floor(a F + (1 - a) B), the test layout test.py reads, same bytes twice."""
import math
import os

import numpy as np
import pytest
from PIL import Image

from data.image_folder import read_gray, read_rgb
from datasets.make_composition1k import main, make_composition1k
from util.errors import UserInputError


def write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def adobe(tmp_path):
    """2 foregrounds (30 x 40), their alphas (0, 255 and a ramp) and trimaps, 4 backgrounds: two
    smaller than the foreground (upscaled), two larger (cropped)."""
    rng = np.random.default_rng(0)
    for name in ('b_fg', 'a_fg'):
        write(str(tmp_path / 'fg' / f'{name}.png'), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        alpha = np.zeros((30, 40), np.uint8)
        alpha[:, 20:] = 255
        alpha[:, 10:20] = np.linspace(0, 255, 10).astype(np.uint8)
        write(str(tmp_path / 'alpha' / f'{name}.png'), alpha)
        write(str(tmp_path / 'trimaps' / f'{name}.png'), np.where(alpha == 0, 0, np.where(alpha == 255, 255, 128)).astype(np.uint8))
    sizes = {'bg0.jpg': (20, 25), 'bg1.png': (50, 60), 'bg2.png': (16, 40), 'bg3.png': (35, 45)}   # (h, w)
    for name, (h, w) in sizes.items():
        write(str(tmp_path / 'bg' / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return tmp_path


def test_each_foreground_goes_over_its_backgrounds_with_the_scripts_resize_rule(adobe):
    out = adobe / 'c1k'
    n = make_composition1k(str(adobe / 'fg'), str(adobe / 'alpha'), str(adobe / 'bg'), str(out),
                           trimap_dir=str(adobe / 'trimaps'), num_bgs=2)
    assert n == 4
    pairs = [line.split() for line in open(out / 'pairs.txt').read().splitlines()]
    # sorted names: a_fg takes bg0, bg1; b_fg takes bg2, bg3
    assert pairs == [['a_fg_0.png', 'a_fg.png', 'bg0.jpg'], ['a_fg_1.png', 'a_fg.png', 'bg1.png'],
                     ['b_fg_0.png', 'b_fg.png', 'bg2.png'], ['b_fg_1.png', 'b_fg.png', 'bg3.png']]
    for merged, fg_name, bg_name in pairs:
        fg = read_rgb(str(adobe / 'fg' / fg_name)).astype(np.float64)
        alpha = read_gray(str(adobe / 'alpha' / fg_name))
        bg = Image.open(adobe / 'bg' / bg_name).convert('RGB')
        ratio = max(40 / bg.size[0], 30 / bg.size[1])
        if ratio > 1:
            bg = bg.resize((math.ceil(bg.size[0] * ratio), math.ceil(bg.size[1] * ratio)), Image.BICUBIC)
        back = np.asarray(bg)[:30, :40].astype(np.float64)
        a = alpha[..., None] / 255.0
        got = read_rgb(str(out / 'merged' / merged))
        assert np.array_equal(got, np.floor(a * fg + (1 - a) * back).astype(np.uint8)), merged
        assert np.array_equal(got[:, :10], back[:, :10]) and np.array_equal(got[:, 20:], fg[:, 20:])
        assert np.array_equal(read_gray(str(out / 'alpha' / merged)), alpha)
        assert set(np.unique(read_gray(str(out / 'trimaps' / merged)))) == {0, 128, 255}


def test_same_inputs_give_the_same_bytes_and_the_test_layout_loads(adobe):
    for out in ('one', 'two'):
        assert main(['--fg', str(adobe / 'fg'), '--alpha', str(adobe / 'alpha'), '--bg', str(adobe / 'bg'),
                     '--out', str(adobe / out), '--num_bgs', '2']) == 0
    for sub in ('merged', 'alpha', 'trimaps'):
        names = sorted(os.listdir(adobe / 'one' / sub))
        assert names == sorted(os.listdir(adobe / 'two' / sub)) and len(names) == 4
        for name in names:
            assert (adobe / 'one' / sub / name).read_bytes() == (adobe / 'two' / sub / name).read_bytes()
    from data.matting_dataset import MattingDataset
    from options.test_options import TestOptions
    opt = TestOptions(['--model', 'dim', '--dataroot', str(adobe / 'one'), '--gpu_ids', '-1']).parse(save=False)
    item = MattingDataset(opt)[0]
    assert item['image'].shape == (3, 30, 40) and 'alpha' in item


def test_named_lists_set_the_order_and_too_few_backgrounds_is_a_user_error(adobe):
    (adobe / 'fg.txt').write_text('b_fg.png\na_fg.png\n')
    (adobe / 'bg.txt').write_text('bg3.png\nbg2.png\nbg1.png\nbg0.jpg\n')
    make_composition1k(str(adobe / 'fg'), str(adobe / 'alpha'), str(adobe / 'bg'), str(adobe / 'c'),
                       fg_names=str(adobe / 'fg.txt'), bg_names=str(adobe / 'bg.txt'), num_bgs=2)
    pairs = [line.split()[2] for line in open(adobe / 'c' / 'pairs.txt').read().splitlines()]
    assert pairs == ['bg3.png', 'bg2.png', 'bg1.png', 'bg0.jpg']
    with pytest.raises(UserInputError, match='need 6 backgrounds'):
        make_composition1k(str(adobe / 'fg'), str(adobe / 'alpha'), str(adobe / 'bg'), str(adobe / 'd'), num_bgs=3)
