"""End to end against real components: InstaGAN training plotting to a real visdom server and
writing its web snapshots, test.py writing its result page, both pages rendered in Chromium."""
import json
import os
import warnings

import pytest

import test as test_script
import train as train_script
from tests.browser import chromium  # noqa: F401  (pytest fixture)
from tests.servers import unused_port, visdom_client, visdom_server  # noqa: F401  (fixtures)
from util.visualizer import VisdomUnavailableWarning

TINY = ['--model', 'insta_gan', '--ngf', '4', '--ndf', '4', '--n_blocks', '1', '--load_size', '32',
        '--crop_size', '32', '--gpu_ids', '-1', '--num_threads', '0', '--seed', '0', '--ins_max', '2']
ITERS = 3


def train_args(root, ck, *extra):
    return ['--dataroot', root, '--checkpoints_dir', ck, '--name', 'e2e', *TINY, '--n_epochs', '1',
            '--n_epochs_decay', '0', '--max_iters_per_epoch', str(ITERS), '--print_freq', '1',
            '--display_freq', '1', '--update_html_freq', '1', *extra]


@pytest.fixture(scope='module')
def trained_with_visdom(shapes_root, tmp_path_factory, visdom_server):  # noqa: F811
    ck = str(tmp_path_factory.mktemp('ck'))
    rc = train_script.main(train_args(shapes_root, ck, '--display_id', '1', '--display_port',
                                      str(visdom_server.port), '--display_server', visdom_server.url,
                                      '--display_env', 'e2e'))
    assert rc == 0
    return ck


def test_training_plots_every_loss_to_a_real_visdom_server(trained_with_visdom, visdom_server):  # noqa: F811
    client = visdom_client(visdom_server, env='e2e')
    data = json.loads(client.get_window_data('1', 'e2e'))
    traces = {t['name']: t for t in data['content']['data']}
    assert set(traces) == {'D_A', 'G_A', 'cyc_A', 'idt_A', 'ctx_A', 'D_B', 'G_B', 'cyc_B', 'idt_B', 'ctx_B'}
    assert all(len(t['x']) == ITERS and len(t['y']) == ITERS for t in traces.values())
    assert client.win_exists('2', 'e2e')           # the image window


def test_training_without_a_server_runs_to_the_end_with_one_warning(shapes_root, tmp_path,
                                                                     unused_port):  # noqa: F811
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        rc = train_script.main(train_args(shapes_root, str(tmp_path), '--display_id', '1', '--display_port',
                                          str(unused_port)))
    assert rc == 0
    assert os.path.isfile(tmp_path / 'e2e' / 'latest_net_G_A.pth')
    assert sum(issubclass(w.category, VisdomUnavailableWarning) for w in caught) == 1


def test_training_snapshots_and_test_page_render_in_chromium(trained_with_visdom, shapes_root, tmp_path,
                                                             chromium):  # noqa: F811
    web = os.path.join(trained_with_visdom, 'e2e', 'web', 'index.html')
    got = chromium.render(web, tmp_path / 'web.png')
    assert got['n_images'] >= 12 and got['broken'] == [] and not got['blank']
    results = str(tmp_path / 'res')
    rc = test_script.main(['--dataroot', shapes_root, '--checkpoints_dir', trained_with_visdom, '--name', 'e2e',
                           *TINY, '--results_dir', results, '--num_test', '3'])
    assert rc == 0
    page = os.path.join(results, 'e2e', 'test_latest', 'index.html')
    got = chromium.render(page, tmp_path / 'test.png')
    assert got['n_images'] == 3 * 12 and got['n_loaded'] == got['n_images'] and not got['blank']
    assert 'fake_B_img' in got['text'] and 'e2e' in got['title']
    os.remove(os.path.join(os.path.dirname(page), 'images', os.listdir(os.path.join(os.path.dirname(page),
                                                                                      'images'))[0]))
    assert len(chromium.render(page, tmp_path / 'test2.png')['broken']) == 1    # the check can fail
