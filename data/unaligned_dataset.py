"""CycleGAN's unaligned (unpaired) two-domain dataset."""
import torch

from data.base_dataset import BaseDataset, apply_transform, domain_channels, get_params, match_channels
from data.image_folder import make_dataset, open_image


class UnalignedDataset(BaseDataset):
    """Unpaired images of two domains: ``<dataroot>/<phase>A/*`` and ``<dataroot>/<phase>B/*``.

    Sample ``i``: A image ``i % len(A)``; a random B image (``i % len(B)`` with
    ``--serial_batches``), drawn from torch's generator. Each image gets its own augmentation.
    Returns ``{'A': (nc_A, H, W), 'B': (nc_B, H, W)`` in [-1, 1], ``'A_paths', 'B_paths'}``, with
    nc_A, nc_B = input_nc, output_nc (swapped for ``--direction BtoA``). Length: max(len(A), len(B)).
    """

    builtin_data = 'shapes'
    value_range = (-1.0, 1.0)

    def __init__(self, opt):
        super().__init__(opt)
        self.dir_A, self.dir_B = self.domain_dir('A'), self.domain_dir('B')
        layout = f'<dataroot>/{opt.phase}A/<image> and <dataroot>/{opt.phase}B/<image>'
        self.A_paths = make_dataset(self.dir_A, opt.max_dataset_size, layout)
        self.B_paths = make_dataset(self.dir_B, opt.max_dataset_size, layout)
        self.nc_A, self.nc_B = domain_channels(opt)

    def __len__(self):
        return max(len(self.A_paths), len(self.B_paths))

    def _load(self, path, nc):
        img = open_image(path)
        params = get_params(self.opt, img.size, name=path)
        return match_channels(apply_transform(img, self.opt, params, 'image'), nc)

    def __getitem__(self, index):
        A_path = self.A_paths[index % len(self.A_paths)]
        if self.opt.serial_batches:
            index_B = index % len(self.B_paths)
        else:
            index_B = int(torch.randint(len(self.B_paths), (1,)).item())
        B_path = self.B_paths[index_B]
        return {'A': self._load(A_path, self.nc_A), 'B': self._load(B_path, self.nc_B),
                'A_paths': A_path, 'B_paths': B_path}
