"""InstaGAN's unpaired two-domain dataset: images with per-instance masks."""
import os
import warnings

import numpy as np
import torch
from PIL import Image

from data.base_dataset import (BaseDataset, apply_transform, domain_channels, get_params, match_channels,
                               open_image, transform_masks)
from data.image_folder import image_id, index_masks, make_dataset
from util.errors import UserInputError

SEG_LAYOUT = ('<dataroot>/{phase}{d}/<id>.<ext> with masks <dataroot>/{phase}{d}_seg/<id>_<k>.png '
              '(k = 0, 1, ...; one mask per instance)')


def add_instance_options(parser, is_train):
    """Options shared by the instance datasets (unaligned_seg, single_seg)."""
    parser.add_argument('--max_instances', type=int, default=20,
                        help='mask slots per image; extra instances (the smallest) are dropped')
    parser.add_argument('--unmasked', choices=['keep', 'skip'], default='skip' if is_train else 'keep',
                        help='images without any mask: keep them with all slots empty, or skip them '
                             '(default: skip when training, keep when testing)')
    return parser


def binarise_mask(arr):
    """Gray mask (H, W) uint8 -> bool: >= 128 (half range), or >= 1 for masks stored as 0/1."""
    return arr >= (1 if arr.max(initial=0) == 1 else 128)


def read_masks(mask_paths, size, image_path):
    """Read instance masks into a bool array (K, H, W); antialiased RGB/gray masks are binarised.

    ``size`` is the image's (width, height); a mask of another size raises UserInputError naming
    both files.
    """
    w, h = size
    out = np.zeros((len(mask_paths), h, w), dtype=bool)
    for k, path in enumerate(mask_paths):
        try:
            with Image.open(path) as m:
                if m.size != (w, h):
                    raise UserInputError(
                        f"Mask '{path}' is {m.size[0]}x{m.size[1]} but its image '{image_path}' is {w}x{h} "
                        f"(width x height); masks must have their image's size. Resize or regenerate the mask.")
                out[k] = binarise_mask(np.asarray(m.convert('L')))
        except (OSError, ValueError, SyntaxError) as e:
            raise UserInputError(f"Cannot read mask '{path}' (of image '{image_path}'): {e}; "
                                 f"replace or remove it.") from None
    return out


def instance_slots(masks, n_slots):
    """Order instances by area (largest first) into ``n_slots`` slots.

    ``masks``: bool array or tensor (K, H, W), already augmented. Instances that are empty (e.g.
    cropped away) become empty slots; beyond ``n_slots`` the smallest are dropped. Returns
    ``(n_slots, H, W)`` float in {-1, 1}, -1 everywhere in an empty slot.
    """
    masks = masks.numpy() if torch.is_tensor(masks) else np.asarray(masks)  # numpy: no thread-pool overhead
    areas = masks.reshape(len(masks), -1).sum(1) if len(masks) else np.zeros(0, dtype=np.int64)
    order = np.argsort(-areas, kind='stable')
    order = order[areas[order] > 0][:n_slots]
    out = np.full((n_slots,) + masks.shape[-2:], -1.0, dtype=np.float32)
    out[:len(order)] = masks[order] * 2.0 - 1.0
    return torch.from_numpy(out)


class InstanceFolder:
    """One domain's images and their masks, the mask folder indexed once at start-up.

    ``items``: list of ``(image path, [mask paths ordered by k])``. Counts for messages:
    ``n_unmasked`` (images without any mask), ``n_over`` (images with more masks than slots).
    """

    def __init__(self, img_dir, seg_dir, max_size, max_instances, unmasked, layout):
        paths = make_dataset(img_dir, float('inf'), layout)
        index = index_masks(seg_dir)
        seen, items, self.n_unmasked = {}, [], 0
        for path in paths:
            key = image_id(path, img_dir)
            if key in seen:
                raise UserInputError(f"Images '{seen[key]}' and '{path}' share the id '{key}', so their masks "
                                     f"in '{seg_dir}' would be ambiguous; rename or remove one.")
            seen[key] = path
            masks = index.get(key, [])
            if not masks:
                self.n_unmasked += 1
                if unmasked == 'skip':
                    continue
            items.append((path, masks))
        if not items:
            raise UserInputError(f"No image in '{img_dir}' has a mask in '{seg_dir}'. Expected layout: {layout}.")
        self.items = items[:int(min(max_size, len(items)))]
        self.n_images = len(paths)
        self.n_over = sum(len(m) > max_instances for _, m in self.items)
        if self.n_unmasked:
            action = 'skipped' if unmasked == 'skip' else 'kept with all mask slots empty'
            print(f"{img_dir}: {self.n_unmasked} of {len(paths)} images have no mask in '{seg_dir}'; "
                  f"{action} (--unmasked {unmasked}).")

    def __len__(self):
        return len(self.items)

    def load(self, index, opt, nc, n_slots):
        """Image (nc, H, W) in [-1, 1] and masks (n_slots, H, W) in {-1, 1}, augmented alike."""
        path, mask_paths = self.items[index]
        img = open_image(path)
        masks = read_masks(mask_paths, img.size, path)
        params = get_params(opt, img.size, name=path)
        image = match_channels(apply_transform(img, opt, params, 'image'), nc)
        return image, instance_slots(transform_masks(masks, params), n_slots), path


