"""Result pages (util/html.py): written files, escaping, pagination, and how Chromium shows them."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests import browser
from tests.browser import chromium, is_blank  # noqa: F401  (chromium: pytest fixture)
from util.errors import UserInputError
from util.html import HTML, page_file_name, save_images
from util.util import save_image


def gradient(c, h=32, w=32, lo=-1.0, hi=1.0):
    """(c, h, w) tensor with a horizontal ramp from lo to hi (a visible, non-flat image)."""
    return torch.linspace(lo, hi, w).view(1, 1, w).expand(c, h, w).clone()


def make_png(path, seed, size=16):
    rng = np.random.default_rng(seed)
    save_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), str(path))


def result_page(web_dir, n_samples=3):
    """A page like test.py writes: header info, per-sample rows of 3 visuals, metrics tables."""
    page = HTML(web_dir, 'run_x results', header_info={'run': 'run_x', 'epoch': 'latest', 'model': 'alpha_gan'})
    rows = []
    for i in range(n_samples):
        visuals = {'real_A': gradient(3), 'fake_B': -gradient(3), 'alpha': gradient(1, lo=0, hi=1)}
        save_images(page, visuals, ['/data/test/img_%d.jpg' % i], width=64,
                    value_range={'alpha': (0.0, 1.0)})
        rows.append({'image': 'img_%d' % i, 'SAD': 10.0 + i, 'MSE': 0.0005 * (i + 1)})
    page.add_table([{'image': 'mean', 'SAD': 11.0, 'MSE': 0.001}], title='Mean', summary=True)
    page.add_table(rows, title='Per image')
    return page


# ---------------------------------------------------------------------- files
def test_save_images_writes_official_names_and_maps_value_ranges(tmp_path):
    page = HTML(tmp_path, 't')
    names = save_images(page, {'real_A': torch.full((1, 3, 8, 8), -1.0), 'alpha': torch.ones(1, 1, 8, 8)},
                        ['/some/dir/cat 01.jpg', '/other.jpg'], value_range={'alpha': (0.0, 1.0)})
    assert names == ['cat 01_real_A.png', 'cat 01_alpha.png']
    real = Image.open(tmp_path / 'images' / 'cat 01_real_A.png')
    alpha = Image.open(tmp_path / 'images' / 'cat 01_alpha.png')
    assert real.format == alpha.format == 'PNG'
    assert np.asarray(real).max() == 0  # -1 in [-1, 1] -> black
    assert np.asarray(alpha).min() == 255  # 1 in [0, 1] -> white


def test_save_writes_index_atomically_without_leftover_temp_files(tmp_path):
    page = result_page(tmp_path, n_samples=2)
    assert page.save() == [str(tmp_path / 'index.html')]
    assert sorted(f for f in os.listdir(tmp_path) if not os.path.isdir(tmp_path / f)) == ['index.html']


def test_names_and_captions_are_escaped_and_urls_quoted(tmp_path):
    page = HTML(tmp_path, '<b>title</b>', header_info={'<i>k</i>': '<i>v</i>'})
    page.add_header('<script>alert(1)</script>')
    page.add_images(['<script>.png'], ['<script>.png'], ['<script>.png'])
    page.save()
    text = (tmp_path / 'index.html').read_text()
    assert '<script' not in text and '<b>' not in text and '<i>' not in text
    assert 'src="images/%3Cscript%3E.png"' in text
    assert '&lt;script&gt;.png' in text


def test_rows_per_page_must_be_non_negative(tmp_path):
    with pytest.raises(UserInputError, match='results_per_page'):
        HTML(tmp_path, 't', rows_per_page=-1)


def test_pagination_keeps_headers_with_their_rows_and_removes_stale_pages(tmp_path):
    page = HTML(tmp_path, 't', rows_per_page=4)
    for i in range(10):
        page.add_header('sample %d' % i)
        page.add_images(['x.png'], ['x'], ['x.png'])
    pages = page.paginate()
    assert [sum(k == 'images' for k, _ in p) for p in pages] == [4, 4, 2]
    assert [p[0] for p in pages] == [('header', 'sample 0'), ('header', 'sample 4'), ('header', 'sample 8')]
    page.save()
    assert {'index.html', 'index_2.html', 'index_3.html'} <= set(os.listdir(tmp_path))
    smaller = HTML(tmp_path, 't', rows_per_page=4)
    smaller.add_images(['x.png'], ['x'], ['x.png'])
    smaller.save()
    assert not (tmp_path / 'index_2.html').exists() and not (tmp_path / 'index_3.html').exists()


# ---------------------------------------------------------------------- Chromium
def test_missing_chromium_skips_locally_but_fails_in_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, 'CHROMIUM', str(tmp_path / 'no-chromium'))
    monkeypatch.delenv('CI', raising=False)
    with pytest.raises(pytest.skip.Exception, match='no-chromium'):
        browser.require_chromium()
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception, match='must run in CI'):
        browser.require_chromium()


def test_result_page_renders_with_every_image_loaded(chromium, tmp_path):
    page = result_page(tmp_path / 'web')
    page.save()
    r = chromium.render(tmp_path / 'web' / 'index.html', tmp_path / 'shot.png')
    assert r['n_images'] == 9
    assert r['n_loaded'] == 9 and r['broken'] == []
    assert r['blank'] is False
    for caption in ('real_A', 'fake_B', 'alpha', 'img_0', 'img_2', 'run_x', 'alpha_gan'):
        assert caption in r['text']


def test_deleted_image_is_reported_broken(chromium, tmp_path):
    result_page(tmp_path / 'web').save()
    os.remove(tmp_path / 'web' / 'images' / 'img_1_fake_B.png')
    r = chromium.render(tmp_path / 'web' / 'index.html', tmp_path / 'shot.png')
    assert r['broken'] == ['images/img_1_fake_B.png']
    assert r['n_loaded'] == r['n_images'] - 1 == 8


def test_blank_page_is_detected_as_blank(chromium, tmp_path):
    (tmp_path / 'empty.html').write_text('<!DOCTYPE html><html><body></body></html>')
    r = chromium.render(tmp_path / 'empty.html', tmp_path / 'shot.png')
    assert r['blank'] is True and r['n_images'] == 0
    assert is_blank(tmp_path / 'shot.png')


def test_120_rows_split_into_three_pages_linked_by_next_and_prev(chromium, tmp_path):
    page = HTML(tmp_path, 'many', rows_per_page=50)
    for i in range(120):
        make_png(tmp_path / 'images' / ('s%03d.png' % i), seed=i)
        page.add_header('sample %03d' % i)
        page.add_images(['s%03d.png' % i], ['s%03d' % i], ['s%03d.png' % i], width=16)
    page.save()
    assert not (tmp_path / page_file_name(4)).exists()
    tab = chromium.new_page()
    try:
        tab.goto((tmp_path / 'index.html').as_uri(), wait_until='load')
        seen = []
        for expected_file, expected_n in [('index.html', 50), ('index_2.html', 50), ('index_3.html', 20)]:
            r = chromium.inspect(tab)
            assert r['url'].endswith('/' + expected_file)
            assert r['n_images'] == r['n_loaded'] == expected_n
            seen += [s for s in r['text'].split('\n') if s.startswith('sample ')]
            if expected_file != 'index_3.html':
                with tab.expect_navigation(wait_until='load'):
                    tab.locator('nav.pages').first.locator('a[rel=next]').click()
        assert seen == ['sample %03d' % i for i in range(120)]
        assert tab.locator('a[rel=next]').count() == 0  # last page: no next
        with tab.expect_navigation(wait_until='load'):
            tab.locator('nav.pages').first.locator('a[rel=prev]').click()
        assert tab.url.endswith('/index_2.html')
    finally:
        tab.close()


def test_script_named_image_shows_as_text_and_still_loads(chromium, tmp_path):
    names = ['<script>.png', 'a b#1?&%.png']
    for i, n in enumerate(names):
        make_png(tmp_path / 'images' / n, seed=i)
    page = HTML(tmp_path, '<script>alert("title")</script>')
    page.add_header('<script>alert("header")</script>')
    page.add_images(names, names, names)
    page.save()
    r = chromium.render(tmp_path / 'index.html', tmp_path / 'shot.png')
    assert r['n_scripts'] == 0 and r['dialogs'] == []
    assert r['n_loaded'] == 2 and r['broken'] == []
    assert '<script>.png' in r['text'] and 'a b#1?&%.png' in r['text']
    assert '<script>alert("header")</script>' in r['text']
    assert r['title'] == '<script>alert("title")</script>'


def test_metrics_tables_render_with_values_on_every_page(chromium, tmp_path):
    page = result_page(tmp_path, n_samples=3)
    page.rows_per_page = 2
    page.save()
    tab = chromium.new_page()
    try:
        for fname in ('index.html', 'index_2.html'):
            tab.goto((tmp_path / fname).as_uri(), wait_until='load')
            tables = tab.evaluate("""() => Array.from(document.querySelectorAll('table.metrics')).map(
                t => ({caption: t.caption ? t.caption.innerText : null,
                       rows: Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText))}))""")
            assert tables[0] == {'caption': 'Mean', 'rows': [['image', 'SAD', 'MSE'], ['mean', '11.0000', '0.0010']]}
        # the per-image table comes after the last row, on the last page
        assert tables[1]['caption'] == 'Per image'
        assert tables[1]['rows'][1:] == [['img_0', '10.0000', '5.000e-04'], ['img_1', '11.0000', '0.0010'],
                                         ['img_2', '12.0000', '0.0015']]
    finally:
        tab.close()
