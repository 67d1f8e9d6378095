"""Static result pages (``index.html``, ``index_2.html``, ...) built with dominate.

A page shows the run's title, a small table of header information (run name, epoch, the options
that matter), optional summary tables (e.g. mean matting metrics), then the content in the order
it was added: section headers, rows of images with their captions, inline tables. Rows of images
are split over pages of ``rows_per_page`` rows linked by prev/next, so a large test set gives many
small pages instead of one huge one.

Every file name and caption is escaped: text goes through dominate (which escapes ``<``, ``&``
and quotes, in text and attribute values), and image URLs are percent-encoded with
``urllib.parse.quote``, so an image named ``<script>.png`` is shown as text and still loads.
"""
import math
import os
import re
import urllib.parse

import dominate
from dominate import tags

from util.errors import UserInputError
from util.util import atomic_write, mkdirs, save_image, tensor2im

_CSS = """
body { font-family: sans-serif; margin: 1em; }
h1 { font-size: 1.4em; margin: 0 0 .4em 0; }
h3 { margin: 1em 0 .3em 0; font-size: 1.05em; word-break: break-all; }
table.info, table.metrics { border-collapse: collapse; margin: .4em 0 .8em 0; font-size: .9em; }
table.info th, table.info td, table.metrics th, table.metrics td {
  border: 1px solid #bbb; padding: 2px 6px; text-align: left; }
table.metrics td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics caption { text-align: left; font-weight: bold; padding: 2px 0; }
div.row { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 6px; }
figure { margin: 0; }
figcaption { font-size: .85em; text-align: center; word-break: break-all; }
nav.pages { margin: .6em 0; }
nav.pages a, nav.pages span { margin-right: .5em; }
nav.pages span.current { font-weight: bold; }
"""

_STALE_PAGE = re.compile(r'^index_(\d+)\.html$')


def page_file_name(page):
    """File name of 1-based page number ``page``: ``index.html``, ``index_2.html``, ..."""
    return 'index.html' if page == 1 else 'index_%d.html' % page


def _image_url(file_name):
    """URL (relative to the page) of ``images/<file_name>``, percent-encoded."""
    return urllib.parse.quote('images/' + file_name.replace(os.sep, '/'))


def _format_cell(value):
    if isinstance(value, bool) or value is None:
        return '' if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return '%.3e' % value
        return '%.4f' % value if math.isfinite(value) else str(value)
    try:  # numpy / torch scalars
        return _format_cell(value.item())
    except (AttributeError, ValueError):
        return str(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) or hasattr(value, 'item')


