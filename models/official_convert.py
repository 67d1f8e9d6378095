"""Load checkpoints written by the official InstaGAN code (github.com/sangwoomo/instagan) into the
networks of models/set_networks.py (and any network whose layout matches the official one).

What differs in an official state dict, and what :func:`convert_official_state_dict` does about it:

* Spectral norm. The official code wraps each conv in its own `SpectralNorm` module, so a conv's
  entries are `<conv>.module.weight_bar` (raw weight W), `<conv>.module.weight_u` (size out),
  `<conv>.module.weight_v` (size in*kh*kw) and `<conv>.module.bias`. Here convs use
  torch.nn.utils.parametrizations.spectral_norm: `<conv>.parametrizations.weight.original` (W),
  `<conv>.parametrizations.weight.0._u` (size out), `<conv>.parametrizations.weight.0._v`
  (size in*kh*kw) and `<conv>.bias`. Both flatten W to a (out, in*kh*kw) matrix and use
  sigma = u . (W v), so u and v have the same orientation in both.

  The two power iterations differ, though. The official wrapper iterates on EVERY call (train and
  eval alike), first v <- n(W^T u) then u <- n(W v), with n(x) = x / (|x| + 1e-12), and uses the
  fresh (u, v). So its stored v is never read, and its next output uses the (u1, v1) one step on
  from the stored u0. PyTorch iterates only in train mode, in the other order (u <- n(W v), then
  v <- n(W^T u), n(x) = x / max(|x|, 1e-12)), and uses the stored (u, v) as they are in eval mode.
  The conversion therefore performs the official step at load time (:func:`official_power_iteration`,
  official arithmetic) and stores (u1, v1): in eval mode the converted network then gives exactly
  the official network's next output; in train mode PyTorch's first step leaves u = u1 and moves v
  to n(W^T u1), i.e. it continues the official sequence of vectors half a step further (its sigma
  estimate u1 . W n(W^T u1) >= u1 . W v1, closer to the true spectral norm). No setting of
  PyTorch's parametrization reproduces the official v-then-u order in train mode; the eps
  difference (added vs clamped) changes nothing above 1e-12 relative.

  Note also that the official discriminator calls its mask branch once per instance, each call one
  more power iteration, so its k-th instance is normalised with the sigma of the k-th step (its
  output depends on the slot order). The batched, order-invariant NLayerSetDiscriminator uses one
  sigma for all instances, so with several instances and unconverged u (a young checkpoint) its
  scores differ from the official ones; with one instance, or a converged u, they agree.
* DataParallel: keys saved from a wrapped network start with `module.`; that prefix is removed.
* InstanceNorm: checkpoints from PyTorch < 0.4 hold `running_mean` / `running_var` /
  `num_batches_tracked` for InstanceNorm layers without running stats; they are dropped (as the
  official `__patch_instance_norm_state_dict` does).

The official generator's keys are the ones used here, so its state dict passes through unchanged.
"""
import torch
import torch.nn as nn

from util import checkpoint
from util.distributed import unwrap
from util.errors import UserInputError

_OFFICIAL_SN_SUFFIXES = ('.module.weight_bar', '.module.weight_u', '.module.weight_v')
_RUNNING_STATS = ('running_mean', 'running_var', 'num_batches_tracked')
_DP_PREFIX = 'module.'


def official_power_iteration(weight_mat, u, eps=1e-12):
    """One power iteration exactly as the official SpectralNorm wrapper does it.

    Args:
        weight_mat: (out, in*kh*kw) weight matrix W.
        u: (out,) current left vector.
    Returns:
        (u, v): v = n(W^T u), then u = n(W v), with n(x) = x / (|x| + eps); sizes (out,), (in*kh*kw,).
    """
    with torch.no_grad():
        v = torch.mv(weight_mat.t(), u)
        v = v / (v.norm() + eps)
        u = torch.mv(weight_mat, v)
        u = u / (u.norm() + eps)
    return u, v


def is_official_state_dict(state_dict, net):
    """True if `state_dict` needs :func:`convert_official_state_dict` to load into `net`."""
    own = net.state_dict()
    if any(k.endswith(_OFFICIAL_SN_SUFFIXES) for k in state_dict):
        return True
    if state_dict and all(k.startswith(_DP_PREFIX) for k in state_dict) and \
            not all(k.startswith(_DP_PREFIX) for k in own):
        return True
    return any(_is_stale_instance_norm_key(k, own, net) for k in state_dict)


def _is_stale_instance_norm_key(key, own_keys, net):
    """A running statistic saved for an InstanceNorm layer that keeps none."""
    prefix, _, name = key.rpartition('.')
    if name not in _RUNNING_STATS or key in own_keys:
        return False
    try:
        module = net.get_submodule(prefix)
    except AttributeError:
        return False
    return isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats


def convert_official_state_dict(state_dict, net):
    """Convert an official InstaGAN state dict to the keys of `net` (see the module docstring).

    Args:
        state_dict: mapping name -> tensor, official or already in this implementation's format.
        net: the network it is meant for (an nn.Module, not wrapped in DataParallel).
    Returns:
        `state_dict` itself if nothing needs converting, else a new dict.
    Raises:
        ValueError: an official spectral-norm entry is incomplete or its u does not fit its weight.
    """
    if not is_official_state_dict(state_dict, net):
        return state_dict
    own = net.state_dict()
    if all(k.startswith(_DP_PREFIX) for k in state_dict) and not all(k.startswith(_DP_PREFIX) for k in own):
        state_dict = {k[len(_DP_PREFIX):]: v for k, v in state_dict.items()}

    out = {}
    sn_prefixes = sorted({k[:-len('.module.weight_bar')] for k in state_dict if k.endswith('.module.weight_bar')})
    for prefix in sn_prefixes:
        try:
            weight, u0 = state_dict[prefix + '.module.weight_bar'], state_dict[prefix + '.module.weight_u']
        except KeyError as e:
            raise ValueError('spectral-norm entry %s has no %s' % (prefix, e.args[0])) from None
        weight_mat = weight.reshape(weight.shape[0], -1)
        if u0.shape != (weight_mat.shape[0],):
            raise ValueError('%s.module.weight_u has shape %s, expected (%d,) for a weight of shape %s'
                             % (prefix, tuple(u0.shape), weight_mat.shape[0], tuple(weight.shape)))
        u1, v1 = official_power_iteration(weight_mat.float(), u0.float())
        out[prefix + '.parametrizations.weight.original'] = weight
        out[prefix + '.parametrizations.weight.0._u'] = u1.to(u0.dtype)
        out[prefix + '.parametrizations.weight.0._v'] = v1.to(u0.dtype)
    handled = {p + s for p in sn_prefixes for s in _OFFICIAL_SN_SUFFIXES}
    for key, value in state_dict.items():
        if key in handled or _is_stale_instance_norm_key(key, own, net):
            continue
        out[key if key in own else key.replace('.module.', '.')] = value   # <conv>.module.bias -> <conv>.bias
    return out


def _shorten(items, n=4):
    items = list(items)
    return ', '.join(items[:n]) + (' ... (%d in all)' % len(items) if len(items) > n else '')


def _mismatch_message(path, missing, unexpected, mismatched):
    lines = ['checkpoint %s does not fit this network:' % path]
    if mismatched:
        lines.append('  %d tensors have other shapes, e.g. %s' % (len(mismatched), _shorten(
            '%s: checkpoint %s, network %s' % m for m in mismatched)))
        lines.append('  -> the checkpoint was made with other layer widths: use the --ngf / --ndf '
                     '(and --input_nc / --output_nc) it was trained with.')
    if missing:
        lines.append('  missing from the checkpoint: %s' % _shorten(missing))
    if unexpected:
        lines.append('  not in this network: %s' % _shorten(unexpected))
    if missing or unexpected:
        keys = list(missing) + list(unexpected)
        if any(k.rpartition('.')[2] in _RUNNING_STATS for k in keys):
            lines.append('  -> running statistics differ: use the --norm (batch / instance) it was trained with.')
        if any('conv_block.' in k for k in keys):
            lines.append('  -> residual blocks differ: check --no_dropout and the number of blocks.')
        lines.append('  -> it may be a checkpoint of another network (G vs D, --netG / --netD, --n_layers_D) '
                     'or of another model; check the file name and the options.')
    return '\n'.join(lines)


def load_state_dict_any(net, path):
    """Load a checkpoint in this implementation's or the official InstaGAN format into `net`.

    Args:
        net: nn.Module (DataParallel, DistributedDataParallel and torch.compile wrappers are looked
            through: the weights go into the plain module inside).
        path: checkpoint file (a state dict saved with torch.save), read by :func:`util.checkpoint.load`.
    Returns:
        `net`, with the weights loaded.
    Raises:
        UserInputError: the file is missing, unreadable or corrupt, is not a state dict, or its
            keys / shapes do not match `net` (the message says which and why that usually happens).
    """
    target = unwrap(net)
    state_dict = checkpoint.load(path, hint='Check --checkpoints_dir, --name and --epoch, or copy the file again.')
    if not checkpoint.is_state_dict(state_dict):
        raise UserInputError('checkpoint %s is not a state dict (a mapping of names to tensors, as saved by '
                             'torch.save(net.state_dict(), path)); got %s.' % (path, type(state_dict).__name__))
    try:
        state_dict = convert_official_state_dict(state_dict, target)
    except ValueError as e:
        raise UserInputError('checkpoint %s looks like an official InstaGAN checkpoint but is damaged: %s'
                             % (path, e)) from None

    own = target.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(own[k].shape)) for k in own
                  if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise UserInputError(_mismatch_message(path, missing, unexpected, mismatched))
    target.load_state_dict(state_dict)
    return net
