"""History of generated images (Shrivastava et al. 2017): the discriminator sees a mix of current
and past fakes. The pool is part of the training state (``state_dict`` / ``load_state_dict``)."""
import random

import torch


class ImagePool:
    """A buffer of up to ``pool_size`` generated images (``pool_size == 0``: no buffer).

    ``query(images)`` takes (B, C, H, W) and returns (B, C, H, W): each image is either itself or,
    with probability 1/2 once the pool is full, a stored one that it replaces. Randomness comes from
    ``rng`` (a ``random.Random``; by default Python's global generator, whose state the training
    checkpoint saves)."""

    def __init__(self, pool_size, rng=None):
        self.pool_size = pool_size
        self.images = []
        self.rng = rng or random

    def query(self, images):
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if not torch.isfinite(image).all():
                out.append(image)   # a non-finite fake (a step skipped by --nan_policy) is never stored
                continue
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                i = self.rng.randint(0, self.pool_size - 1)
                old = self.images[i].clone()
                self.images[i] = image.clone()
                out.append(old)
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self):
        return {'pool_size': self.pool_size, 'images': [im.cpu() for im in self.images]}

    def load_state_dict(self, state, device='cpu'):
        self.pool_size = state['pool_size']
        self.images = [im.to(device) for im in state['images']]
