"""InstaGAN with matting (issue 16): ``--blend matte`` composites each translated image over its
input with the soft union of input and translated masks; ``--lambda_alpha`` / ``--lambda_comp`` are
Deep Image Matting's losses on instance edges; ``--upsample resize`` replaces the decoders'
transposed convolutions."""
import pytest
import torch
import torch.nn as nn

from models import create_model
from models.insta_gan_model import (ALPHA_FLOOR, InstaGANModel, PassSide, blend_translation, edge_band,
                                    feather, masks_to_alpha)
from models.set_networks import ResnetSetGenerator
from options.train_options import TrainOptions
from util import checkpoint
from util.errors import UserInputError

TINY = ['--model', 'insta_gan', '--ngf', '4', '--ndf', '4', '--n_blocks', '1', '--load_size', '32',
        '--crop_size', '32', '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0', '--ins_max', '2',
        '--ins_per', '2', '--display_id', '0', '--no_html']


def box_masks(b, n, H, W, boxes):
    """(b, n, H, W) in {-1, 1}: slot k of every sample is the box boxes[k] = (y0, y1, x0, x1), or empty."""
    segs = -torch.ones(b, n, H, W)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        segs[:, k, y0:y1, x0:x1] = 1
    return segs


def test_pixels_outside_the_blend_region_are_the_inputs_bit_for_bit():
    torch.manual_seed(0)
    inp = torch.cat([torch.rand(2, 3, 16, 16) * 2 - 1, box_masks(2, 2, 16, 16, [(2, 6, 2, 6)])], 1)
    out_masks = box_masks(2, 2, 16, 16, [(8, 12, 8, 14)]) * 0.999     # tanh never reaches +-1
    out = torch.cat([torch.rand(2, 3, 16, 16) * 2 - 1, out_masks], 1)
    blended, alpha = blend_translation(inp, out)
    outside = alpha[:, 0] == 0
    assert outside.float().mean() > 0.6          # most of the image is outside both boxes ...
    assert torch.equal(blended[:, :3].permute(1, 0, 2, 3)[:, outside], inp[:, :3].permute(1, 0, 2, 3)[:, outside])
    inside = alpha[:, 0] == 1                    # ... inside either box the generator's image is taken
    assert inside[:, 3, 3].all() and inside[:, 10, 10].all()
    assert torch.allclose(blended[:, :3].permute(1, 0, 2, 3)[:, inside], out[:, :3].permute(1, 0, 2, 3)[:, inside])
    assert torch.equal(blended[:, 3:], out[:, 3:])    # the masks are the generator's


def test_feather_ramps_alpha_outside_the_masks_and_keeps_the_rest():
    torch.manual_seed(0)
    inp = torch.cat([torch.rand(1, 3, 24, 24) * 2 - 1, box_masks(1, 1, 24, 24, [(8, 16, 8, 16)])], 1)
    out = torch.cat([torch.rand(1, 3, 24, 24) * 2 - 1, -torch.ones(1, 1, 24, 24)], 1).requires_grad_()
    hard = blend_translation(inp, out)[1]
    assert torch.equal(feather(hard, 0), hard)
    blended, alpha = blend_translation(inp, out, 2)
    row = alpha[0, 0, 12]                          # through the box's middle: 1 inside, ramp, 0 beyond 4 px
    assert row[8:16].eq(1).all() and row[:4].eq(0).all() and row[20:].eq(0).all()
    ramp = row[16:20]
    assert (ramp > 0).all() and (ramp < 1).all() and (ramp.diff() < 0).all()
    far = alpha[0, 0] == 0
    assert torch.equal(blended[0, :3][:, far], inp[0, :3][:, far])    # beyond the ramp: the input exactly
    blended[:, :3, 12, 17].sum().backward()        # the ramp takes the generator's image in part
    assert out.grad[0, :3, 12, 17].abs().min() > 0


def test_feather_needs_blend_matte(shapes_root):
    for extra in (['--feather', '1'], ['--blend', 'matte', '--feather', '-1']):
        with pytest.raises(UserInputError, match='--feather'):
            create_model(TrainOptions(['--dataroot', shapes_root, *TINY, *extra]).parse())


