"""Deep Image Matting (``--model dim``): the public PyTorch port's checkpoint files (zip with a numpy
``best_sad``; legacy Python-2 pickles) load through test.py's ``--weights`` and reproduce the port's
own outputs (tests/fixtures/dim_official); ``--dim_preset port`` through test.py writes the port's
deploy mattes; the three training stages train what they should (stage 2 leaves the encoder-decoder
bit for bit); ``--pretrained_path`` puts VGG-16 into the encoder."""
import os
import pickle
import sys
import types

import cv2
import numpy as np
import pytest
import torch

import test as test_script
from data import create_dataset
from datasets.make_matting_dataset import make_matting_dataset
from models import create_model
from models.base_model import load_weights_file
from models.dim_networks import DIMNet, TORCHVISION_VGG16_INDEX
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import UserInputError

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'dim_official')
sys.path.insert(0, FIXTURE)
from make_weights import make_weights  # noqa: E402  (the fixture's weight recipe)

PORT = ['--model', 'dim', '--dim_preset', 'port', '--gpu_ids', '-1']
TOL = 1e-5


@pytest.fixture(scope='module')
def case():
    return torch.load(os.path.join(FIXTURE, 'case.pth'), weights_only=True)


# ----------------------------------------------------------------------------- the port's files
class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 + numpy 1.x did (the fixture README's recipe): every str as SHORT_BINSTRING,
    numpy.float64 as numpy.core.multiarray.scalar(dtype('f8'), <8 raw bytes>), storages on cuda:0."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj):
        b = obj.encode('ascii') if isinstance(obj, str) else obj
        self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        self.memoize(obj)
    dispatch[str] = dispatch[bytes] = save_str

    def save_pers(self, pid):
        super().save_pers(pid[:3] + ('cuda:0',) + pid[4:])

    def reducer_override(self, obj):
        if type(obj) is np.float64:
            return np._core.multiarray.scalar, (np.dtype('f8'), obj.tobytes())
        if isinstance(obj, np.dtype):
            return np.dtype, (obj.str[1:], 0, 1), (3, '<', None, None, None, -1, -1, 0)
        return NotImplemented

    def save_global(self, obj, name=None):
        if obj is np._core.multiarray.scalar:
            self.write(pickle.GLOBAL + b'numpy.core.multiarray\nscalar\n')
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_port_checkpoint(path, stage, legacy_py2):
    """A checkpoint as the port's train.checkpoint writes it: today's zip format, or the legacy format
    of its released files (Python 2.7, torch 0.4 / 1.0)."""
    ckpt = {'epoch': 13, 'state_dict': make_weights(0, stage=stage), 'best_sad': np.float64(52945.0)}
    if legacy_py2:
        mod = types.SimpleNamespace(__name__='py2pickle', Pickler=Py2Pickler,
                                    dump=lambda o, f, protocol: Py2Pickler(f, protocol).dump(o))
        torch.save(ckpt, path, pickle_module=mod, pickle_protocol=2, _use_new_zipfile_serialization=False)
    else:
        torch.save(ckpt, path)
    return str(path)


def port_opt(*extra, root='.'):
    return TestOptions(['--dataroot', str(root), '--checkpoints_dir', str(root), *PORT, *extra]).parse(save=False)


@pytest.mark.parametrize('stage, legacy_py2', [(3, False), (1, True)], ids=['zip_stage3', 'py2_legacy_stage1'])
def test_port_checkpoint_loads_through_test_weights_and_reproduces_the_port(case, tmp_path, stage, legacy_py2):
    path = write_port_checkpoint(tmp_path / 'ckpt.pth', stage, legacy_py2)
    with pytest.raises(UserInputError, match='refusing to load'):   # plain weights-only: numpy global refused
        from util import checkpoint
        checkpoint.load(path)
    opt = port_opt('--weights', path, root=tmp_path)
    model = create_model(opt)
    model.setup(opt)
    assert model.netG.refinement == (stage == 3)    # no --dim_stage: the file decides
    with torch.no_grad():
        raw, refined = model.netG(case['inputs']['net_input'])
    out = case['outputs'][f'stage{stage}']
    assert (raw - out['pred_mattes']).abs().max() < TOL
    if stage == 3:
        assert (refined - out['pred_alpha']).abs().max() < TOL
    else:
        assert refined is None


def test_the_model_builds_the_ports_network_input(case, tmp_path):
    model = create_model(port_opt('--dim_stage', '1', root=tmp_path))
    image = torch.from_numpy(case['inputs']['image_bgr'].numpy()[..., ::-1].copy()).permute(2, 0, 1).float() / 255
    tri = case['inputs']['trimap']
    trimap = torch.where(tri == 128, 0.5, tri.float() / 255)      # the matting dataset's {0, 0.5, 1}
    model.set_input({'image': image[None], 'trimap': trimap[None, None], 'path': ['x.png']})
    assert torch.equal(model.network_input(), case['inputs']['net_input'])


def test_a_file_that_needs_more_than_tensors_and_numbers_is_refused(tmp_path):
    path = tmp_path / 'with_args.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'args': types.SimpleNamespace(lr=1e-5)}, path)
    with pytest.raises(UserInputError, match='refusing to load'):
        load_weights_file(path)


def test_conv6_kernel_of_an_older_release_is_named_in_the_error(tmp_path):
    sd = make_weights(0, stage=1)
    sd['conv6_1.weight'] = torch.zeros(512, 512, 1, 1)     # releases before 2019-09-09
    path = tmp_path / 'v13.pth'
    torch.save({'epoch': 1, 'state_dict': sd, 'best_sad': 57.1}, path)
    opt = port_opt('--weights', str(path), root=tmp_path)
    model = create_model(opt)
    with pytest.raises(UserInputError, match='--dim_conv6 1'):
        model.setup(opt)


# ----------------------------------------------------------------------------- the port's deploy path
def write_test_layout(root, case, with_alpha=True):
    for sub in ('merged', 'trimaps', 'alpha'):
        os.makedirs(os.path.join(root, 'test', sub), exist_ok=True)
    cv2.imwrite(os.path.join(root, 'test', 'merged', 'ellipse.png'), case['inputs']['image_bgr'].numpy())
    cv2.imwrite(os.path.join(root, 'test', 'trimaps', 'ellipse.png'), case['inputs']['trimap'].numpy())
    cv2.imwrite(os.path.join(root, 'test', 'alpha', 'ellipse.png'), case['inputs']['alpha_true'].numpy())
    return str(root)


def port_deploy_reference(image_bgr, trimap, max_size):
    """deploy.py's whole-image path and PNG, written from its description (fixture README), on the
    fixture's stage-3 weights in our network (equal to the port's to 2e-6, test above)."""
    net = DIMNet(skip=True, conv6_kernel=3, refine_on='logit')
    net.load_state_dict(make_weights(0))
    h, w = trimap.shape
    size = (min(max_size, w - w % 32), min(max_size, h - h % 32))
    img = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)
    tri = cv2.resize(trimap, size, interpolation=cv2.INTER_LINEAR)
    rgb = torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = torch.cat([(rgb - mean) / std, torch.from_numpy(tri).float()[None] / 255.])[None]
    with torch.no_grad():
        pred = net(x)[1][0, 0].numpy()
    pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR)
    pred[trimap == 255], pred[trimap == 0] = 1.0, 0.0
    png = (pred * 255).astype(np.uint8)
    png[trimap == 255], png[trimap == 0] = 255, 0
    return pred, png


