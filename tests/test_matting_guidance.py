"""Known-colour guidance (``--guidance known_colours``, models/matting_guidance.py): the nearest known
colours and their projected alpha, and the AlphaGAN and DIM networks that take them."""
import pytest
import torch

from models import create_model
from models.matting_guidance import known_colours
from options.test_options import TestOptions
from options.train_options import TrainOptions
from scripts.benchmark import first_conv
from util.errors import UserInputError

RED, BLUE = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])


def two_colour_strip(width=16):
    """(1, 3, 4, W) red at the left (trimap 1, 4 columns), blue at the right (trimap 0, 4 columns) and
    between them the exact composites of the two with alpha falling from 1 to 0 (trimap 0.5)."""
    ramp = torch.cat([torch.ones(4), torch.linspace(1.0, 0.0, width - 6)[1:-1], torch.zeros(4)])
    a = ramp.view(1, 1, 1, width).expand(1, 1, 4, width)
    image = a * RED.view(1, 3, 1, 1) + (1 - a) * BLUE.view(1, 3, 1, 1)
    trimap = torch.full_like(a, 0.5)
    trimap[..., :4] = 1.0
    trimap[..., -4:] = 0.0
    return image.contiguous(), trimap.contiguous(), a


def test_projection_between_the_nearest_known_colours_recovers_the_mixing_ratio():
    image, trimap, a = two_colour_strip()
    fg, bg, alpha = known_colours(image, trimap)
    assert torch.allclose(fg, RED.view(1, 3, 1, 1).expand_as(fg))
    assert torch.allclose(bg, BLUE.view(1, 3, 1, 1).expand_as(bg))
    assert torch.allclose(alpha, a, atol=1e-6)


def test_nearest_means_nearest_per_pixel():
    image, trimap, _ = two_colour_strip()
    image[0, :, :, 0] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1)   # a green known-fg column at the far left
    fg, _, _ = known_colours(image, trimap)
    assert torch.equal(fg[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]))   # itself
    assert torch.equal(fg[0, :, 0, 8], RED)                             # the red columns are nearer


def test_without_known_foreground_there_is_no_evidence():
    image, trimap, _ = two_colour_strip()
    trimap[trimap == 1.0] = 0.5
    fg, bg, alpha = known_colours(image, trimap)
    assert torch.equal(fg, bg)
    assert torch.equal(alpha, torch.full_like(alpha, 0.5))


def test_a_batch_is_handled_image_by_image():
    image, trimap, a = two_colour_strip()
    flipped = (image.flip(-1), trimap.flip(-1))
    _, _, alpha = known_colours(torch.cat([image, flipped[0]]), torch.cat([trimap, flipped[1]]))
    assert torch.allclose(alpha[0], a[0], atol=1e-6) and torch.allclose(alpha[1], a[0].flip(-1), atol=1e-6)


@pytest.mark.parametrize('name', ['alphagan', 'dim'])
def test_guidance_feeds_11_channels_and_a_checkpoint_needs_the_same_option(name, tmp_path):
    common = ['--model', name, '--dataroot', str(tmp_path), '--checkpoints_dir', str(tmp_path), '--name', 'g',
              '--gpu_ids', '-1'] + (['--ngf', '4'] if name == 'alphagan' else [])
    opt = TrainOptions(common + ['--guidance', 'known_colours']
                       + (['--lambda_gan', '0'] if name == 'alphagan' else [])).parse(save=False)
    model = create_model(opt)
    assert first_conv(model).in_channels == 11
    image, trimap, a = (torch.cat([t] * 8, dim=2) for t in two_colour_strip(32))
    model.set_input({'image': image, 'trimap': trimap, 'alpha': a, 'fg': RED.view(1, 3, 1, 1).expand_as(image),
                     'bg': BLUE.view(1, 3, 1, 1).expand_as(image), 'path': ['x.png']})
    x = model.generator_input() if name == 'alphagan' else model.network_input()
    assert x.shape == (1, 11, 32, 32)
    assert torch.allclose(x[:, 10:], a, atol=1e-6)   # the projected alpha is the last channel
    before = first_conv(model).weight.detach().clone()
    model.optimize_parameters()
    assert not torch.equal(before[:, 4:], first_conv(model).weight[:, 4:])     # the guidance is learned from
    model.save_networks('latest')
    plain = TestOptions(common + ['--phase', 'test']).parse(save=False)
    with pytest.raises(UserInputError, match='--guidance'):                    # guided checkpoint, plain network
        m = create_model(plain)
        m.setup(plain)
    guided = TestOptions(common + ['--phase', 'test', '--guidance', 'known_colours']).parse(save=False)
    m = create_model(guided)
    m.setup(guided)
    assert first_conv(m).in_channels == 11 and m.report_options()['guidance'] == 'known_colours'

    TrainOptions(common + ['--guidance', 'known_colours']).parse()            # writes train_opt.txt
    as_trained = TestOptions(common + ['--phase', 'test']).parse(save=False)
    assert as_trained.guidance == 'known_colours'                              # test.py takes it from there
    m = create_model(as_trained)
    m.setup(as_trained)
    assert first_conv(m).in_channels == 11


def test_dim_guidance_error_names_the_option_and_the_port_path_refuses_it(tmp_path):
    common = ['--model', 'dim', '--dataroot', str(tmp_path), '--checkpoints_dir', str(tmp_path), '--name', 'g',
              '--gpu_ids', '-1']
    create_model(TrainOptions(common + ['--guidance', 'known_colours']).parse(save=False)).save_networks('latest')
    plain = TestOptions(common + ['--phase', 'test']).parse(save=False)
    with pytest.raises(UserInputError, match='11 input channels.*--guidance known_colours'):
        create_model(plain).setup(plain)
    with pytest.raises(UserInputError, match='--dim_fit pad'):                  # the port's deploy path has none
        create_model(TestOptions(common + ['--phase', 'test', '--guidance', 'known_colours', '--dim_preset',
                                           'port']).parse(save=False))
