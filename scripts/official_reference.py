"""The official InstaGAN training step's execution structure, re-implemented for timing.

THIS IS NOT THE OFFICIAL CODE. It is our own minimal re-implementation of how the official
InstaGAN code (github.com/sangwoomo/instagan, ``models/networks.py`` and
``models/insta_gan_model.py``; none of its code is copied here) ORGANISES its computation, so that
``scripts/benchmark.py --impl official`` can time that structure against ours with the same
weights and the same FLOPs per instance. It reuses the submodules of our set networks
(``encoder_img``, ``encoder_seg``, ``decoder_img``, ``decoder_seg`` of
:class:`models.set_networks.ResnetSetGenerator`; ``feature_img``, ``feature_seg``, ``classifier``
of :class:`models.set_networks.NLayerSetDiscriminator`) and our model's optimizers, losses and
image pools; only the execution structure differs:

* Generator (:class:`PerSlotSetGenerator`): the mask encoder and the mask decoder run once per
  mask slot in a Python loop, with one host-side emptiness test per slot (the official
  ``ResnetSetGenerator.forward``); ours runs all masks of the batch in one call each.
* Kernels: the official code's. The mask decoder's last layer is a plain ``nn.Conv2d`` (oneDNN's
  direct kernel) and instance norm is ``F.instance_norm``; ours take the faster CPU paths of
  :class:`models.shift_conv.ShiftSumConv2d` and :class:`models.instance_norm.InstanceNorm2d`.
* Discriminator (:class:`PerSlotSetDiscriminator`): likewise one ``feature_seg`` call per slot.
  With spectral norm in train mode each call is one more power iteration, as with the official
  spectral-norm wrapper (the official conversion notes in ``models/official_convert.py``).
* Model (:class:`OfficialStructureInstaGAN`): each pass makes six separate generator calls
  (G_A(real_A), G_B(fake_B), G_B(real_B), G_A(fake_A) in the forward, then the identity calls
  G_B(real_A) and G_A(real_B) inside the generator loss), then one G step and one D step; ours
  fuses the calls of each generator into one batched call (three calls a pass).

Scope and deliberate differences: batch size 1 only (the official code mixes or crashes at batch
> 1, so there is nothing to compare there); ``ceil(ins_max / ins_per)`` passes like ours (the
official code takes ``ins_max // ins_per``; the two agree when ``ins_per`` divides ``ins_max``,
as in every benchmark setting); a slot-0 fallback when every slot is empty (as the official
networks do; ours then skips the mask branch). Numerically, :class:`PerSlotSetGenerator` equals
our generator at batch 1 (``tests/test_benchmark.py``), and with an official checkpoint it
reproduces the official generator's output.
"""
import math

import torch
import torch.nn as nn

from models.insta_gan_model import merge_masks, weighted_l1
from models.instance_norm import set_group_norm
from models.losses import discriminator_loss
from models.shift_conv import set_shift_sum
from util import train_step


def _slot_is_filled(masks, k):
    """Host-side test (one device sync, as in the official loop): does mask slot ``k`` hold an
    instance anywhere in the batch? masks (B, N, H, W) in [-1, 1]."""
    return bool((masks[:, k] > -1).any())


def _filled_slots(masks):
    """Indices of the non-empty slots of (B, N, H, W) masks, one host test per slot; slot 0 when
    every slot is empty (the official networks then push slot 0 through the mask branch)."""
    slots = [k for k in range(masks.shape[1]) if _slot_is_filled(masks, k)]
    return slots or [0][:masks.shape[1]]


def official_kernels(net):
    """Turn off our faster CPU paths inside ``net`` (shift-sum output convolution, group-norm
    instance norm): the official code runs ``nn.Conv2d`` and ``nn.InstanceNorm2d`` as they are.
    Changes ``net`` itself, so call it only on networks that are timed as the official ones."""
    set_shift_sum(net, False)
    set_group_norm(net, False)


def _check_batch_one(inp, who):
    if inp.shape[0] != 1:
        raise ValueError(f'{who}: the official execution structure is only defined at batch size 1 '
                         f'(the official code mixes or crashes at batch > 1); got batch {inp.shape[0]}')