def run_port_test(root, weights, *extra):
    results = os.path.join(root, 'results')
    args = ['--dataroot', root, '--checkpoints_dir', os.path.join(root, 'ck'), '--name', 'port',
            '--results_dir', results, *PORT, '--weights', weights, *extra]
    assert test_script.main(args) == 0
    images = os.path.join(results, 'port', 'test_latest', 'images')
    return cv2.imread(os.path.join(images, 'ellipse_alpha.png'), cv2.IMREAD_GRAYSCALE), images


def near_a_step(pred, tol=1e-3):
    """Pixels whose value * 255 lies within ``tol`` of an integer: truncation to 8 bits may go either
    way there under a float difference of ~2e-6."""
    v = pred.astype(np.float64) * 255
    return np.abs(v - np.round(v)) < tol


def test_port_preset_through_test_py_writes_the_ports_deploy_mattes(case, tmp_path):
    root = write_test_layout(tmp_path, case)
    weights = write_port_checkpoint(tmp_path / 'ckpt_e1.pth', 3, legacy_py2=False)
    png, images = run_port_test(root, weights)
    expected = case['outputs']['stage3']['alpha_png'].numpy()
    differ = png != expected
    assert not (differ & ~near_a_step(case['outputs']['stage3']['deploy_whole'].numpy())).any()
    assert differ.sum() <= 2
    assert os.path.isfile(os.path.join(images, 'ellipse_raw_alpha.png'))
    html = open(os.path.join(os.path.dirname(images), 'index.html')).read()
    assert 'Matting metrics' in html
    # --max_side: the port's rule caps each side on its own (96 x 128 -> 64 x 64) and resizes back
    png, _ = run_port_test(root, weights, '--max_side', '64')
    pred, expected = port_deploy_reference(case['inputs']['image_bgr'].numpy(), case['inputs']['trimap'].numpy(), 64)
    differ = png != expected
    assert not (differ & ~near_a_step(pred)).any() and differ.sum() <= 2
    assert (expected != case['outputs']['stage3']['alpha_png'].numpy()).sum() > 100   # the resize did something


