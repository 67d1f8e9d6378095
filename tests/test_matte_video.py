"""scripts/matte_video.py: a folder of frames and a tiny generated video, matted against a plate;
outputs at the input's size, frames per second printed, a plate of another size refused."""
import os

import cv2
import numpy as np
import pytest
import torch

from models.bgmv2_networks import MattingRefine
from scripts import matte_video

H, W = 40, 50      # not multiples of 4: the script pads and crops back


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    """4 frames of a moving disc over a plate, as PNGs and as an MJPG .avi, plus random weights."""
    root = tmp_path_factory.mktemp('clip')
    rng = np.random.default_rng(0)
    plate = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    cv2.imwrite(str(root / 'plate.png'), plate)
    os.makedirs(root / 'frames')
    video = cv2.VideoWriter(str(root / 'clip.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (W, H))
    for i in range(4):
        frame = plate.copy()
        cv2.circle(frame, (10 + 8 * i, 20), 8, (30, 200, 90), -1)
        cv2.imwrite(str(root / 'frames' / f'f{i:03d}.png'), frame)
        video.write(frame)
    video.release()
    torch.manual_seed(0)
    torch.save(MattingRefine('mobilenetv2').state_dict(), str(root / 'w.pth'))
    return root


def args(clip, source, out, *extra):
    return ['--input', str(clip / source), '--background', str(clip / 'plate.png'), '--weights', str(clip / 'w.pth'),
            '--out', str(out), '--device', 'cpu', *extra]


def test_frame_folder_gives_alpha_and_composite_per_frame(clip, tmp_path, capsys):
    assert matte_video.main(args(clip, 'frames', tmp_path / 'o', '--refine_mode', 'full')) == 0
    for sub in ('alpha', 'composite'):
        names = sorted(os.listdir(tmp_path / 'o' / sub))
        assert names == [f'f{i:03d}.png' for i in range(4)]
        img = cv2.imread(str(tmp_path / 'o' / sub / names[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (H, W) and img.dtype == np.uint8
    out = capsys.readouterr().out
    assert '4 frames' in out and 'frames/s overall' in out


def test_video_file_gives_two_videos_of_the_same_length(clip, tmp_path, capsys):
    assert matte_video.main(args(clip, 'clip.avi', tmp_path / 'v', '--fourcc', 'MJPG')) == 0
    out = capsys.readouterr().out
    assert '4 frames' in out and 'frames/s network alone' in out
    for name in ('alpha.avi', 'composite.avi'):
        cap = cv2.VideoCapture(str(tmp_path / 'v' / name))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        assert len(frames) == 4 and frames[0].shape[:2] == (H, W)


def test_plate_of_another_size_is_refused_naming_both(clip, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / 'small.png'), np.zeros((H, W - 2, 3), np.uint8))
    argv = args(clip, 'frames', tmp_path / 'o')
    argv[argv.index('--background') + 1] = str(tmp_path / 'small.png')
    assert matte_video.main(argv) == 2
    err = capsys.readouterr().err
    assert 'small.png' in err and 'frames' in err and f'{W - 2}x{H}' in err
