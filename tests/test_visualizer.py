"""Training visualizer (util/visualizer.py) without a visdom server: console + loss_log.txt, web
snapshots (also shown in Chromium), and an unreachable/unresponsive visdom costing one warning."""
import argparse
import math
import re
import socket
import threading
import time
import warnings

import pytest
import torch

from tests.browser import chromium  # noqa: F401  (pytest fixture)
from util.visdom_server import find_free_port
from util.visualizer import Visualizer, VisdomUnavailableWarning


def make_opt(tmp_path, **kw):
    opt = dict(name='run', checkpoints_dir=str(tmp_path), display_id=0, display_server='http://localhost',
               display_port=8097, display_env='main', display_ncols=4, display_winsize=32, no_html=False,
               isTrain=True, model='cycle_gan', lr=0.0002)
    opt.update(kw)
    return argparse.Namespace(**opt)


def visuals(shift=0.0):
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 32).expand(3, 32, 32)
    return {'real_A': ramp.clone(), 'fake_B': (-ramp + shift).clamp(-1, 1), 'mask_A': (ramp[:1] > 0).float() * 2 - 1}


def drive_training(vis, n_epochs=2, iters=3):
    """The calls train.py makes, in its order."""
    for epoch in range(1, n_epochs + 1):
        vis.reset()
        for i in range(iters):
            losses = {'G_A': 1.0 / (i + 1), 'D_A': 0.5, 'cycle_A': torch.tensor(0.25)}
            vis.display_current_results(visuals(0.1 * i), epoch, save_result=(i == 0))
            vis.plot_current_losses(epoch, i / iters, losses)
            vis.print_current_losses(epoch, i, losses, 0.01, 0.002)


def test_print_current_losses_prints_and_appends_to_loss_log(tmp_path, capsys):
    vis = Visualizer(make_opt(tmp_path))
    msg = vis.print_current_losses(3, 200, {'G': 0.12345, 'D': torch.tensor(2.0)}, 0.5, 0.25)
    assert msg == '(epoch: 3, iters: 200, time: 0.500, data: 0.250) G: 0.123 D: 2.000 '
    vis.print_current_losses(3, 300, {'G': 1.0}, 0.5, 0.25)
    assert msg in capsys.readouterr().out
    lines = (tmp_path / 'run' / 'loss_log.txt').read_text().splitlines()
    assert lines[0].startswith('================ Training Loss (')
    assert lines[1:] == [msg, '(epoch: 3, iters: 300, time: 0.500, data: 0.250) G: 1.000 ']


def test_snapshots_saved_once_per_epoch_until_reset_and_listed_newest_first(tmp_path):
    vis = Visualizer(make_opt(tmp_path))
    images = tmp_path / 'run' / 'web' / 'images'
    vis.display_current_results(visuals(), 1, save_result=False)  # first of the epoch: saved anyway
    assert sorted(p.name for p in images.iterdir()) == ['epoch001_fake_B.png', 'epoch001_mask_A.png',
                                                        'epoch001_real_A.png']
    vis.display_current_results(visuals(), 2, save_result=False)  # same "epoch" of the loop: no save
    assert not list(images.glob('epoch002_*'))
    vis.reset()
    vis.display_current_results(visuals(), 2, save_result=False)
    vis.display_current_results(visuals(), 3, save_result=True)
    html = (tmp_path / 'run' / 'web' / 'index.html').read_text()
    headers = re.findall(r'<h3>epoch \[(\d+)\]</h3>', html)
    assert headers == ['3', '2', '1']
    # each row lists the visuals in the model's order
    row3 = html.split('epoch [3]')[1].split('<h3>')[0]
    assert [m for m in re.findall(r'src="images/epoch003_(\w+)\.png"', row3)] == ['real_A', 'fake_B', 'mask_A']


def test_resumed_run_page_lists_the_earlier_epochs(tmp_path):
    Visualizer(make_opt(tmp_path)).display_current_results(visuals(), 1, True)
    Visualizer(make_opt(tmp_path)).display_current_results(visuals(), 2, True)  # --continue_train
    html = (tmp_path / 'run' / 'web' / 'index.html').read_text()
    assert re.findall(r'<h3>epoch \[(\d+)\]</h3>', html) == ['2', '1']


def test_no_html_writes_no_web_folder(tmp_path):
    vis = Visualizer(make_opt(tmp_path, no_html=True))
    vis.display_current_results(visuals(), 1, True)
    assert not (tmp_path / 'run' / 'web').exists()
    assert (tmp_path / 'run' / 'loss_log.txt').exists()