# ----------------------------------------------------------------------------- training stages
TINY = ['--model', 'dim', '--crop_size', '64', '--crop_sizes', '64,96', '--gpu_ids', '-1', '--num_threads', '0',
        '--seed', '0', '--lr', '1e-4']


@pytest.fixture(scope='module')
def matting_root(tmp_path_factory):
    out = tmp_path_factory.mktemp('matting')
    make_matting_dataset(str(out), n_train=2, n_test=1, n_bg=2, size=64, seed=0)
    return str(out)


def train_step(root, ck, *extra):
    """A model of the given options after one optimize_parameters; (model, weights before, after)."""
    opt = TrainOptions(['--dataroot', root, '--checkpoints_dir', str(ck), '--name', 'dim', *TINY, *extra]).parse()
    model = create_model(opt)
    model.setup(opt)
    before = {k: v.clone() for k, v in model.netG.state_dict().items()}
    model.set_input(next(iter(create_dataset(opt))))
    model.optimize_parameters()
    return model, before, model.netG.state_dict()


def changed(before, after, refine):
    keys = [k for k in before if k.startswith('refine_') == refine]
    return {k for k in keys if not torch.equal(before[k], after[k])}, keys


@pytest.fixture(scope='module')
def stage1(matting_root, tmp_path_factory):
    ck = tmp_path_factory.mktemp('ck')
    model, before, after = train_step(matting_root, ck, '--dim_stage', '1')
    path = ck / 'stage1_G.pth'
    torch.save(after, path)
    return model, before, after, str(path)


def test_stage1_trains_the_encoder_decoder_with_alpha_and_composition_losses(stage1):
    model, before, after, _ = stage1
    losses = model.get_current_losses()
    assert set(losses) == {'alpha', 'comp'} and all(np.isfinite(v) for v in losses.values())
    assert not any(k.startswith('refine_') for k in after)
    ed_changed, ed = changed(before, after, refine=False)
    assert len(ed_changed) == len(ed)


def test_stage2_from_stage1_trains_only_the_refinement(matting_root, stage1, tmp_path):
    _, _, stage1_weights, path = stage1
    model, before, after = train_step(matting_root, tmp_path, '--dim_stage', '2', '--init_from', path)
    losses = model.get_current_losses()
    assert set(losses) == {'refine'} and np.isfinite(losses['refine'])
    for k, v in stage1_weights.items():                  # started from stage 1, and did not move
        assert torch.equal(after[k], v), k
    ref_changed, ref = changed(before, after, refine=True)
    assert len(ref) == 8 and len(ref_changed) == len(ref)


def test_stage3_trains_everything(matting_root, stage1, tmp_path):
    model, before, after = train_step(matting_root, tmp_path, '--dim_stage', '3', '--init_from', stage1[3])
    losses = model.get_current_losses()
    assert set(losses) == {'alpha', 'comp', 'refine'} and all(np.isfinite(v) for v in losses.values())
    for refine in (False, True):
        got, keys = changed(before, after, refine)
        assert len(got) == len(keys), refine