class PerSlotSetGenerator(nn.Module):
    """Our ``ResnetSetGenerator`` (its submodules and weights), executed slot by slot.

    Input (1, input_nc + N, H, W) in [-1, 1]: image, then N mask slots (all -1 = empty slot).
    Output (1, output_nc + N, H, W) in [-1, 1]: translated image, then per slot the translated
    mask (filled slots) or the input slot unchanged (empty slots).

    Turns off ``net``'s faster CPU paths (:func:`official_kernels`), so wrap only a network that
    is timed as the official one.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net
        official_kernels(net)

    def forward(self, inp):
        _check_batch_one(inp, 'PerSlotSetGenerator')
        net = self.net
        image, masks = inp[:, :net.input_nc], inp[:, net.input_nc:]
        slots = _filled_slots(masks)
        enc_img = net.encoder_img(image)                                  # (1, C, h, w)
        enc_segs = {k: net.encoder_seg(masks[:, k:k + 1]) for k in slots}  # one call per slot
        enc_sum = torch.stack(list(enc_segs.values())).sum(0) if enc_segs else torch.zeros_like(enc_img)
        outs = [net.decoder_img(torch.cat([enc_img, enc_sum], 1))]
        for k in range(masks.shape[1]):                                   # one decoder call per slot
            if k in enc_segs:
                outs.append(net.decoder_seg(torch.cat([enc_segs[k], enc_img, enc_sum], 1)))
            else:
                outs.append(masks[:, k:k + 1])
        return torch.cat(outs, 1)


class PerSlotSetDiscriminator(nn.Module):
    """Our ``NLayerSetDiscriminator`` (its submodules and weights), one ``feature_seg`` call per
    filled slot. Input (1, input_nc + N, H, W) in [-1, 1]; output (1, 1, h', w') patch scores.
    Turns off ``net``'s faster CPU paths, as :class:`PerSlotSetGenerator`."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        official_kernels(net)

    def forward(self, inp):
        _check_batch_one(inp, 'PerSlotSetDiscriminator')
        net = self.net
        image, masks = inp[:, :net.input_nc], inp[:, net.input_nc:]
        feat_img = net.feature_img(image)
        feats = [net.feature_seg(masks[:, k:k + 1]) for k in _filled_slots(masks)]
        feat_sum = torch.stack(feats).sum(0) if feats else torch.zeros_like(feat_img)
        return net.classifier(torch.cat([feat_img, feat_sum], 1))


