"""Matte a video or a folder of frames with BackgroundMattingV2, given one background plate.

    python scripts/matte_video.py --input clip.mp4 --background plate.png --weights pytorch_mobilenetv2.pth \\
        --backbone mobilenetv2 --out out/ [--refine_mode sampling --refine_sample_pixels 80000 --backbone_scale 0.25]

``--input``: a video file (decoded by OpenCV) or a folder of frames (sorted by name).
``--background``: the scene without the subject, the frames' size. ``--weights``: a MattingRefine
state dict, ours (``latest_net_G.pth``) or official. Writes, in ``--out``:

- for a video: ``alpha.<ext>`` (gray) and ``composite.<ext>`` (the foreground over
  ``--color`` or over the image ``--new_background``), same frame rate (``--fourcc``, default mp4v);
- for a folder: ``alpha/<frame>.png`` and ``composite/<frame>.png`` (8 bits, the input's size).

Prints a progress bar and, at the end, the frames per second of the whole loop (decode, network,
encode) and of the network alone. Exit status 0; 2 on a user error (bad paths, sizes, weights).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.image_folder import as_unit, make_dataset, read_rgb  # noqa: E402
from models.base_model import load_weights_file  # noqa: E402
from models.bgmv2_networks import BACKBONES, REFINE_MODES, MattingRefine  # noqa: E402
from util import train_step  # noqa: E402
from util.errors import UserInputError, run_cli  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--input', required=True, help='video file, or folder of frames')
    p.add_argument('--background', required=True, help='background plate (an image of the frames\' size)')
    p.add_argument('--weights', required=True, help='MattingRefine state dict (ours or official)')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--backbone', default='mobilenetv2', choices=BACKBONES)
    p.add_argument('--backbone_scale', type=float, default=0.25)
    p.add_argument('--refine_mode', default='sampling', choices=REFINE_MODES)
    p.add_argument('--refine_sample_pixels', type=int, default=80_000)
    p.add_argument('--refine_threshold', type=float, default=0.1)
    p.add_argument('--refine_kernel_size', type=int, default=3, choices=(1, 3))
    p.add_argument('--color', default='0,177,64', help='R,G,B (0-255) behind the foreground in the composite')
    p.add_argument('--new_background', default=None, help='an image behind the foreground instead (resized)')
    p.add_argument('--fourcc', default='mp4v', help='codec of the output videos (OpenCV fourcc)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', default='none', choices=('none', 'bf16', 'fp16'), help='mixed precision')
    return p


# ----------------------------------------------------------------------------- frames in and out
def frames_of(path):
    """(iterator of (name, RGB uint8 frame), number of frames or None, frames per second or None)."""
    if os.path.isdir(path):
        files = make_dataset(path, recursive=False, role='frame')

        def read():
            for f in files:
                yield os.path.splitext(os.path.basename(f))[0], read_rgb(f, 'frame')
        return read(), len(files), None
    if not os.path.isfile(path):
        raise UserInputError(f'--input {path}: no such file or folder')
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise UserInputError(f'--input {path}: OpenCV cannot open it as a video')
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0

    def read():
        i = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield f'{i:06d}', cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                i += 1
        finally:
            cap.release()
    return read(), count, fps


class Writer:
    """Alpha and composite frames to two videos (``fps`` given) or two folders of PNGs."""

    def __init__(self, out, fps, fourcc, ext):
        self.out, self.fps, self.fourcc, self.ext = out, fps, fourcc, ext
        self.videos = None
        if fps is None:
            for sub in ('alpha', 'composite'):
                os.makedirs(os.path.join(out, sub), exist_ok=True)
        else:
            os.makedirs(out, exist_ok=True)

    def write(self, name, alpha, composite):
        """alpha (H, W) uint8, composite (H, W, 3) RGB uint8."""
        if self.fps is None:
            cv2.imwrite(os.path.join(self.out, 'alpha', name + '.png'), alpha)
            cv2.imwrite(os.path.join(self.out, 'composite', name + '.png'), cv2.cvtColor(composite, cv2.COLOR_RGB2BGR))
            return
        if self.videos is None:
            h, w = alpha.shape
            code = cv2.VideoWriter_fourcc(*self.fourcc)
            self.videos = [cv2.VideoWriter(os.path.join(self.out, f'{n}{self.ext}'), code, self.fps, (w, h), color)
                           for n, color in (('alpha', False), ('composite', True))]
            if not all(v.isOpened() for v in self.videos):
                raise UserInputError(f'OpenCV cannot write {self.ext} videos with --fourcc {self.fourcc}; try '
                                     '--fourcc MJPG with an .avi input name, or a folder of frames')
        self.videos[0].write(alpha)
        self.videos[1].write(cv2.cvtColor(composite, cv2.COLOR_RGB2BGR))

    def close(self):
        for v in self.videos or []:
            v.release()


# ----------------------------------------------------------------------------- matting
def load_network(args, device):
    net = MattingRefine(args.backbone, args.backbone_scale, args.refine_mode, args.refine_sample_pixels,
                        args.refine_threshold, args.refine_kernel_size)
    if not os.path.isfile(args.weights):
        raise UserInputError(f'--weights {args.weights}: no such file')
    try:
        net.load_state_dict(load_weights_file(args.weights), strict=True)
    except RuntimeError as e:
        raise UserInputError(f'--weights {args.weights} does not fit MattingRefine({args.backbone}): '
                             f'{str(e).splitlines()[0]}. Check --backbone.') from None
    return net.to(device).eval()


def to_tensor(rgb_u8, device):
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(rgb_u8)).to(device).permute(2, 0, 1)[None].float() / 255.0


def matte(net, src, bgr, amp):
    """(1, 3, H, W) src and bgr -> alpha (1, 1, H, W), foreground (1, 3, H, W); pads to multiples of 4."""
    h, w = src.shape[2:]
    pad = (0, -w % 4, 0, -h % 4)
    if any(pad):
        src, bgr = F.pad(src, pad, mode='replicate'), F.pad(bgr, pad, mode='replicate')
    with torch.no_grad(), train_step.autocast(amp, src.device):
        pha, fgr = net(src, bgr)[:2]
    return pha[:, :, :h, :w].float(), fgr[:, :, :h, :w].float()


def to_u8(t):
    return (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def run(args):
    device = torch.device(args.device)
    frames, count, fps = frames_of(args.input)
    plate_u8 = read_rgb(args.background, 'background plate')
    plate_u8 = plate_u8 if plate_u8.dtype == np.uint8 else (as_unit(plate_u8) * 255 + 0.5).astype(np.uint8)
    net = load_network(args, device)
    bgr = to_tensor(plate_u8, device)
    try:
        color = torch.tensor([float(v) / 255 for v in args.color.split(',')], device=device).view(1, 3, 1, 1)
        assert color.numel() == 3
    except (ValueError, AssertionError):
        raise UserInputError(f'--color {args.color!r}: expected R,G,B with values 0-255') from None
    behind = color
    ext = os.path.splitext(args.input)[1] if fps is not None else ''
    writer = Writer(args.out, fps, args.fourcc, ext if ext.lower() in ('.mp4', '.avi', '.mov', '.mkv') else '.mp4')
    net_time, n, t0 = 0.0, 0, time.perf_counter()
    try:
        for name, frame in tqdm(frames, total=count, desc='matte', unit='frame', file=sys.stdout):
            if frame.dtype != np.uint8:
                frame = (as_unit(frame) * 255 + 0.5).astype(np.uint8)
            if frame.shape[:2] != plate_u8.shape[:2]:
                raise UserInputError(f"frame {name} of '{args.input}' is {frame.shape[1]}x{frame.shape[0]} but the "
                                     f"background plate '{args.background}' is {plate_u8.shape[1]}x{plate_u8.shape[0]} "
                                     '(width x height); they must be the same size')
            if n == 0 and args.new_background:
                img = to_tensor(read_rgb(args.new_background, 'new background'), device)
                behind = F.interpolate(img, frame.shape[:2], mode='bilinear', align_corners=False)
            src = to_tensor(frame, device)
            t = time.perf_counter()
            pha, fgr = matte(net, src, bgr, args.amp)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            net_time += time.perf_counter() - t
            comp = pha * fgr + (1 - pha) * behind
            writer.write(name, to_u8(pha[0, 0]), to_u8(comp[0].permute(1, 2, 0)))
            n += 1
    finally:
        writer.close()
    total = time.perf_counter() - t0
    if n == 0:
        raise UserInputError(f'--input {args.input}: no frame could be read')
    print(f'{n} frames: {n / total:.2f} frames/s overall, {n / net_time:.2f} frames/s network alone '
          f'({args.refine_mode}, backbone_scale {args.backbone_scale}, {device.type}); output in {args.out}')
    return n


def main(argv=None):
    def go(argv):
        run(build_parser().parse_args(argv))
        return 0
    return run_cli(go, argv)


if __name__ == '__main__':
    sys.exit(main())