def test_pretrained_path_puts_vgg16_into_the_encoder_with_a_zero_trimap_channel(matting_root, tmp_path):
    torch.manual_seed(0)
    shapes = DIMNet(refinement=False).state_dict()
    vgg = {}
    for name, i in TORCHVISION_VGG16_INDEX.items():
        w = shapes[f'{name}.weight']
        vgg[f'features.{i}.weight'] = torch.randn(w.shape[0], 3 if name == 'conv1_1' else w.shape[1], 3, 3)
        vgg[f'features.{i}.bias'] = torch.randn(w.shape[0])
    vgg['classifier.0.weight'] = torch.zeros(2, 2)
    path = tmp_path / 'vgg16.pth'
    torch.save(vgg, path)
    opt = TrainOptions(['--dataroot', matting_root, '--checkpoints_dir', str(tmp_path), '--name', 'dim', *TINY,
                        '--pretrained_path', str(path)]).parse()
    net = create_model(opt).netG.state_dict()
    assert torch.equal(net['conv1_1.weight'][:, :3], vgg['features.0.weight'])
    assert not net['conv1_1.weight'][:, 3].any()
    assert torch.equal(net['conv5_3.weight'], vgg['features.28.weight'])
    assert torch.equal(net['conv3_2.bias'], vgg['features.12.bias'])


def test_weights_option_names_the_network_it_is_for():
    from models.base_model import BaseModel
    stub = lambda value, names: types.SimpleNamespace(opt=types.SimpleNamespace(weights=value),  # noqa: E731
                                                      model_names=names)
    assert BaseModel.weights_files(stub('a.pth', ['G'])) == {'G': 'a.pth'}
    assert BaseModel.weights_files(stub('G=a=b.pth', ['G'])) == {'G': 'a=b.pth'}
    assert BaseModel.weights_files(stub('G_A=a.pth,G_B=b.pth', ['G_A', 'G_B'])) == {'G_A': 'a.pth', 'G_B': 'b.pth'}
    assert BaseModel.weights_files(stub(None, ['G'])) == {}
    with pytest.raises(UserInputError, match='G_A=a.pth'):
        BaseModel.weights_files(stub('a.pth', ['G_A', 'G_B']))


@pytest.mark.slow
def test_train_py_runs_stage1_then_stage2_from_its_name_and_test_py_scores_it(matting_root, tmp_path):
    import train as train_script
    ck = str(tmp_path / 'ck')
    common = ['--dataroot', matting_root, '--checkpoints_dir', ck, *TINY, '--n_epochs', '1', '--max_iters_per_epoch', '1',
              '--no_html', '--save_epoch_freq', '100']
    assert train_script.main(['--name', 's1', '--dim_stage', '1', *common]) == 0
    assert train_script.main(['--name', 's2', '--dim_stage', '2', '--init_from', 's1', *common]) == 0
    s1 = load_weights_file(os.path.join(ck, 's1', 'latest_net_G.pth'))
    s2 = load_weights_file(os.path.join(ck, 's2', 'latest_net_G.pth'))
    assert set(s2) - set(s1) == {f'{n}.{p}' for n in ('refine_conv1', 'refine_conv2', 'refine_conv3', 'refine_pred')
                                 for p in ('weight', 'bias')}
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    results = str(tmp_path / 'res')
    assert test_script.main(['--model', 'dim', '--dataroot', matting_root, '--checkpoints_dir', ck, '--name', 's2',
                             '--results_dir', results, '--gpu_ids', '-1']) == 0
    web = os.path.join(results, 's2', 'test_latest')
    names = os.listdir(os.path.join(web, 'images'))
    stem = os.path.splitext(sorted(os.listdir(os.path.join(matting_root, 'test', 'merged')))[0])[0]
    alpha = cv2.imread(os.path.join(web, 'images', stem + '_alpha.png'), cv2.IMREAD_GRAYSCALE)
    merged = cv2.imread(os.path.join(matting_root, 'test', 'merged', stem + '.png'))
    assert alpha.shape == merged.shape[:2] and stem + '_raw_alpha.png' in names
    html = open(os.path.join(web, 'index.html')).read()
    assert 'Matting metrics' in html and 'encoder-decoder + refinement' in html
