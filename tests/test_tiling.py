"""Tiled and scaled inference (util/tiling.py) and the matting models' --tile / --tile_overlap /
--max_side: tiles cover the image with the asked overlap, the blend is a convex combination (a
pointwise network gives back its untiled output exactly), the AlphaGAN generator tiled agrees with
it untiled within a stated tolerance, and --max_side returns a matte of the input's size."""
import sys

import pytest
import torch

from models import create_model
from models.matting_networks import AlphaGANGenerator
from options.test_options import TestOptions
from util.errors import UserInputError
from util.tiling import ramp, scaled, tile_starts, tiled

sys.path.insert(0, __file__.rsplit('/', 1)[0])
from test_matting_speed import _input, _randomise_norms  # noqa: E402

# Tiled vs untiled AlphaGAN generator (--ngf 8, norms randomised, random weights), (1, 4, 256, 320)
# input, 128 px tiles overlapping by 32: mean |difference| <= 2e-3 and max <= 2e-2 on alpha in
# [0, 1] (measured 7e-4 / 9.4e-3). Not zero: every output pixel sees the whole image (ASPP's
# image pooling, dilated conv5_x), a tile only itself.
TILED_MEAN_TOL, TILED_MAX_TOL = 2e-3, 2e-2


@pytest.mark.parametrize('size,tile,overlap', [(100, 64, 16), (256, 128, 32), (1000, 256, 64), (64, 64, 16),
                                               (4000, 1024, 64), (3000, 1024, 64)])
def test_tiles_cover_the_axis_with_at_least_the_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    ends = [min(size, s + tile) for s in starts[:-1]] + [size]
    assert starts[0] == 0 and ends[-1] == size
    assert all(s % 32 == 0 for s in starts)
    assert all(e - s <= tile + 31 for s, e in zip(starts, ends))            # bounded window
    assert all(ends[i] - starts[i + 1] >= min(overlap, tile) for i in range(len(starts) - 1))


def test_ramp_is_one_inside_and_rises_over_the_overlap():
    w = ramp(10, True, True, 3)
    assert torch.all(w > 0) and torch.all(w <= 1)
    assert torch.equal(w[3:7], torch.ones(4))
    assert w[0] < w[1] < w[2] < 1 and torch.allclose(w.flip(0), w)
    assert torch.equal(ramp(10, False, False, 3), torch.ones(10))


def test_tiled_pointwise_function_gives_back_the_untiled_output():
    x = torch.rand(2, 4, 150, 217)
    fn = lambda t: (t[:, :1] * t[:, 3:4], None)  # noqa: E731  tuple output with a None, as DIM's stage 1
    out, none = tiled(fn, x, 64, 16)
    assert none is None and out.shape == (2, 1, 150, 217)
    assert torch.allclose(out, x[:, :1] * x[:, 3:4], atol=1e-6)


def test_one_tile_when_the_image_fits():
    calls = []
    x = torch.rand(1, 4, 60, 64)
    tiled(lambda t: calls.append(t.shape) or t[:, :1], x, 64, 16)
    assert calls == [x.shape]


def test_tiled_generator_agrees_with_untiled_within_the_stated_tolerance():
    torch.manual_seed(0)
    net = _randomise_norms(AlphaGANGenerator(width=8)).eval()
    x = _input(1, 256, 320)
    with torch.no_grad():
        full, tiles = net(x), tiled(net, x, 128, 32)
    diff = (tiles - full).abs()
    assert tiles.shape == full.shape
    assert diff.mean() <= TILED_MEAN_TOL and diff.max() <= TILED_MAX_TOL
    assert tiles.min() >= 0 and tiles.max() <= 1


def test_scaled_runs_the_network_small_and_returns_the_input_size():
    seen = []
    x = torch.rand(1, 4, 90, 200)
    x[:, 3] = torch.randint(0, 3, (90, 200)).float() / 2

    def fn(t):
        seen.append(t)
        return t[:, 3:4]
    out = scaled(fn, x, 50, nearest_channels=(3,))
    assert seen[0].shape[-2:] == (22, 50) and out.shape == (1, 1, 90, 200)
    assert set(seen[0][:, 3].unique().tolist()) <= {0.0, 0.5, 1.0}     # the trimap stays ternary
    assert scaled(fn, x, 200) is not None and seen[-1] is x             # fits: the input as it is


def _test_model(tmp_path, *extra):
    opt = TestOptions(['--model', 'alphagan', '--dataroot', str(tmp_path), '--checkpoints_dir', str(tmp_path),
                       '--name', 'tiling', '--gpu_ids', '-1', '--ngf', '8', *extra]).parse()
    return create_model(opt)


def _batch(h, w):
    gen = torch.Generator().manual_seed(0)
    trimap = torch.randint(0, 3, (1, 1, h, w), generator=gen).float() / 2
    return {'image': torch.rand(1, 3, h, w, generator=gen), 'trimap': trimap, 'path': ['x.png']}


def test_max_side_and_tile_options_give_a_matte_of_the_input_size(tmp_path):
    for extra, calls_expected in ((['--max_side', '48'], [(1, 4, 27, 48)]),
                                  (['--tile', '64', '--tile_overlap', '16'], None)):
        model = _test_model(tmp_path, *extra)
        model.eval()
        shapes = []
        model.netG.register_forward_pre_hook(lambda m, i: shapes.append(tuple(i[0].shape)))
        model.set_input(_batch(57, 100))
        model.test()
        assert model.alpha.shape == (1, 1, 57, 100)
        assert model.alpha.min() >= 0 and model.alpha.max() <= 1
        if calls_expected:
            assert shapes == calls_expected
        else:
            assert len(shapes) == 2 and all(s[-1] <= 64 + 31 for s in shapes)   # 2 tiles across


@pytest.mark.parametrize('extra,match', [(['--tile', '100'], 'multiple of 32'), (['--tile', '32'], 'at least 64'),
                                         (['--tile', '128', '--tile_overlap', '80'], 'tile_overlap'),
                                         (['--max_side', '16'], 'max_side')])
def test_bad_tiling_options_are_user_errors(tmp_path, extra, match):
    with pytest.raises(UserInputError, match=match):
        _test_model(tmp_path, *extra)