def warn_overflow(folders, max_instances):
    """One warning for the whole dataset with the number of images that have too many masks."""
    counts = {name: f.n_over for name, f in folders.items() if f.n_over}
    if counts:
        detail = ', '.join(f'{n} in {name}' for name, n in counts.items())
        warnings.warn(f'{sum(counts.values())} images have more than --max_instances {max_instances} '
                      f'instance masks ({detail}); the {max_instances} largest after augmentation are kept.',
                      stacklevel=3)


class UnalignedSegDataset(BaseDataset):
    """Unpaired images of two domains with instance masks (InstaGAN's layout).

    Layout: ``<dataroot>/<phase>A/<id>.<ext>`` (any image extension, sub-folders allowed) and
    ``<dataroot>/<phase>A_seg/<id>_<k>.<ext>`` (k = 0, 1, ...), the same for B. Only the folder
    name gets the ``_seg`` suffix (the official code replaced every capital 'A' in the path).

    Masks may be antialiased or RGB: they are converted to gray and binarised at >= 128 (masks
    stored as 0/1 at >= 1). A mask whose size differs from its image, or an unreadable file,
    raises UserInputError naming the files.

    Images without any mask (``--unmasked``): skipped by default when training (they show no
    instance to translate; the official code crashed on them), kept with all slots empty by
    default when testing (every image gets a result); the count is printed once at start-up.

    Each sample's image and masks get the same augmentation (one draw, see data.base_dataset).
    Instances are then ordered by area, largest first, measured after augmentation; instances
    cropped away become empty slots; the ``--max_instances`` slots are padded with empty masks
    (all -1). Images with more masks than slots keep the largest; one warning at start-up counts them.

    Returns ``{'A': (nc_A, H, W) in [-1, 1], 'A_segs': (S, H, W) in {-1, 1}, 'A_paths': str}`` and
    the same for B; S = --max_instances. Sample ``i``: A image ``i % len(A)``, a random B image
    (``i % len(B)`` with ``--serial_batches``). Length: max(len(A), len(B)).
    """

    @staticmethod
    def modify_commandline_options(parser, is_train):
        return add_instance_options(parser, is_train)

    def __init__(self, opt):
        super().__init__(opt)
        self.max_instances = getattr(opt, 'max_instances', 20)
        unmasked = getattr(opt, 'unmasked', 'skip' if opt.isTrain else 'keep')
        self.folders = {}
        for d in 'AB':
            img_dir = os.path.join(opt.dataroot, opt.phase + d)
            self.folders[opt.phase + d] = InstanceFolder(
                img_dir, img_dir + '_seg', opt.max_dataset_size, self.max_instances, unmasked,
                SEG_LAYOUT.format(phase=opt.phase, d=d))
        self.A, self.B = self.folders.values()
        self.nc_A, self.nc_B = domain_channels(opt)
        warn_overflow(self.folders, self.max_instances)

    def __len__(self):
        return max(len(self.A), len(self.B))

    def __getitem__(self, index):
        index_A = index % len(self.A)
        if self.opt.serial_batches:
            index_B = index % len(self.B)
        else:
            index_B = int(torch.randint(len(self.B), (1,)).item())
        A, A_segs, A_path = self.A.load(index_A, self.opt, self.nc_A, self.max_instances)
        B, B_segs, B_path = self.B.load(index_B, self.opt, self.nc_B, self.max_instances)
        return {'A': A, 'B': B, 'A_segs': A_segs, 'B_segs': B_segs, 'A_paths': A_path, 'B_paths': B_path}
