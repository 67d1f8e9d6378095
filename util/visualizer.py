"""Training feedback: console + ``loss_log.txt``, web snapshots (``web/index.html``) and visdom.

Follows the CycleGAN ``Visualizer`` contract (``reset``, ``display_current_results``,
``plot_current_losses``, ``print_current_losses``) with these differences:

* visdom is optional and lazy: nothing is contacted until the first plot/display call, HTTP
  requests time out, and a server that cannot be reached costs one
  :class:`VisdomUnavailableWarning`, after which visdom is not tried again (training goes on).
  No server is ever spawned, and no socket thread is started (``use_incoming_socket=False``).
* losses are appended to the visdom plot (one window, one trace per loss) instead of resending
  the whole history each time; the history is kept in the instance and resent only when the
  window is missing (server restarted, window closed) or a new loss name appears.
* the web page lists every saved epoch found in ``web/images`` (also after ``--continue_train``),
  newest first, split into pages.
* ``enabled=False`` (non-zero DDP ranks) makes every method a no-op.
"""
import html as html_lib
import logging
import math
import os
import re
import time
import warnings

import numpy as np

from util import distributed
from util.html import HTML
from util.util import mkdirs, save_image, tensor2im

# Options shown in the web page's header table when the run defines them.
HEADER_OPTIONS = ('model', 'dataset_mode', 'dataroot', 'netG', 'netD', 'gan_mode', 'norm', 'ngf', 'ndf',
                  'batch_size', 'lr', 'crop_size', 'n_epochs', 'n_epochs_decay', 'gpu_ids')

TRAINING_ROWS_PER_PAGE = 50    # epochs per page of the training snapshots (web/index.html)
_SNAPSHOT = re.compile(r'^epoch(\d+)_(.+)\.png$')


class VisdomUnavailableWarning(RuntimeWarning):
    """The visdom server could not be reached; plotting to visdom is switched off."""


class _QuietSocketNotice(logging.Filter):
    """Drops visdom's notice that ``use_incoming_socket=False`` disables server events."""

    def filter(self, record):
        return 'incoming socket' not in record.getMessage()


def _make_visdom_client(server, port, env, timeout):
    """A ``visdom.Visdom`` whose HTTP requests time out and raise ``ConnectionError`` on failure.

    Contacts the server once (visdom's constructor creates ``env``); raises ConnectionError when
    it cannot be reached. timeout: requests' (connect, read) timeout in seconds.
    """
    import requests
    import visdom

    class _Client(visdom.Visdom):
        @property
        def session(self):  # visdom's own logs a warning on creation; no login used here
            if self._session is None:
                self._session = requests.Session()
                if self.proxies:
                    self._session.proxies.update(self.proxies)
            return self._session

        def _handle_post(self, url, data=None):  # visdom's hook, plus a timeout and status check
            r = self.session.post(url, data=data if data is not None else {}, timeout=timeout)
            r.raise_for_status()
            return r.text

    vlog = logging.getLogger('visdom')
    quiet = _QuietSocketNotice()
    vlog.addFilter(quiet)
    try:
        with warnings.catch_warnings():  # visdom 0.2.4 calls the deprecated Logger.warn
            warnings.filterwarnings('ignore', category=DeprecationWarning, module='visdom')
            return _Client(server=server, port=port, env=env, raise_exceptions=True,
                           use_incoming_socket=False, use_polling=False)
    finally:
        vlog.removeFilter(quiet)


def _reason(error):
    """Short text for a visdom ConnectionError: the underlying requests error, if any."""
    cause = error.__context__ or error
    text = ('%s: %s' % (type(cause).__name__, cause)) if str(cause) else type(cause).__name__
    return text if len(text) <= 300 else text[:297] + '...'


