"""The Visualizer against a real visdom server (started offline on a free 127.0.0.1 port), read
back through visdom's own API."""
import argparse
import base64
import io
import json
import time
import warnings

import numpy as np
import torch
from PIL import Image

from tests.servers import visdom_client, visdom_server  # noqa: F401  (visdom_server: pytest fixture)
from util.visdom_server import VisdomServer
from util.visualizer import Visualizer, VisdomUnavailableWarning

LOSSES = ('G_A', 'D_A', 'cycle_A')


def make_opt(tmp_path, server, env, display_id=3, **kw):
    return argparse.Namespace(name='live', checkpoints_dir=str(tmp_path), display_id=display_id,
                              display_server=server.url, display_port=server.port, display_env=env,
                              display_ncols=4, display_winsize=32, no_html=False, isTrain=True, **kw)


def loss_traces(client, win, env):
    data = json.loads(client.get_window_data(win, env))
    return {t['name']: (t['x'], t['y']) for t in data['content']['data']}


def train_like(vis, n_epochs=2, iters=3):
    """plot_current_losses as train.py calls it; returns the expected (x, y per loss) history."""
    xs, ys = [], {k: [] for k in LOSSES}
    for epoch in range(1, n_epochs + 1):
        for i in range(iters):
            losses = {k: float(j + 1) / (epoch * 10 + i + 1) for j, k in enumerate(LOSSES)}
            vis.plot_current_losses(epoch, i / iters, losses)
            xs.append(epoch + i / iters)
            for k in LOSSES:
                ys[k].append(losses[k])
    return xs, ys


def test_loss_window_holds_one_trace_per_loss_with_every_point(visdom_server, tmp_path):
    env = 'loss_env'
    vis = Visualizer(make_opt(tmp_path, visdom_server, env))
    with warnings.catch_warnings():
        warnings.simplefilter('error', VisdomUnavailableWarning)
        xs, ys = train_like(vis)
    client = visdom_client(visdom_server, env)
    assert env in client.get_env_list()
    assert client.win_exists('3', env)  # window id = display_id
    traces = loss_traces(client, '3', env)
    assert sorted(traces) == sorted(LOSSES)
    for k in LOSSES:
        x, y = traces[k]
        assert len(x) == len(y) == 6
        np.testing.assert_allclose(x, xs)
        np.testing.assert_allclose(y, ys[k])


def test_closed_loss_window_is_recreated_with_the_whole_history(visdom_server, tmp_path):
    env = 'reopen_env'
    vis = Visualizer(make_opt(tmp_path, visdom_server, env, display_id=10))
    train_like(vis, n_epochs=1, iters=4)
    client = visdom_client(visdom_server, env)
    client.close('10', env)  # user closed it / server restarted
    assert not client.win_exists('10', env)
    vis.plot_current_losses(2, 0.0, {k: 1.0 for k in LOSSES})
    traces = loss_traces(client, '10', env)
    assert sorted(traces) == sorted(LOSSES)
    assert all(len(x) == 5 for x, _ in traces.values())


def test_current_results_fill_the_image_and_label_windows(visdom_server, tmp_path):
    env = 'images_env'
    vis = Visualizer(make_opt(tmp_path, visdom_server, env, display_id=3))
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 32).expand(3, 32, 32)
    visuals = {'real_A': ramp.clone(), 'fake_B': -ramp, 'mask<A>': torch.ones(1, 32, 32)}
    with warnings.catch_warnings():
        warnings.simplefilter('error', VisdomUnavailableWarning)
        vis.display_current_results(visuals, 1, save_result=True)
    client = visdom_client(visdom_server, env)
    assert client.win_exists('4', env) and client.win_exists('5', env)
    image = json.loads(client.get_window_data('4', env))
    assert image['type'] == 'image'
    png = base64.b64decode(image['content']['src'].split(',', 1)[1])
    grid = Image.open(io.BytesIO(png))
    assert grid.size == (3 * (32 + 4), 32 + 4)  # 3 visuals in one row (ncols 4 > 3), padding 2
    labels = json.loads(client.get_window_data('5', env))['content']
    assert 'real_A' in labels and 'fake_B' in labels and 'mask&lt;A&gt;' in labels
    assert (tmp_path / 'live' / 'web' / 'images' / 'epoch001_mask<A>.png').exists()


def test_server_stopping_mid_run_costs_one_warning(tmp_path):
    with VisdomServer() as server:
        vis = Visualizer(make_opt(tmp_path, server, 'stop_env'))
        vis.plot_current_losses(1, 0.0, {k: 1.0 for k in LOSSES})
        assert vis.visdom_active
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train_like(vis)
        vis.display_current_results({'real_A': torch.zeros(3, 8, 8)}, 2, True)
    assert time.monotonic() - t0 < 10
    assert [w.category for w in caught] == [VisdomUnavailableWarning]
    assert not vis.visdom_active


def test_zero_columns_put_each_visual_in_its_own_window(visdom_server, tmp_path):
    env = 'single_env'
    opt = make_opt(tmp_path, visdom_server, env, display_id=20)
    opt.display_ncols = 0
    Visualizer(opt).display_current_results({'a': torch.zeros(3, 8, 8), 'b': torch.ones(1, 8, 8)}, 1, True)
    client = visdom_client(visdom_server, env)
    titles = [json.loads(client.get_window_data(w, env))['title'] for w in ('21', '22')]
    assert titles == ['a', 'b']
    assert not client.win_exists('23', env)
