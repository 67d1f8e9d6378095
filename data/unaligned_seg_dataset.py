"""InstaGAN's unpaired two-domain dataset: images with per-instance masks."""
import os
import warnings

import numpy as np
import torch

from data.base_dataset import BaseDataset, apply_transform, domain_channels, get_params, match_channels, transform_masks
from data.image_folder import (as_uint8, check_same_size, index_by_id, index_masks, make_dataset, open_image,
                               read_gray)
from util.errors import UserInputError

SEG_LAYOUT = ('<dataroot>/{phase}{d}/<id>.<ext> with masks <dataroot>/{phase}{d}_seg/<id>_<k>.png '
              '(k = 0, 1, ...; one mask per instance)')
IMAGE_LAYOUT = '<dataroot>/{phase}{d}/<id>.<ext> (--auto_masks: no mask folder needed)'


def add_instance_options(parser, is_train):
    """Options shared by the instance datasets (unaligned_seg, single_seg)."""
    parser.add_argument('--max_instances', type=int, default=20,
                        help='mask slots per image; extra instances (the smallest) are dropped')
    parser.add_argument('--unmasked', choices=['keep', 'skip'], default='skip' if is_train else 'keep',
                        help='images without any mask: keep them with all slots empty, or skip them '
                             '(default: skip when training, keep when testing)')
    g = parser.add_argument_group('automatic masks (--auto_masks: a COCO Mask R-CNN instead of _seg folders)')
    g.add_argument('--auto_masks', action='store_true',
                   help='make the instance masks of each image with torchvision\'s COCO Mask R-CNN when it is '
                        'loaded, instead of reading <phase>A_seg/<phase>B_seg; every image is kept (made again '
                        'at every load: to train, or to inspect and fix masks, write them once with '
                        'datasets/make_auto_masks.py)')
    g.add_argument('--mask_categories', default=None,
                   help="COCO categories to detect: one list for both domains ('person', 'sheep,cow') or one "
                        "per image folder ('A:sheep;B:giraffe' for <phase>A and <phase>B, whatever --direction)")
    g.add_argument('--mask_score_thresh', type=float, default=0.5, help='minimum detection score')
    g.add_argument('--mask_min_area', type=float, default=0.001,
                   help='drop detected masks smaller than this: a fraction of the image (< 1) or pixels (>= 1)')
    g.add_argument('--mask_model_path', default=None,
                   help='local Mask R-CNN state dict (torchvision maskrcnn_resnet50_fpn or _v2); default: '
                        'download torchvision\'s COCO weights (needs the internet once)')
    g.add_argument('--mask_min_size', type=int, default=800,
                   help='the detector resizes the shorter image side to this (torchvision: 800; less is faster)')
    g.add_argument('--mask_max_size', type=int, default=1333, help='... and the longer side to at most this')
    return parser


def mask_detector_from_opt(opt, domains):
    """The lazily built Mask R-CNN of ``--auto_masks`` for ``domains`` (e.g. 'AB'), or None without it.

    Categories are checked now (unknown names raise UserInputError); the model is built on the
    first image, once per process. It runs on the model's device when the data is loaded in the
    main process (``--num_threads 0``, as test.py does), else on the CPU of each worker.
    """
    if not opt.auto_masks:
        return None
    from util.auto_masks import LazyMaskDetector, parse_categories
    categories = parse_categories(opt.mask_categories, tuple(domains))
    path = opt.mask_model_path
    if path is not None and not os.path.isfile(path):
        raise UserInputError(f"--mask_model_path '{path}' does not exist; pass the file of a torchvision "
                             f"Mask R-CNN state dict (e.g. maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth), or leave the "
                             f"option out to download torchvision's COCO weights.")
    device = opt.device if opt.num_threads == 0 else 'cpu'
    return LazyMaskDetector(categories, score_thresh=opt.mask_score_thresh, min_area=opt.mask_min_area,
                            model_path=path, device=device, max_instances=opt.max_instances,
                            min_size=opt.mask_min_size, max_size=opt.mask_max_size)


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
        mask = as_uint8(read_gray(path, role='mask'))
        check_same_size((h, w), mask.shape, image_path, path)
        out[k] = binarise_mask(mask)
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
        items, self.n_unmasked = [], 0
        for key, path in index_by_id(paths, img_dir).items():
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
        path = self.items[index][0]
        img = open_image(path)
        masks = self.masks(index, img)
        params = get_params(opt, img.size, name=path)
        image = match_channels(apply_transform(img, opt, params, 'image'), nc)
        return image, instance_slots(transform_masks(masks, params), n_slots), path

    def masks(self, index, img):
        """Bool masks (K, H, W) of item ``index`` at the size of its RGB image ``img``, from files."""
        path, mask_paths = self.items[index]
        return read_masks(mask_paths, img.size, path)


class DetectedInstanceFolder(InstanceFolder):
    """One domain's images whose masks a detector makes (``--auto_masks``); no ``_seg`` folder.

    Every image is kept (``--unmasked`` does not apply: masks exist only once an image is read).
    The masks come from the original image, before augmentation; the detector already keeps at
    most ``--max_instances`` of them, largest first. An image without any detection gets empty
    slots and a warning naming it.
    """

    def __init__(self, img_dir, max_size, detector, domain, layout):
        self.items = [(p, []) for p in make_dataset(img_dir, max_size, layout)]
        self.n_images, self.n_unmasked, self.n_over = len(self.items), 0, 0
        self.detector, self.domain = detector, domain

    def masks(self, index, img):
        masks = self.detector.detect(np.asarray(img), self.domain)
        if not len(masks):
            warnings.warn(f"--auto_masks: no {'/'.join(self.detector.categories[self.domain])} detected in "
                          f"'{self.items[index][0]}'; its mask slots are empty (lower --mask_score_thresh or "
                          f"--mask_min_area, or make masks with datasets/make_auto_masks.py and fix them).",
                          stacklevel=2)
        return masks


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

    With ``--auto_masks`` no ``_seg`` folder is read: each image's masks are made by a COCO Mask
    R-CNN (``--mask_categories``, ``--mask_score_thresh``, ``--mask_min_area``,
    ``--mask_model_path``; see :mod:`util.auto_masks`) on the original image, then augmented,
    ordered and padded as file masks are; every image is kept.

    Returns ``{'A': (nc_A, H, W) in [-1, 1], 'A_segs': (S, H, W) in {-1, 1}, 'A_paths': str}`` and
    the same for B; S = --max_instances. Sample ``i``: A image ``i % len(A)``, a random B image
    (``i % len(B)`` with ``--serial_batches``). Length: max(len(A), len(B)).
    """

    builtin_data = 'shapes'
    value_range = (-1.0, 1.0)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        return add_instance_options(parser, is_train)

    def __init__(self, opt):
        super().__init__(opt)
        self.max_instances = opt.max_instances
        self.folders = {}
        detector = mask_detector_from_opt(opt, 'AB')
        for d in 'AB':
            img_dir = self.domain_dir(d)
            if detector is not None:
                self.folders[opt.phase + d] = DetectedInstanceFolder(
                    img_dir, opt.max_dataset_size, detector, d, IMAGE_LAYOUT.format(phase=opt.phase, d=d))
                continue
            self.folders[opt.phase + d] = InstanceFolder(
                img_dir, img_dir + '_seg', opt.max_dataset_size, self.max_instances, opt.unmasked,
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
