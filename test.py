"""Run a trained model on test images and write an HTML page of results.

``python test.py --model insta_gan --dataroot datasets/shapes --name run`` writes
``results/<name>/<phase>_<epoch>/index.html`` and ``images/<stem>_<visual>.png``.
"""
import itertools
import os
import sys

from tqdm import tqdm

from data import create_dataset
from models import create_model
from options.test_options import TestOptions
from util.errors import run_cli


def test(opt):
    """Run ``opt.num_test`` samples through the model; returns the path of the HTML page."""
    from util import html
    opt.num_threads = 0
    opt.batch_size = 1
    opt.serial_batches = True
    opt.no_flip = True
    opt.display_id = -1
    dataset = create_dataset(opt)
    model = create_model(opt)
    model.setup(opt)
    web_dir = os.path.join(opt.results_dir, opt.name, f'{opt.phase}_{opt.epoch}')
    if opt.load_iter > 0:
        web_dir += f'_iter{opt.load_iter}'
    header = {'model': opt.model, 'epoch': opt.epoch, 'phase': opt.phase, 'dataroot': opt.dataroot,
              'netG': opt.netG, 'ngf': opt.ngf}
    header.update(getattr(model, 'report_options', lambda: {})())
    webpage = html.HTML(web_dir, f'{opt.name}: {opt.phase}, epoch {opt.epoch}', header_info=header,
                        rows_per_page=opt.results_per_page)
    if opt.eval:
        model.eval()
    value_range = getattr(model, 'visual_value_range', (-1.0, 1.0))
    n = min(len(dataset), opt.num_test)
    for batch in tqdm(itertools.islice(dataset, n), total=n, desc='test', unit='img', file=sys.stdout):
        model.set_input(batch)
        model.test()
        html.save_images(webpage, model.get_current_visuals(), model.get_image_paths(),
                         aspect_ratio=opt.aspect_ratio, width=opt.display_winsize, value_range=value_range)
    for title, rows in getattr(model, 'test_tables', lambda: [])():
        webpage.add_table(rows, title)
    webpage.save()
    page = os.path.join(web_dir, 'index.html')
    print(f'results: {page}')
    return page


def main(argv=None):
    """Exit status 0; 2 with a message on a user error (argparse's own errors exit 2 too)."""
    def run(argv):
        test(TestOptions(argv).parse())
        return 0
    return run_cli(run, argv)


if __name__ == '__main__':
    sys.exit(main())
