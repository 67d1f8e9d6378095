"""One domain's images with instance masks, for InstaGAN inference in one direction."""
from data.base_dataset import BaseDataset, domain_channels
from data.unaligned_seg_dataset import (IMAGE_LAYOUT, SEG_LAYOUT, DetectedInstanceFolder, InstanceFolder,
                                        add_instance_options, mask_detector_from_opt, warn_overflow)


class SingleSegDataset(BaseDataset):
    """Images of one domain with their instance masks.

    Images: ``<dataroot>/<phase><D>/<id>.<ext>``, D = ``--single_domain`` (default: A, or B with
    ``--direction BtoA``). Masks: ``<id>_<k>.<ext>`` in ``--seg_dir`` (default: the image folder
    with ``_seg`` appended, as in unaligned_seg). Masks are read, binarised, augmented, ordered and
    padded exactly as in :class:`data.unaligned_seg_dataset.UnalignedSegDataset`; images without
    masks are kept with all slots empty unless ``--unmasked skip``. With ``--auto_masks`` the masks
    are made by a COCO Mask R-CNN from each image instead (``--seg_dir`` is not read; the
    domain's categories of ``--mask_categories`` are used; see ``UnalignedSegDataset``).

    Returns ``{'A': (nc, H, W) in [-1, 1], 'A_segs': (S, H, W) in {-1, 1}, 'A_paths': str}`` (keys
    say 'A' whatever the domain, as CycleGAN's single mode does); nc = the domain's channels
    (A: input_nc, B: output_nc; swapped for BtoA), S = --max_instances.
    """

    builtin_data = 'shapes'
    value_range = (-1.0, 1.0)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        parser = add_instance_options(parser, is_train)
        parser.add_argument('--single_domain', choices=['A', 'B'], default=None,
                            help='domain folder to read (<phase>A or <phase>B); default from --direction')
        parser.add_argument('--seg_dir', default=None, help='mask folder (default: <image folder>_seg)')
        parser.set_defaults(unmasked='keep')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        d = opt.single_domain or ('B' if opt.direction == 'BtoA' else 'A')
        img_dir = self.domain_dir(d)
        seg_dir = opt.seg_dir or img_dir + '_seg'
        self.max_instances = opt.max_instances
        detector = mask_detector_from_opt(opt, d)
        if detector is not None:
            self.folder = DetectedInstanceFolder(img_dir, opt.max_dataset_size, detector, d,
                                                 IMAGE_LAYOUT.format(phase=opt.phase, d=d))
        else:
            self.folder = InstanceFolder(img_dir, seg_dir, opt.max_dataset_size, self.max_instances,
                                         opt.unmasked, SEG_LAYOUT.format(phase=opt.phase, d=d))
        self.nc = domain_channels(opt)['AB'.index(d)]
        warn_overflow({opt.phase + d: self.folder}, self.max_instances)

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, index):
        A, A_segs, path = self.folder.load(index, self.opt, self.nc, self.max_instances)
        return {'A': A, 'A_segs': A_segs, 'A_paths': path}
