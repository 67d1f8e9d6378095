"""AlphaGAN generator: output range and size, output stride 8, dilation of every conv4_x / conv5_x
block, batch-size-1 training, and loading a local torchvision ResNet-50 state dict."""

import pytest
import torch
import torchvision

from models.matting_networks import AlphaGANGenerator
from util.errors import UserInputError


def _input(batch, height, width, seed=0):
    """(B, 4, H, W): normalised-RGB-like noise + a trimap in {0, 0.5, 1}."""
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, 3, height, width, generator=gen)
    trimap = torch.randint(0, 3, (batch, 1, height, width), generator=gen).float() / 2
    return torch.cat([rgb, trimap], dim=1)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return AlphaGANGenerator().eval()


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A torchvision resnet50 state dict (random init, BN statistics randomised) saved to disk."""
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "bias")) and value.is_floating_point():
            state[key] = torch.randn_like(value)
        elif key.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            state[key] = torch.rand_like(value) + 0.5
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def test_forward_320_gives_one_channel_alpha_in_unit_range(generator):
    with torch.no_grad():
        alpha = generator(_input(1, 320, 320))
    assert alpha.shape == (1, 1, 320, 320)
    assert torch.isfinite(alpha).all()
    assert alpha.min() >= 0 and alpha.max() <= 1


def test_forward_any_size_is_padded_and_cropped_back(generator):
    with torch.no_grad():
        alpha = generator(_input(1, 333, 517))
        tiny = generator(_input(1, 10, 7))  # smaller than the padding: replicate instead of reflect
    assert alpha.shape == (1, 1, 333, 517)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert tiny.shape == (1, 1, 10, 7)


def test_forward_rejects_wrong_channel_count(generator):
    with pytest.raises(ValueError, match="4"):
        generator(torch.zeros(1, 3, 32, 32))


def test_encoder_deepest_features_are_one_eighth_of_input(generator):
    with torch.no_grad():
        feats = generator.encoder(_input(1, 64, 96))
    assert feats["conv1"].shape == (1, 64, 32, 48)
    assert feats["pool_indices"].shape == (1, 64, 16, 24)
    assert feats["conv2_x"].shape == (1, 256, 16, 24)
    assert feats["conv3_x"].shape == (1, 512, 8, 12)
    assert feats["conv4_x"].shape == (1, 1024, 8, 12)
    assert feats["conv5_x"].shape == (1, 2048, 8, 12)


@pytest.mark.parametrize("stage, dilation", [("layer3", 2), ("layer4", 4)])
def test_every_block_of_conv4_and_conv5_is_dilated_and_unstrided(generator, stage, dilation):
    blocks = list(getattr(generator.encoder, stage))
    assert len(blocks) == {"layer3": 6, "layer4": 3}[stage]
    for index, block in enumerate(blocks):
        assert block.conv2.dilation == (dilation, dilation), f"{stage}[{index}]"
        assert block.conv2.padding == (dilation, dilation), f"{stage}[{index}]"
        convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(conv.stride == (1, 1) for conv in convs), f"{stage}[{index}] strides"
    # conv3_x still strides, so the output stride is exactly 8.
    assert generator.encoder.layer2[0].conv2.stride == (2, 2)


def test_training_step_with_batch_size_one_backpropagates_to_trimap_weights():
    torch.manual_seed(0)
    gen = AlphaGANGenerator().train()
    x = _input(1, 64, 64)
    gt = torch.rand(1, 1, 64, 64)
    loss = (gen(x) - gt).abs().mean()
    loss.backward()
    trimap_grad = gen.encoder.conv1.weight.grad[:, 3]
    assert torch.isfinite(trimap_grad).all() and trimap_grad.abs().sum() > 0
    assert gen.alpha_conv.weight.grad.abs().sum() > 0


def test_pretrained_path_fills_rgb_weights_zeroes_trimap_and_loads_the_rest(resnet50_file):
    path, state = resnet50_file
    gen = AlphaGANGenerator(pretrained_path=path)
    conv1 = gen.encoder.conv1.weight.detach()
    assert conv1.shape == (64, 4, 7, 7)
    assert torch.equal(conv1[:, :3], state["conv1.weight"])
    assert torch.count_nonzero(conv1[:, 3]) == 0
    loaded = gen.encoder.state_dict()
    compared = 0
    for key, value in state.items():
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        assert torch.equal(loaded[key], value), key
        compared += 1
    assert compared == len(loaded) - 1  # every encoder entry except conv1.weight


def test_pretrained_path_with_instance_norm_takes_affine_weights_and_drops_statistics(resnet50_file):
    path, state = resnet50_file
    gen = AlphaGANGenerator(pretrained_path=path, norm="instance")
    assert isinstance(gen.encoder.bn1, torch.nn.InstanceNorm2d)
    assert gen.encoder.bn1.affine and not gen.encoder.bn1.track_running_stats
    assert torch.equal(gen.encoder.layer4[2].bn3.weight.detach(), state["layer4.2.bn3.weight"])
    with torch.no_grad():
        assert gen.eval()(_input(1, 40, 40)).shape == (1, 1, 40, 40)


def test_corrupt_or_wrong_weights_file_raises_user_input_error_naming_it(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(UserInputError, match="corrupt.pth"):
        AlphaGANGenerator(pretrained_path=corrupt)

    missing = tmp_path / "missing.pth"
    with pytest.raises(UserInputError, match="missing.pth"):
        AlphaGANGenerator(pretrained_path=missing)

    wrong = tmp_path / "resnet18_like.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, wrong)
    with pytest.raises(UserInputError, match="resnet18_like.pth"):
        AlphaGANGenerator(pretrained_path=wrong)


def test_unsupported_norm_raises_user_input_error():
    with pytest.raises(UserInputError, match="norm"):
        AlphaGANGenerator(norm="none")