class Visualizer:
    """Console/file logging, HTML snapshots and visdom display for training.

    opt fields used: name, checkpoints_dir, display_id (> 0 enables visdom; losses go to window
    ``display_id``, images to ``display_id + 1``, their labels to ``display_id + 2``),
    display_server, display_port, display_env, display_ncols, display_winsize, no_html, isTrain.
    enabled: False makes every method a no-op (use for DDP ranks > 0); None (default) means
    ``opt.rank == 0`` (rank 0 when opt has no rank: not launched by torchrun). timeout: visdom (connect, read) timeout in
    seconds. web_refresh: seconds between automatic reloads of the web page (0 = none).
    """

    def __init__(self, opt, enabled=None, timeout=(2.0, 10.0), web_refresh=0):
        self.opt = opt
        self.enabled = distributed.is_main(opt) if enabled is None else bool(enabled)
        self.name = opt.name
        self.display_id = opt.display_id if self.enabled else 0
        self.use_html = self.enabled and opt.isTrain and not opt.no_html
        self.win_size = opt.display_winsize
        self.ncols = opt.display_ncols
        self.server, self.port, self.env = opt.display_server, opt.display_port, opt.display_env
        self.timeout = timeout
        self.web_refresh = web_refresh
        self.saved = False
        self.expr_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.web_dir = os.path.join(self.expr_dir, 'web')
        self.img_dir = os.path.join(self.web_dir, 'images')
        self.log_name = os.path.join(self.expr_dir, 'loss_log.txt')
        # loss history: X (epoch + fraction) and one row of values per call, columns = legend
        self.plot_data = {'X': [], 'Y': [], 'legend': []}
        self._n_plotted = 0  # points of plot_data the visdom window holds
        self._vis = None
        self._vis_failed = False
        if not self.enabled:
            return
        mkdirs(self.expr_dir)
        if self.use_html:
            mkdirs([self.web_dir, self.img_dir])
        with open(self.log_name, 'a') as log_file:
            log_file.write('================ Training Loss (%s) ================\n' % time.strftime('%c'))

    # ------------------------------------------------------------------ visdom
    @property
    def loss_win(self):
        """visdom window id of the loss plot."""
        return str(self.display_id)

    @property
    def images_win(self):
        """visdom window id of the image grid (``display_ncols`` > 0)."""
        return str(self.display_id + 1)

    @property
    def labels_win(self):
        """visdom window id of the image grid's labels (``display_ncols`` > 0)."""
        return str(self.display_id + 2)

    @property
    def visdom_active(self):
        """True while visdom is enabled and has not failed."""
        return self.display_id > 0 and not self._vis_failed

    def _visdom(self):
        """The visdom client, connecting on first use; None when visdom is off or unreachable."""
        if not self.visdom_active:
            return None
        if self._vis is None:
            try:
                self._vis = _make_visdom_client(self.server, self.port, self.env, self.timeout)
            except ImportError as e:
                self._visdom_failed('the visdom package cannot be imported (%s)' % e, stacklevel=4)
            except ConnectionError as e:
                self._visdom_failed(_reason(e), stacklevel=4)
        return self._vis

    def _visdom_failed(self, reason, stacklevel=3):
        self._vis_failed = True
        self._vis = None
        warnings.warn('visdom server %s:%d cannot be used (%s); visdom display is off for the rest of '
                      'this run. Start a server (python -m visdom.server -port %d) or pass '
                      '--display_id 0 to silence this.' % (self.server, self.port, reason, self.port),
                      VisdomUnavailableWarning, stacklevel=stacklevel)

    # ------------------------------------------------------------------ API
    def reset(self):
        """Start of an epoch: the next display_current_results saves to the web page again."""
        self.saved = False

    def display_current_results(self, visuals, epoch, save_result, value_range=(-1.0, 1.0)):
        """Show visuals in visdom and, when ``save_result`` (or nothing was saved this epoch yet),
        save them as ``web/images/epoch%.3d_<name>.png`` and rewrite ``web/index.html``.

        visuals: dict name -> (C, H, W) / (B, C, H, W) tensor (first sample shown) or (H, W, 3)
        uint8 array. value_range: the tensors' range, or a dict name -> range ((-1, 1) default).
        """
        if not self.enabled or not visuals:
            return
        save = self.use_html and (save_result or not self.saved)
        vis = self._visdom()
        if vis is None and not save:
            return
        images = {}
        for label, image in visuals.items():
            vr = value_range.get(label, (-1.0, 1.0)) if isinstance(value_range, dict) else value_range
            images[label] = tensor2im(image, vr)
        if vis is not None:
            try:
                self._show_images(vis, images)
            except ConnectionError as e:
                self._visdom_failed(_reason(e))
        if save:
            self.saved = True
            for label, image_numpy in images.items():
                save_image(image_numpy, os.path.join(self.img_dir, 'epoch%.3d_%s.png' % (epoch, label)))
            self.write_web_page(epoch, list(images))

    def _show_images(self, vis, images):
        labels = list(images)
        h = max(a.shape[0] for a in images.values())
        w = max(a.shape[1] for a in images.values())
        padded = []
        for a in images.values():  # same size for visdom's grid, white where an image is smaller
            out = np.full((h, w, 3), 255, dtype=np.uint8)
            out[:a.shape[0], :a.shape[1]] = a
            padded.append(out.transpose(2, 0, 1))
        if self.ncols > 0:
            ncols = min(self.ncols, len(padded))
            while len(padded) % ncols:
                padded.append(np.full((3, h, w), 255, dtype=np.uint8))
                labels.append('')
            vis.images(padded, nrow=ncols, win=self.images_win, padding=2,
                       opts=dict(title=self.name + ' images'))
            rows = ''.join('<tr>%s</tr>' % ''.join('<td>%s</td>' % html_lib.escape(t)
                                                    for t in labels[i:i + ncols])
                           for i in range(0, len(labels), ncols))
            vis.text('<table style="border-collapse:separate;border-spacing:4px 0">%s</table>' % rows,
                     win=self.labels_win, opts=dict(title=self.name + ' labels'))
        else:
            for idx, (label, im) in enumerate(zip(labels, padded)):
                vis.image(im, win=str(self.display_id + 1 + idx), opts=dict(title=label))

    def plot_current_losses(self, epoch, counter_ratio, losses):
        """Add one point per loss at x = epoch + counter_ratio to the visdom loss window.

        losses: dict name -> float (or 0-d tensor). One trace per loss name; a name first seen
        later gets NaN (a gap) for the earlier points; a name missing now gets NaN.
        """
        if not self.enabled:
            return
        legend = self.plot_data['legend']
        new_names = [k for k in losses if k not in legend]
        if new_names:
            legend.extend(new_names)
            for row in self.plot_data['Y']:
                row.extend([math.nan] * len(new_names))
        self.plot_data['X'].append(float(epoch) + float(counter_ratio))
        self.plot_data['Y'].append([float(losses[k]) if k in losses else math.nan for k in legend])
        vis = self._visdom()
        if vis is None:
            return
        try:
            if new_names or self._n_plotted == 0 or vis._win_exists_wrap(self.loss_win, self.env) != 'true':
                start, update = 0, None  # (re)create the window with the whole history
            else:
                start, update = self._n_plotted, 'append'
            x = np.asarray(self.plot_data['X'][start:], dtype=np.float64)
            y = np.asarray(self.plot_data['Y'][start:], dtype=np.float64)
            vis.line(X=np.repeat(x[:, None], len(legend), axis=1), Y=y, win=self.loss_win, update=update,
                     opts=dict(title=self.name + ' loss over time', legend=list(legend),
                               xlabel='epoch', ylabel='loss'))
            self._n_plotted = len(self.plot_data['X'])
        except ConnectionError as e:
            self._visdom_failed(_reason(e))

    def print_current_losses(self, epoch, iters, losses, t_comp, t_data):
        """Print ``(epoch: E, iters: I, time: T, data: D) name: value ...`` and append it to
        ``loss_log.txt``. t_comp, t_data: seconds per sample for computation and data loading.
        Returns the message."""
        message = '(epoch: %d, iters: %d, time: %.3f, data: %.3f) ' % (epoch, iters, t_comp, t_data)
        message += ''.join('%s: %.3f ' % (k, float(v)) for k, v in losses.items())
        if self.enabled:
            print(message)
            with open(self.log_name, 'a') as log_file:
                log_file.write('%s\n' % message)
        return message

    # ------------------------------------------------------------------ web page
    def write_web_page(self, epoch, visual_names=()):
        """Rewrite ``web/index.html`` (and further pages) from the snapshots in ``web/images``,
        newest epoch first; visual_names orders each row (other names follow, sorted)."""
        by_epoch = {}
        for fname in os.listdir(self.img_dir):
            m = _SNAPSHOT.match(fname)
            if m:
                by_epoch.setdefault(int(m.group(1)), {})[m.group(2)] = fname
        info = {'run': self.name, 'epoch': epoch}
        info.update((k, getattr(self.opt, k)) for k in HEADER_OPTIONS if hasattr(self.opt, k))
        webpage = HTML(self.web_dir, 'Training results: %s' % self.name, refresh=self.web_refresh,
                       header_info=info, rows_per_page=TRAINING_ROWS_PER_PAGE)
        order = {n: i for i, n in enumerate(visual_names)}
        for n in sorted(by_epoch, reverse=True):
            names = sorted(by_epoch[n], key=lambda k: (order.get(k, len(order)), k))
            webpage.add_header('epoch [%d]' % n)
            ims = [by_epoch[n][k] for k in names]
            webpage.add_images(ims, names, ims, width=self.win_size)
        return webpage.save()
