"""CycleGAN's single-domain dataset, for one-directional test runs."""
import os

from data.base_dataset import BaseDataset, apply_transform, domain_channels, get_params, match_channels
from data.image_folder import make_dataset, open_image


class SingleDataset(BaseDataset):
    """The images under ``<dataroot>`` itself (recursive), as CycleGAN's single mode reads them.

    Returns ``{'A': (nc, H, W) in [-1, 1], 'A_paths': str}`` with nc = input_nc (output_nc for
    ``--direction BtoA``). Length: the number of images (at most ``--max_dataset_size``).
    """

    builtin_data = 'shapes'
    value_range = (-1.0, 1.0)

    @classmethod
    def builtin_dataroot(cls, path, opt):
        """One domain's folder of the shapes set: ``<phase>A`` (``<phase>B`` for ``--direction BtoA``)."""
        return os.path.join(path, opt.phase + ('B' if opt.direction == 'BtoA' else 'A'))

    def __init__(self, opt):
        super().__init__(opt)
        self.A_paths = make_dataset(opt.dataroot, opt.max_dataset_size, '<dataroot>/<image> (any sub-folder)')
        self.nc = domain_channels(opt)[0]

    def __len__(self):
        return len(self.A_paths)

    def __getitem__(self, index):
        path = self.A_paths[index]
        img = open_image(path)
        params = get_params(self.opt, img.size, name=path)
        return {'A': match_channels(apply_transform(img, self.opt, params, 'image'), self.nc), 'A_paths': path}