class HTML:
    """A paginated result page in ``web_dir`` with its images in ``web_dir/images/``.

    web_dir: output folder (created). title: page title. refresh: seconds between automatic
    reloads (0 = none). header_info: dict shown as a small table at the top of every page (e.g.
    {'run': name, 'epoch': 5, 'model': 'insta_gan'}). rows_per_page: image rows per page
    (``--results_per_page``); 0 puts everything on one page.
    """

    def __init__(self, web_dir, title, refresh=0, header_info=None, rows_per_page=50):
        if not isinstance(rows_per_page, int) or rows_per_page < 0:
            raise UserInputError('results per page must be an integer >= 0 (0 = one page), got %r; '
                                 'pass e.g. --results_per_page 50' % (rows_per_page,))
        self.title = str(title)
        self.web_dir = os.fspath(web_dir)
        self.img_dir = os.path.join(self.web_dir, 'images')
        self.refresh = int(refresh)
        self.header_info = dict(header_info or {})
        self.rows_per_page = rows_per_page
        self._blocks = []  # (kind, payload) in the order added
        self._summaries = []  # tables shown on every page
        mkdirs([self.web_dir, self.img_dir])

    def get_image_dir(self):
        """Folder where the images of this page are to be written."""
        return self.img_dir

    # ------------------------------------------------------------------ content
    def add_header(self, text):
        """Section header (e.g. the sample's name) before the next row of images."""
        self._blocks.append(('header', str(text)))

    def add_images(self, ims, txts, links, width=256):
        """One row of images.

        ims: file names relative to ``images/``; txts: their captions; links: file names (relative
        to ``images/``) each image links to; width: displayed width in pixels.
        """
        ims, txts, links = list(ims), list(txts), list(links)
        if not (len(ims) == len(txts) == len(links)):
            raise ValueError('add_images: ims, txts and links differ in length (%d, %d, %d)'
                             % (len(ims), len(txts), len(links)))
        self._blocks.append(('images', (ims, [str(t) for t in txts], links, int(width))))

    def add_table(self, rows, title=None, columns=None, summary=False):
        """A table of values, e.g. matting metrics per image and their mean.

        rows: list of dicts (column -> value); columns: column order (default: keys in order of
        first appearance); floats are shown with 4 decimals (scientific when tiny or huge).
        summary=True shows the table at the top of every page (e.g. the mean row); otherwise it
        appears where it was added.
        """
        rows = list(rows)
        if not all(isinstance(r, dict) for r in rows):
            raise TypeError('add_table: rows must be a list of dicts')
        if columns is None:
            columns = []
            for r in rows:
                columns.extend(k for k in r if k not in columns)
        table = (None if title is None else str(title), [str(c) for c in columns], rows, list(columns))
        if summary:
            self._summaries.append(table)
        else:
            self._blocks.append(('table', table))

    @property
    def n_rows(self):
        """Number of image rows added so far."""
        return sum(1 for kind, _ in self._blocks if kind == 'images')

    # ------------------------------------------------------------------ pages
    def paginate(self):
        """Split the content into pages: a list (one per page) of lists of blocks. A header stays
        on the page of the row that follows it."""
        pages, n_rows, pending = [[]], 0, []
        for block in self._blocks:
            if block[0] == 'header':
                pending.append(block)
                continue
            if block[0] == 'images':
                if self.rows_per_page and n_rows >= self.rows_per_page:
                    pages.append([])
                    n_rows = 0
                n_rows += 1
            pages[-1].extend(pending)
            pending = []
            pages[-1].append(block)
        pages[-1].extend(pending)
        return pages

    def save(self):
        """Write all pages atomically (the later pages first, ``index.html`` last) and remove
        pages left over from an earlier, longer save. Returns the written paths, first page first."""
        pages = self.paginate()
        n = len(pages)
        paths = [os.path.join(self.web_dir, page_file_name(i + 1)) for i in range(n)]
        for i in reversed(range(n)):
            text = self._render(pages[i], i + 1, n)
            atomic_write(paths[i], lambda f, t=text: f.write(t), mode='w')
        for fname in os.listdir(self.web_dir):
            m = _STALE_PAGE.match(fname)
            if m and int(m.group(1)) > n:
                os.remove(os.path.join(self.web_dir, fname))
        return paths

    def _render(self, blocks, page, n_pages):
        doc = dominate.document(title=self.title if n_pages == 1 else
                                '%s (page %d of %d)' % (self.title, page, n_pages))
        with doc.head:
            tags.meta(charset='utf-8')
            if self.refresh > 0:
                tags.meta(http_equiv='refresh', content=str(self.refresh))
            tags.style(_CSS)
        with doc:
            tags.h1(self.title)
            if self.header_info:
                with tags.table(cls='info'):
                    for k, v in self.header_info.items():
                        with tags.tr():
                            tags.th(str(k))
                            tags.td(str(v))
            for table in self._summaries:
                self._render_table(table)
            self._render_nav(page, n_pages)
            for kind, payload in blocks:
                if kind == 'header':
                    tags.h3(payload)
                elif kind == 'images':
                    self._render_row(*payload)
                else:
                    self._render_table(payload)
            self._render_nav(page, n_pages)
        return doc.render()

    @staticmethod
    def _render_row(ims, txts, links, width):
        with tags.div(cls='row'):
            for im, txt, link in zip(ims, txts, links):
                with tags.figure():
                    with tags.a(href=_image_url(link)):
                        tags.img(src=_image_url(im), alt=txt, style='width:%dpx' % width)
                    tags.figcaption(txt)

    @staticmethod
    def _render_table(table):
        title, labels, rows, columns = table
        with tags.table(cls='metrics'):
            if title is not None:
                tags.caption(title)
            with tags.tr():
                for label in labels:
                    tags.th(label)
            for r in rows:
                with tags.tr():
                    for c in columns:
                        v = r.get(c)
                        tags.td(_format_cell(v), cls='num' if _is_number(v) else None)

    @staticmethod
    def _render_nav(page, n_pages):
        if n_pages <= 1:
            return
        shown = sorted({1, n_pages} | set(range(max(1, page - 3), min(n_pages, page + 3) + 1)))
        with tags.nav(cls='pages'):
            tags.span('Page %d of %d:' % (page, n_pages))
            if page > 1:
                tags.a('\u00ab prev', href=page_file_name(page - 1), rel='prev')
            last = 0
            for p in shown:
                if p > last + 1:
                    tags.span('\u2026')
                if p == page:
                    tags.span(str(p), cls='current')
                else:
                    tags.a(str(p), href=page_file_name(p))
                last = p
            if page < n_pages:
                tags.a('next \u00bb', href=page_file_name(page + 1), rel='next')


def save_images(webpage, visuals, image_path, aspect_ratio=1.0, width=256, value_range=(-1.0, 1.0)):
    """Save one sample's visuals to ``webpage``'s image folder and add them as a row.

    visuals: dict name -> image tensor (C, H, W) or (B, C, H, W) (first sample), or (H, W, 3)
    uint8 array. image_path: the sample's source path (or a list of paths: the first is used).
    Files are ``images/<image stem>_<visual name>.png`` (CycleGAN's naming). value_range: the
    tensors' value range, (-1, 1) for GAN images or (0, 1) for alpha mattes; a dict name ->
    range gives one per visual (names absent from it use (-1, 1)). Returns the file names.
    """
    if isinstance(image_path, (list, tuple)):
        image_path = image_path[0]
    name = os.path.splitext(os.path.basename(os.fspath(image_path)))[0]
    image_dir = webpage.get_image_dir()
    webpage.add_header(name)
    ims, txts = [], []
    for label, im_data in visuals.items():
        vr = value_range.get(label, (-1.0, 1.0)) if isinstance(value_range, dict) else value_range
        im = tensor2im(im_data, vr)
        image_name = '%s_%s.png' % (name, label)
        save_image(im, os.path.join(image_dir, image_name), aspect_ratio=aspect_ratio)
        ims.append(image_name)
        txts.append(label)
    webpage.add_images(ims, txts, ims, width=width)
    return ims