def test_disabled_visualizer_for_other_ranks_does_nothing(tmp_path, capsys):
    for vis in (Visualizer(make_opt(tmp_path, display_id=1, display_port=find_free_port()), enabled=False),
                Visualizer(make_opt(tmp_path, display_id=1, display_port=find_free_port(), rank=1))):
        assert not vis.enabled
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # not even a visdom warning
            drive_training(vis, n_epochs=1, iters=2)
        assert vis.print_current_losses(1, 1, {'G': 1.0}, 0, 0).startswith('(epoch: 1, iters: 1')
    assert capsys.readouterr().out == ''
    assert not (tmp_path / 'run').exists()


def test_loss_history_is_per_instance_and_late_losses_are_padded_with_nan(tmp_path):
    a, b = Visualizer(make_opt(tmp_path)), Visualizer(make_opt(tmp_path, name='other'))
    a.plot_current_losses(1, 0.0, {'G': 1.0})
    a.plot_current_losses(1, 0.5, {'G': 2.0, 'D': 3.0})
    a.plot_current_losses(2, 0.0, {'D': 4.0})
    assert b.plot_data == {'X': [], 'Y': [], 'legend': []}
    assert a.plot_data['X'] == [1.0, 1.5, 2.0] and a.plot_data['legend'] == ['G', 'D']
    y = a.plot_data['Y']
    assert y[0][0] == 1.0 and math.isnan(y[0][1]) and y[1] == [2.0, 3.0]
    assert math.isnan(y[2][0]) and y[2][1] == 4.0


def test_window_ids_follow_display_id(tmp_path):
    vis = Visualizer(make_opt(tmp_path, display_id=7))
    assert (vis.loss_win, vis.images_win, vis.labels_win) == ('7', '8', '9')


def _run_with_visdom_at(tmp_path, port, server='http://localhost', timeout=(2.0, 10.0)):
    vis = Visualizer(make_opt(tmp_path, display_id=1, display_port=port, display_server=server), timeout=timeout)
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        drive_training(vis)
    return vis, time.monotonic() - t0, caught


def test_unreachable_visdom_costs_one_warning_and_no_hang(tmp_path):
    port = find_free_port()
    vis, elapsed, caught = _run_with_visdom_at(tmp_path, port)
    assert elapsed < 10
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, VisdomUnavailableWarning)
    assert str(port) in str(caught[0].message)
    assert not vis.visdom_active
    assert len(vis.plot_data['X']) == 6  # training went on
    assert (tmp_path / 'run' / 'web' / 'images' / 'epoch002_fake_B.png').exists()


def test_server_that_never_answers_times_out_with_one_warning(tmp_path):
    """A socket that accepts connections but never replies: the read timeout ends the wait."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    accepted, stop = [], threading.Event()

    def accept_and_stall():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=accept_and_stall, daemon=True)
    thread.start()
    try:
        vis, elapsed, caught = _run_with_visdom_at(tmp_path, listener.getsockname()[1],
                                                   server='http://127.0.0.1', timeout=(0.5, 0.5))
    finally:
        stop.set()
        thread.join(5)
        for s in accepted:
            s.close()
        listener.close()
    assert len(accepted) == 1, 'expected exactly one connection attempt, got %d' % len(accepted)
    assert elapsed < 10
    assert len(caught) == 1 and issubclass(caught[0].category, VisdomUnavailableWarning)
    assert 'Timeout' in str(caught[0].message)


def test_training_web_page_renders_in_chromium(chromium, tmp_path):
    drive_training(Visualizer(make_opt(tmp_path)), n_epochs=3, iters=2)
    r = chromium.render(tmp_path / 'run' / 'web' / 'index.html', tmp_path / 'shot.png')
    assert r['n_images'] == 9 and r['n_loaded'] == 9 and r['broken'] == []
    assert r['blank'] is False
    assert 'epoch [3]' in r['text'] and 'cycle_gan' in r['text']


@pytest.mark.parametrize('display_id', [0, -1])
def test_display_id_zero_or_negative_never_contacts_visdom(tmp_path, display_id):
    vis = Visualizer(make_opt(tmp_path, display_id=display_id, display_port=find_free_port()))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        drive_training(vis, n_epochs=1, iters=2)
    assert not vis.visdom_active and vis._vis is None