def test_alpha_floor_keeps_near_empty_translated_masks_out_of_the_blend():
    nearly_empty = torch.full((1, 4, 8, 8), -1 + ALPHA_FLOOR / 2)   # 4 slots just above -1 (as tanh gives)
    assert masks_to_alpha(nearly_empty).eq(0).all()
    half = torch.zeros(1, 1, 8, 8)                                   # a mask value of 0: union 0.5
    assert torch.allclose(masks_to_alpha(half), torch.full_like(half, (0.5 - ALPHA_FLOOR) / (1 - ALPHA_FLOOR)))


def test_gradients_reach_the_mask_outputs_through_the_composite():
    torch.manual_seed(0)
    inp = torch.cat([torch.zeros(1, 3, 8, 8), -torch.ones(1, 1, 8, 8)], 1)
    out = torch.cat([torch.ones(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)], 1).requires_grad_()
    blended, _ = blend_translation(inp, out)
    blended[:, :3].sum().backward()
    assert out.grad[:, 3:].abs().min() > 0      # the image pulls every mask pixel through alpha
    assert out.grad[:, :3].abs().min() > 0


def side(real, fake, rec):
    return PassSide(part=None, real=real, fake=fake, rec=rec, idt=None, fake_set=fake)


def test_alpha_loss_is_zero_for_a_perfect_reconstruction_and_grows_with_edge_errors():
    real = torch.cat([torch.zeros(1, 3, 16, 16), box_masks(1, 2, 16, 16, [(4, 12, 4, 12)])], 1)
    band = edge_band(real[:, 3:])
    assert band[0, 0].any() and not band[0, 1].any()             # the empty slot has no edge band
    assert not band[0, 0, 8, 8] and band[0, 0, 4, 8]             # a band on the boundary, not inside
    eps = 1e-6
    assert InstaGANModel.alpha_loss(side(real, real, real)) <= eps * 1.0001
    blurred = real.clone()
    blurred[:, 3:4] = torch.nn.functional.avg_pool2d(real[:, 3:4], 5, 1, 2, count_include_pad=False)
    worse = real.clone()
    worse[:, 3:4] = -real[:, 3:4]
    l_blur, l_worse = (InstaGANModel.alpha_loss(side(real, real, r)) for r in (blurred, worse))
    assert 0.05 < l_blur < l_worse and abs(l_worse - 1) < 1e-4   # an inverted mask: error 1 everywhere


def test_comp_loss_penalises_image_change_only_where_the_translated_masks_say_background():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    segs = box_masks(1, 1, 16, 16, [(4, 8, 4, 8)])
    real = torch.cat([x, segs], 1)
    translated = box_masks(1, 1, 16, 16, [(4, 12, 4, 12)])       # the instance grows
    fake_img = x.clone()
    fake_img[:, :, 4:12, 4:12] = 0.5                             # change exactly where the new mask is
    fake = torch.cat([fake_img, translated], 1)
    assert InstaGANModel.comp_loss(side(real, fake, fake)) < 1e-5
    spill = fake_img.clone()
    spill[:, :, 12:16, :] = 1.0                                  # change outside the translated mask
    l_spill = InstaGANModel.comp_loss(side(real, torch.cat([spill, translated], 1), fake))
    small = torch.cat([fake_img, segs], 1)                       # the change is not covered by the masks
    l_small = InstaGANModel.comp_loss(side(real, small, fake))
    assert l_spill > 0.05 and l_small > 0.01


