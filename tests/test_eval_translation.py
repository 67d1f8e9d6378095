"""The translation judge of scripts/eval_translation.py rewards a real disc->square translation,
penalises an untouched input and measures background change outside the instances."""
import numpy as np

from scripts.eval_translation import checkerboard, judge, mask_iou, outside_both, saturation


def scene():
    rng = np.random.default_rng(0)
    bg = (rng.integers(100, 140, (48, 48, 1)) * np.ones((1, 1, 3))).astype(np.uint8)
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 20) ** 2 + (xx - 24) ** 2 <= 8 ** 2
    real = bg.copy()
    real[disc] = (230, 195, 40)            # warm disc
    return bg, real, disc


def test_ideal_translation_succeeds_and_keeps_background():
    bg, real, disc = scene()
    fake = bg.copy()
    fake[12:29, 16:33] = (40, 90, 220)     # cool square over the disc's box
    s, n, res = judge(real, fake, [disc])
    assert res == [(True, True)]
    assert s == 0 and n > 0


def test_untouched_input_fails_and_colour_only_change_is_partial():
    bg, real, disc = scene()
    assert judge(real, real, [disc])[2] == [(False, False)]
    recoloured = bg.copy()
    recoloured[disc] = (40, 90, 220)
    assert judge(real, recoloured, [disc])[2] == [(False, True)]


def test_background_change_is_measured_outside_instance_boxes():
    bg, real, disc = scene()
    fake = real.copy()
    fake[40:, :] = np.clip(fake[40:, :].astype(int) + 30, 0, 255).astype(np.uint8)
    s, n, _ = judge(real, fake, [disc])
    assert abs(s / n - 30 * 8 * 48 / n) < 1e-6


def test_square_to_disc_is_judged_towards_domain_a():
    rng = np.random.default_rng(1)
    bg = (rng.integers(100, 140, (48, 48, 1)) * np.ones((1, 1, 3))).astype(np.uint8)
    square = np.zeros((48, 48), bool)
    square[12:29, 16:33] = True
    real = bg.copy()
    real[square] = (40, 90, 220)                # cool square
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 20) ** 2 + (xx - 24) ** 2 <= 8 ** 2
    fake = bg.copy()
    fake[disc] = (230, 195, 40)                 # warm disc inside the square's box
    assert judge(real, fake, [square], target='A')[2] == [(True, True)]
    assert judge(real, fake, [square], target='B')[2] == [(False, False)]
    assert judge(real, real, [square], target='A')[2] == [(False, False)]


def test_checkerboard_share_finds_the_pattern_of_transposed_convolutions():
    rng = np.random.default_rng(0)
    wave = 120 + 50 * np.cos(2 * np.pi * np.arange(32) / 16)                   # a smooth, periodic texture
    smooth = np.repeat(wave[None, :, None], 32, 0).repeat(3, 2) + rng.normal(0, 1, (32, 32, 3))
    board = smooth + 20 * (np.indices((32, 32)).sum(0) % 2)[..., None]          # period 2 in x and y
    smooth, board = (np.clip(x, 0, 255).astype(np.uint8) for x in (smooth, board))
    assert checkerboard(board) > 0.05 and checkerboard(board) > 20 * checkerboard(smooth)


def test_mask_iou_and_background_outside_both():
    real = np.full((32, 32, 3), 120, np.uint8)
    fake = real.copy()
    fake[8:16, 8:16] = (200, 40, 40)                   # a saturated instance
    fake[28:, :] += 10                                 # and a grey change of the background
    disc = np.zeros((32, 32), bool)
    disc[9:15, 9:15] = True
    assert mask_iou(fake, fake.any(2) & (saturation(fake) > 0.25)) == 1.0
    half = np.zeros((32, 32), bool)
    half[8:16, 8:12] = True
    assert mask_iou(fake, half) == 0.5
    s, n = outside_both(real, fake, [disc], margin=2)
    assert n == 32 * 32 - 12 * 12 and abs(s / n - 10 * 4 * 32 / n) < 1e-6   # only the grey change counts


def test_seed_reaches_training_and_names_the_runs(tmp_path, monkeypatch):
    import train
    import scripts.eval_translation as et
    calls = []
    monkeypatch.setattr(train, 'main', lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(et, 'evaluate', lambda *a: {})
    monkeypatch.setattr(et, 'identity_baseline', lambda *a: {})
    (tmp_path / 'trainA').mkdir()          # data present: nothing is generated
    et.main(['--dataroot', str(tmp_path), '--models', 'insta_gan', 'cycle_gan', '--seed', '3'])
    et.main(['--dataroot', str(tmp_path), '--models', 'insta_gan'])
    names = [argv[argv.index('--name') + 1] for argv in calls]
    seeds = [argv[argv.index('--seed') + 1] for argv in calls]
    assert names == ['eval_translation_insta_gan_seed3', 'eval_translation_cycle_gan_seed3',
                     'eval_translation_insta_gan']
    assert seeds == ['3', '3', '0']
