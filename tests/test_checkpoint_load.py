"""util/checkpoint.load, the one weights-only loader: numpy scalars only where they are allowed,
legacy Python 2 pickles with encoding='latin1', and messages that name the file and tell a
malformed file from a refused one."""
import pickle
import struct

import numpy as np
import pytest
import torch

from util import checkpoint
from util.errors import UserInputError


def _dim_like_checkpoint(path, best_sad=12.5):
    """A file shaped like the Deep Image Matting port's checkpoints: {'epoch', 'state_dict', 'best_sad'}."""
    torch.save({'epoch': 7, 'state_dict': {'conv.weight': torch.arange(4.0)}, 'best_sad': np.float64(best_sad)},
               path)


def _python2_pickle_file(path, best_sad):
    """A legacy (pre-zip) torch.save file as Python 2 with numpy 1.x wrote it: its object pickle is
    {'best_sad': numpy.float64(best_sad)}, every string a Python 2 str (raw bytes, opcode U)."""
    def py2_str(data):
        return b'U' + bytes([len(data)]) + data
    obj = (b'\x80\x02}q\x00' + py2_str(b'best_sad')
           + b'cnumpy.core.multiarray\nscalar\n' + b'cnumpy\ndtype\n' + py2_str(b'f8') + b'K\x00K\x01\x87R'
           + b'(K\x03' + py2_str(b'<') + b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb'
           + py2_str(struct.pack('<d', best_sad)) + b'\x86Rs.')
    sys_info = {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
    header = b''.join(pickle.dumps(x, protocol=2) for x in (torch.serialization.MAGIC_NUMBER, 1001, sys_info))
    path.write_bytes(header + obj + pickle.dumps([], protocol=2))   # no tensor storages


def test_numpy_scalar_loads_only_where_numpy_scalars_are_allowed(tmp_path):
    path = tmp_path / 'dim_checkpoint.pth.tar'
    _dim_like_checkpoint(path)
    with pytest.raises(UserInputError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert str(path) in msg and 'refusing to load' in msg and 'numpy._core.multiarray.scalar' in msg

    allowed_before = set(torch.serialization.get_safe_globals())  # a set: its list order varies
    ck = checkpoint.load(path, safe_globals=checkpoint.NUMPY_SCALARS)
    assert ck['epoch'] == 7 and ck['best_sad'] == 12.5 and isinstance(ck['best_sad'], np.float64)
    assert torch.equal(ck['state_dict']['conv.weight'], torch.arange(4.0))
    # the allowance was for that call only
    assert set(torch.serialization.get_safe_globals()) == allowed_before
    with pytest.raises(UserInputError, match='refusing to load'):
        checkpoint.load(path)


def test_numpy_arrays_stay_refused_with_numpy_scalars_allowed(tmp_path):
    path = tmp_path / 'array.pth'
    torch.save({'a': np.zeros(3)}, path)
    with pytest.raises(UserInputError, match='refusing to load'):
        checkpoint.load(path, safe_globals=checkpoint.NUMPY_SCALARS)


def test_python2_pickle_loads_with_latin1_encoding(tmp_path):
    path = tmp_path / 'py2.pth'
    _python2_pickle_file(path, best_sad=0.25)
    ck = checkpoint.load(path, safe_globals=checkpoint.NUMPY_SCALARS, encoding='latin1')
    assert ck == {'best_sad': 0.25} and isinstance(ck['best_sad'], np.float64)
    with pytest.raises(UserInputError, match='py2.pth'):      # utf-8 cannot decode the scalar's bytes
        checkpoint.load(path, safe_globals=checkpoint.NUMPY_SCALARS)
    with pytest.raises(UserInputError, match='refusing to load .*numpy.core.multiarray.scalar'):
        checkpoint.load(path, encoding='latin1')              # numpy 1.x's name is refused by default too


@pytest.mark.parametrize('data', [b'this is not a torch checkpoint', b'not a checkpoint at all', b''])
def test_malformed_file_is_unreadable_not_refused(tmp_path, data):
    """Garbage bytes are a corrupt file (some used to raise IndexError, some to be 'refused')."""
    path = tmp_path / 'garbage.pth'
    path.write_bytes(data)
    with pytest.raises(UserInputError) as err:
        checkpoint.load(path, what='pretrained weights file', hint='Check --pretrained_path.')
    msg = str(err.value)
    assert msg.startswith(f'cannot read pretrained weights file {path}') and 'corrupt' in msg
    assert msg.endswith('Check --pretrained_path.') and 'refusing' not in msg


def test_missing_file_names_it(tmp_path):
    with pytest.raises(UserInputError, match='absent.pth') as err:
        checkpoint.load(tmp_path / 'absent.pth')
    assert 'not found' in str(err.value)


def test_is_state_dict():
    assert checkpoint.is_state_dict({'w': torch.zeros(1)}) and checkpoint.is_state_dict({})
    assert not checkpoint.is_state_dict([torch.zeros(1)])
    assert not checkpoint.is_state_dict({'w': 1.0}) and not checkpoint.is_state_dict({0: torch.zeros(1)})