class BoxMasks(nn.Module):
    """A set generator whose translated masks are replaced by the box [8, 20) x [8, 20) (x 0.999)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        y = self.net(x)
        n = y.shape[1] - 3
        masks = box_masks(y.shape[0], n, *y.shape[2:], [(8, 20, 8, 20)] * n) * 0.999
        return torch.cat([y[:, :3], masks], 1)


def test_blend_matte_model_keeps_the_background_and_shows_its_alpha(shapes_root):
    opt = TrainOptions(['--dataroot', shapes_root, *TINY, '--blend', 'matte', '--lambda_alpha', '1',
                        '--lambda_comp', '1']).parse()
    model = create_model(opt)
    model.setup(opt)
    from data import create_dataset
    batch = next(iter(create_dataset(opt)))
    model.set_input(batch)
    model.optimize_parameters()
    assert {'alpha_A', 'alpha_B', 'comp_A', 'comp_B'} <= set(model.loss_names)
    losses = model.get_current_losses()
    assert all(losses[n] > 1e-3 for n in ('alpha_A', 'alpha_B', 'comp_A', 'comp_B'))   # the floor is eps = 1e-6
    # an untrained generator's masks are about 0 (alpha ~0.5) everywhere; give it masks of a box
    for name in ('netG_A', 'netG_B'):
        setattr(model, name, BoxMasks(getattr(model, name)))
    model.test()
    visuals = model.get_current_visuals()
    for fake, real, alpha in (('fake_B_img', 'real_A_img', 'fake_B_alpha'), ('fake_A_img', 'real_B_img', 'fake_A_alpha')):
        outside = visuals[alpha][:, 0] == -1                    # alpha 0, shown in [-1, 1]
        assert outside.any()
        diff = (visuals[fake] - visuals[real]).abs().amax(1)
        assert diff[outside].max() == 0                         # bit for bit outside the alpha


def test_matting_loss_weights_must_not_be_negative(shapes_root):
    opt = TrainOptions(['--dataroot', shapes_root, *TINY, '--lambda_comp', '-1']).parse()
    with pytest.raises(UserInputError, match='--lambda_comp'):
        create_model(opt)


@pytest.mark.parametrize('mode', ['resize', 'resize_bilinear'])
def test_resize_upsampling_has_no_transposed_convolution_and_the_same_shapes(mode):
    official = ResnetSetGenerator(3, 3, ngf=4, n_blocks=1)
    resized = ResnetSetGenerator(3, 3, ngf=4, n_blocks=1, upsample=mode)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in official.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resized.modules())
    x = torch.cat([torch.rand(1, 3, 32, 32), box_masks(1, 2, 32, 32, [(4, 12, 4, 12)])], 1)
    assert resized(x).shape == official(x).shape == (1, 5, 32, 32)
    with pytest.raises(UserInputError, match='--upsample'):       # its checkpoint needs the same option
        checkpoint.load_into(official, resized.state_dict(), 'resized.pth', 'netG_A')


def test_default_options_build_the_official_layout():
    """--blend none and --upsample transpose are the defaults: the official checkpoints' keys."""
    opt = TrainOptions(['--dataroot', 'x', *TINY]).parse()
    assert opt.blend == 'none' and opt.upsample == 'transpose'
    assert opt.lambda_alpha == 0 and opt.lambda_comp == 0


def test_blend_matte_takes_the_context_and_comp_losses_on_the_generators_own_image(shapes_root):
    """On the composite the context loss is 0 outside both masks by construction (and the
    compositional loss nearly so); on the generator's own image they teach the generator to draw
    the background (what a shrinking instance needs)."""
    from dataclasses import replace
    from data import create_dataset
    from models.insta_gan_model import NAMES
    opt = TrainOptions(['--dataroot', shapes_root, *TINY, '--blend', 'matte', '--lambda_comp', '1']).parse()
    model = create_model(opt)
    model.setup(opt)
    for name in ('netG_A', 'netG_B'):
        setattr(model, name, BoxMasks(getattr(model, name)))
    model.set_input(next(iter(create_dataset(opt))))
    model.start_passes()
    side = model.forward(0).A
    assert side.fake_raw is not None and torch.equal(side.fake_raw[:, 3:], side.fake[:, 3:])
    assert not torch.equal(side.fake_raw[:, :3], side.fake[:, :3])
    on_raw = model.side_losses(side, model.netD_A, 1.0, NAMES['A'])
    on_composite = model.side_losses(replace(side, fake_raw=None), model.netD_A, 1.0, NAMES['A'])
    assert on_raw['comp_A'] > 0.02 and on_composite['comp_A'] < 0.01 * on_raw['comp_A']
    on_raw, on_composite = on_raw['ctx_A'], on_composite['ctx_A']
    assert on_raw > 0.05 and on_composite < 0.01 * on_raw
    on_raw.backward()
    assert model.netG_A.net.parameters().__next__().grad.abs().sum() > 0   # it trains the generator

    plain = create_model(TrainOptions(['--dataroot', shapes_root, *TINY]).parse())
    plain.setup(plain.opt)
    plain.set_input(next(iter(create_dataset(plain.opt))))
    plain.start_passes()
    assert plain.forward(0).A.fake_raw is None          # --blend none: the official loss on the output