class OfficialStructureInstaGAN:
    """The official training / test step structure around one of our ``InstaGANModel``s.

    Uses ``model``'s networks (wrapped per slot), optimizers, GAN / L1 criteria, image pools,
    loss weights, autocast and GradScalers (``--amp``) and ``set_input`` (ours; its mask
    selection is the official one). Call
    ``set_input`` then ``optimize_parameters`` or ``test``, as with the model. Batch size 1 only.
    """

    def __init__(self, model):
        self.model = model
        self.opt = model.opt
        self.G_A, self.G_B = PerSlotSetGenerator(model.netG_A), PerSlotSetGenerator(model.netG_B)
        if model.isTrain:
            self.D_A, self.D_B = PerSlotSetDiscriminator(model.netD_A), PerSlotSetDiscriminator(model.netD_B)
        self.n_passes = math.ceil(self.opt.ins_max / self.opt.ins_per)

    def set_input(self, data):
        self.model.set_input(data)
        _check_batch_one(self.model.real_A, 'OfficialStructureInstaGAN')

    # ------------------------------------------------------------------ one pass
    def _start(self):
        m = self.model
        self.cur_A_img, self.cur_B_img = m.real_A_img, m.real_B_img
        self.fake_B_seg_list, self.fake_A_seg_list = [], []

    def _side(self, i, real_segs, cur_img, G_fwd, G_back, done_list):
        """One direction of pass i: None when the pass's slots are all empty, else a dict with
        real_sng, fake, rec and fake_mul (translated image + masks of all passes so far, then
        empty slots up to ins_max: the discriminator's input)."""
        n = self.opt.ins_per
        segs = real_segs[:, n * i:n * (i + 1)]
        if not bool((segs + 1).sum() > 0):
            return None
        real_sng = torch.cat([cur_img, segs], 1)
        fake = G_fwd(real_sng)
        rec = G_back(fake)
        n_empty = self.opt.ins_max - sum(d.shape[1] for d in done_list) - segs.shape[1]
        empty = -torch.ones_like(real_segs[:, :n_empty])
        fake_mul = torch.cat([fake[:, :3]] + done_list + [fake[:, 3:], empty], 1)
        return dict(segs=segs, real_sng=real_sng, fake=fake, rec=rec, fake_mul=fake_mul)

    def _generator_loss(self, side, D, G_idt, lam):
        o, m = self.opt, self.model
        loss = m.criterionGAN(D(side['fake_mul']), True, for_discriminator=False)
        loss = loss + m.criterionCyc(side['rec'], side['real_sng']) * lam
        if o.lambda_idt > 0:
            loss = loss + m.criterionIdt(G_idt(side['real_sng']), side['real_sng'].detach()) * lam * o.lambda_idt
        if o.lambda_ctx > 0:
            weight = (1 - merge_masks(torch.cat([side['segs'], side['fake'][:, 3:]], 1))) / 2
            loss = loss + weighted_l1(side['real_sng'][:, :3], side['fake'][:, :3], weight) * lam * o.lambda_ctx
        return loss

    def _discriminator_loss(self, D, real, fake_mul, pool):
        return discriminator_loss(self.model.criterionGAN, D, real, pool.query(fake_mul).detach())

    def _carry(self, a, b):
        if a is not None:
            self.cur_A_img = a['fake'][:, :3].detach()
            self.fake_B_seg_list.append(a['fake'][:, 3:].detach())
        if b is not None:
            self.cur_B_img = b['fake'][:, :3].detach()
            self.fake_A_seg_list.append(b['fake'][:, 3:].detach())

    # ------------------------------------------------------------------ steps
    def _amp(self):
        """The model's ``--amp`` autocast."""
        return train_step.autocast(self.opt.amp, self.model.device)

    @staticmethod
    def _backward(loss, wrapper):
        """loss.backward(), scaled by the wrapper's GradScaler (enabled under --amp fp16)."""
        wrapper.scaler.scale(loss).backward()

    @staticmethod
    def _step(wrapper):
        """The optimizer's step (through the GradScaler under --amp fp16); no finiteness check, as
        the official code."""
        wrapper.scaler.step(wrapper.optimizer)
        wrapper.scaler.update()

    def optimize_parameters(self):
        """Per pass: forward (4 generator calls), G losses (+2 identity calls), G step, D step.
        Forward and losses run under the model's autocast (``--amp``)."""
        m, o = self.model, self.opt
        self._start()
        for i in range(self.n_passes):
            with self._amp():
                a = self._side(i, m.real_A_segs, self.cur_A_img, self.G_A, self.G_B, self.fake_B_seg_list)
                b = self._side(i, m.real_B_segs, self.cur_B_img, self.G_B, self.G_A, self.fake_A_seg_list)
            if a is None and b is None:
                self._carry(a, b)
                continue
            m.set_requires_grad([m.netD_A, m.netD_B], False)
            m.opt_G.optimizer.zero_grad(set_to_none=True)
            loss_G = 0
            with self._amp():
                if a is not None:
                    loss_G = loss_G + self._generator_loss(a, self.D_A, self.G_B, o.lambda_A)
                if b is not None:
                    loss_G = loss_G + self._generator_loss(b, self.D_B, self.G_A, o.lambda_B)
            self._backward(loss_G, m.opt_G)
            self._step(m.opt_G)
            m.set_requires_grad([m.netD_A, m.netD_B], True)
            m.opt_D.optimizer.zero_grad(set_to_none=True)
            for side, D, real, pool in ((a, self.D_A, m.real_B, m.image_pools['fake_B']),
                                        (b, self.D_B, m.real_A, m.image_pools['fake_A'])):
                if side is not None:
                    with self._amp():
                        loss_D = self._discriminator_loss(D, real, side['fake_mul'], pool)
                    self._backward(loss_D, m.opt_D)
            self._step(m.opt_D)
            self._carry(a, b)

    def test(self):
        """Test-time sequential translation: per pass G_A(real_A), G_B(fake_B), G_B(real_B),
        G_A(fake_A) as separate calls, without gradients (under the model's autocast). Sets
        ``fake_B_img`` / ``fake_A_img`` (the last pass's translated images, (1, 3, H, W) in [-1, 1])."""
        m = self.model
        with torch.no_grad(), self._amp():
            self._start()
            for i in range(self.n_passes):
                a = self._side(i, m.real_A_segs, self.cur_A_img, self.G_A, self.G_B, self.fake_B_seg_list)
                b = self._side(i, m.real_B_segs, self.cur_B_img, self.G_B, self.G_A, self.fake_A_seg_list)
                self._carry(a, b)
        self.fake_B_img, self.fake_A_img = self.cur_A_img, self.cur_B_img