def test_testing_composites_as_trained_unless_told_otherwise(shapes_root, tmp_path, capsys):
    """test.py takes --blend, --feather and --upsample from train_opt.txt when they are not given."""
    from options.test_options import TestOptions
    ck = ['--checkpoints_dir', str(tmp_path), '--name', 'm']
    test = TINY[:-3]                                  # without --display_id 0 --no_html (training only)
    assert TINY[-3:] == ['--display_id', '0', '--no_html']
    opt = TestOptions(['--dataroot', shapes_root, *test, *ck]).parse()     # no train_opt.txt: the defaults
    assert (opt.blend, opt.feather, opt.upsample) == ('none', 0, 'transpose')
    TrainOptions(['--dataroot', shapes_root, *TINY, *ck, '--blend', 'matte', '--feather', '1',
                  '--upsample', 'resize']).parse()   # writes train_opt.txt
    capsys.readouterr()
    opt = TestOptions(['--dataroot', shapes_root, *test, *ck]).parse()
    assert (opt.blend, opt.feather, opt.upsample) == ('matte', 1, 'resize')
    assert '--blend matte: as trained' in capsys.readouterr().out
    assert create_model(opt).blend
    opt = TestOptions(['--dataroot', shapes_root, *test, *ck, '--blend', 'none', '--feather', '0']).parse()
    assert (opt.blend, opt.feather, opt.upsample) == ('none', 0, 'resize')     # the command line wins
    opt = TestOptions(['--dataroot', shapes_root, *test, *ck, '--blend', 'none']).parse()
    with pytest.raises(UserInputError, match='give --feather 0'):
        create_model(opt)


def test_a_recorded_value_this_version_refuses_is_an_error_naming_the_file(shapes_root, tmp_path, capsys):
    from options.test_options import TestOptions
    (tmp_path / 'm').mkdir()
    (tmp_path / 'm' / 'train_opt.txt').write_text('                    blend: sideways\n')
    with pytest.raises(SystemExit) as e:
        TestOptions(['--dataroot', shapes_root, *TINY[:-3], '--checkpoints_dir', str(tmp_path), '--name', 'm']).parse()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'train_opt.txt' in err and "--blend 'sideways'" in err


@pytest.mark.parametrize('upsample', ['transpose', 'resize'])
def test_model_options_reach_the_generators_and_the_composite(shapes_root, upsample):
    """--upsample builds the model's decoders; --feather widens the alpha of every pass's composite."""
    from data import create_dataset
    opt = TrainOptions(['--dataroot', shapes_root, *TINY, '--blend', 'matte', '--feather', '1',
                        '--upsample', upsample]).parse()
    model = create_model(opt)
    model.setup(opt)
    transposed = any(isinstance(m, nn.ConvTranspose2d) for m in model.netG_A.modules())
    assert transposed == (upsample == 'transpose')
    for name in ('netG_A', 'netG_B'):
        setattr(model, name, BoxMasks(getattr(model, name)))
    model.set_input(next(iter(create_dataset(opt))))
    model.start_passes()
    side = model.forward(0).A
    assert torch.equal(side.alpha, blend_translation(side.real, side.fake_raw, 1)[1])
    assert not torch.equal(side.alpha, blend_translation(side.real, side.fake_raw, 0)[1])
