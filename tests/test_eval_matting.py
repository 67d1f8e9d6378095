"""scripts/eval_matting.py end to end on tiny folder sets written by the tests."""

import json
import shutil
import warnings

import cv2
import numpy as np
import pytest

from scripts.eval_matting import evaluate_dirs, main
from util.errors import UserInputError
from util.metrics import apply_trimap_known, evaluate_matte

METRICS = ("SAD", "MSE", "Grad", "Conn")
# stem -> (height, width, file extension used for pred / gt / trimap): lossless formats only
CASES = {"apple": (32, 40, ".png"), "boat": (36, 32, ".bmp"), "cat": (32, 32, ".tif")}


def make_case(h, w, seed):
    """gt (soft disc), trimap consistent with it, prediction with garbage known pixels, RGB image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    gt = np.clip((0.3 * min(h, w) - r) * 255.0 / 5.0, 0, 255).round().astype(np.uint8)
    trimap = np.full((h, w), 128, np.uint8)
    trimap[gt == 0] = 0
    trimap[gt == 255] = 255
    pred = np.clip(gt + rng.normal(0, 30, (h, w)), 0, 255).round().astype(np.uint8)
    pred[trimap != 128] = rng.integers(0, 256, int(np.count_nonzero(trimap != 128)))
    a = gt[..., None] / 255.0
    fg, bg = np.array([230.0, 40.0, 40.0]), np.array([20.0, 60.0, 200.0])
    rgb = np.clip(a * fg + (1 - a) * bg + rng.normal(0, 2, (h, w, 3)), 0, 255).round().astype(np.uint8)
    return {"pred": pred, "gt": gt, "trimap": trimap, "image": rgb}


@pytest.fixture
def dataset(tmp_path):
    arrays = {}
    for i, (stem, (h, w, ext)) in enumerate(CASES.items()):
        arrays[stem] = make_case(h, w, i)
        for role in ("pred", "gt", "trimap"):
            (tmp_path / role).mkdir(exist_ok=True)
            assert cv2.imwrite(str(tmp_path / role / f"{stem}{ext}"), arrays[stem][role])
        (tmp_path / "image").mkdir(exist_ok=True)
        assert cv2.imwrite(str(tmp_path / "image" / f"{stem}.png"),
                           cv2.cvtColor(arrays[stem]["image"], cv2.COLOR_RGB2BGR))
    (tmp_path / "gt" / "notes.txt").write_text("not an image, ignored")
    return tmp_path, arrays


def dirs(root):
    return str(root / "pred"), str(root / "gt"), str(root / "trimap")


def test_json_holds_per_image_and_mean_equal_to_evaluate_matte(dataset, capsys):
    root, arrays = dataset
    out = root / "out" / "scores.json"
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--trimap",
                 str(root / "trimap"), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(stem in table for stem in CASES) and "mean" in table
    rec = json.loads(out.read_text())
    assert set(rec["per_image"]) == set(CASES) and rec["count"] == 3
    for stem, a in arrays.items():
        expected = evaluate_matte(a["pred"], a["gt"], a["trimap"])
        assert set(rec["per_image"][stem]) == set(METRICS)
        for m in METRICS:
            assert rec["per_image"][stem][m] == pytest.approx(expected[m], rel=1e-12)
    for m in METRICS:
        assert rec["mean"][m] == pytest.approx(np.mean([rec["per_image"][s][m] for s in CASES]))
    assert rec["trimap_quantised"] == {"pixels": 0, "images": []}


def test_known_pixels_of_predictions_are_taken_from_the_trimap(dataset):
    root, arrays = dataset
    clean = root / "pred_clean"
    clean.mkdir()
    for stem, a in arrays.items():
        cv2.imwrite(str(clean / f"{stem}.png"), apply_trimap_known(a["pred"], a["trimap"]).astype(np.uint8))
    garbage = evaluate_dirs(*dirs(root))
    tidy = evaluate_dirs(str(clean), str(root / "gt"), str(root / "trimap"))
    assert garbage["per_image"] == tidy["per_image"]
    # and the copy matters: scoring the raw garbage would change the gradient error
    a = arrays["apple"]
    raw = evaluate_matte(a["pred"], a["gt"], a["trimap"], copy_known=False)
    assert raw["Grad"] != pytest.approx(garbage["per_image"]["apple"]["Grad"])


def test_stray_trimap_values_are_snapped_with_one_counted_warning(dataset, capsys):
    root, arrays = dataset
    reference = evaluate_dirs(*dirs(root))
    # stray value per original class; each snaps back to the original value
    stray = {"apple": {0: 5, 128: 130, 255: 250}, "boat": {0: 40, 128: 100}}
    for stem, edits in stray.items():
        t = arrays[stem]["trimap"].copy()
        for original, v in edits.items():
            ys, xs = np.nonzero(t == original)
            t[ys[0], xs[0]] = v
        cv2.imwrite(str(root / "trimap" / f"{stem}{CASES[stem][2]}"), t)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_dirs(*dirs(root))
    msgs = [str(w.message) for w in caught if "snapped" in str(w.message)]
    assert len(msgs) == 1 and "5 trimap pixels in 2 of 3 trimaps" in msgs[0]
    assert result["trimap_quantised"] == {"pixels": 5, "images": ["apple", "boat"]}
    assert result["per_image"] == reference["per_image"]
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"),
                 "--trimap", str(root / "trimap")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "5 trimap pixels" in err


def test_missing_counterpart_is_an_error_naming_the_file(dataset):
    root, _ = dataset
    (root / "gt" / "boat.bmp").unlink()
    with pytest.raises(UserInputError, match=r"1 prediction\(s\) have no gt file .*: boat"):
        evaluate_dirs(*dirs(root))


def test_ground_truth_without_prediction_is_an_error(dataset):
    root, _ = dataset
    (root / "pred" / "cat.tif").unlink()
    with pytest.raises(UserInputError, match="have no prediction .*: cat"):
        evaluate_dirs(*dirs(root))


def test_allow_missing_scores_complete_sets_with_one_counted_warning(dataset):
    root, _ = dataset
    (root / "trimap" / "apple.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 prediction\(s\) have no trimap file .*apple"):
        result = evaluate_dirs(*dirs(root), allow_missing=True)
    assert sorted(result["per_image"]) == ["boat", "cat"] and result["count"] == 2
    assert result["missing"] == {"trimap": ["apple"]}


def test_size_mismatch_names_both_files(dataset):
    root, arrays = dataset
    cv2.imwrite(str(root / "pred" / "apple.png"), arrays["apple"]["pred"][:, :30])
    with pytest.raises(UserInputError, match=r"pred[/\\]apple\.png is 30x32 .*gt[/\\]apple\.png is 40x32"):
        evaluate_dirs(*dirs(root))


def test_duplicate_stem_and_colour_matte_are_user_errors(dataset):
    root, arrays = dataset
    shutil.copy(root / "pred" / "apple.png", root / "pred" / "apple.bmp")
    with pytest.raises(UserInputError, match="two files with the stem 'apple'"):
        evaluate_dirs(*dirs(root))
    (root / "pred" / "apple.bmp").unlink()
    colour = np.stack([arrays["apple"]["pred"]] * 3, -1)
    colour[0, 0, 1] = colour[0, 0, 0] ^ 1
    cv2.imwrite(str(root / "pred" / "apple.png"), colour)
    with pytest.raises(UserInputError, match="channels that differ"):
        evaluate_dirs(*dirs(root))


def test_half_baseline_scores_alpha_one_half_in_the_unknown_region(dataset):
    root, arrays = dataset
    result = evaluate_dirs(*dirs(root), baselines=["half"])
    half = result["baselines"]["half"]
    for stem, a in arrays.items():
        unknown = a["trimap"] == 128
        err = (127.5 - a["gt"][unknown].astype(np.float64)) / 255.0
        assert half["per_image"][stem]["SAD"] == pytest.approx(np.abs(err).sum() / 1000)
        assert half["per_image"][stem]["MSE"] == pytest.approx(np.mean(err ** 2))
    assert half["mean"]["SAD"] == pytest.approx(np.mean([v["SAD"] for v in half["per_image"].values()]))


@pytest.mark.slow  # the first pymatting import in a fresh venv JIT-compiles (~50 s, then cached)
def test_closed_form_baseline_beats_half_on_clean_composites(dataset, capsys):
    root, _ = dataset
    for stem in ("cat",):  # two tiny images are enough
        for role in ("pred", "gt", "trimap"):
            (root / role / f"{stem}{CASES[stem][2]}").unlink()
    out = root / "scores.json"
    assert main([*sum((["--" + r, str(root / r)] for r in ("pred", "gt", "trimap", "image")), []),
                 "--baseline", "cf", "--baseline", "half", "--json", str(out)]) == 0
    assert "cf:SAD" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    cf, half = rec["baselines"]["cf"]["per_image"], rec["baselines"]["half"]["per_image"]
    assert set(cf) == {"apple", "boat"}
    for stem in cf:
        assert all(np.isfinite(cf[stem][m]) for m in METRICS)
        assert cf[stem]["SAD"] < 0.5 * half[stem]["SAD"]
        assert cf[stem]["MSE"] < half[stem]["MSE"]


def test_nearest_colour_baseline_recovers_clean_two_colour_composites(dataset):
    root, arrays = dataset
    r = evaluate_dirs(*dirs(root), baselines=["nearest", "half"], image_dir=str(root / "image"))
    near, half = r["baselines"]["nearest"]["per_image"], r["baselines"]["half"]["per_image"]
    assert set(near) == set(CASES)
    for stem in near:   # flat red over flat blue (+ noise sigma 2/255): the projection is the alpha
        assert near[stem]["SAD"] < 0.1 * half[stem]["SAD"]
        assert near[stem]["MSE"] < 1e-3
    with pytest.raises(UserInputError, match="--baseline nearest needs --image"):
        evaluate_dirs(*dirs(root), baselines=["nearest"])


def test_cf_baseline_without_images_is_a_user_error(dataset, capsys):
    root, _ = dataset
    with pytest.raises(UserInputError, match="--image"):
        evaluate_dirs(*dirs(root), baselines=["cf"])
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--trimap",
                 str(root / "trimap"), "--baseline", "cf"]) == 2
    assert "needs --image" in capsys.readouterr().err


def test_pred_suffix_matches_test_py_file_names(tmp_path):
    """test.py writes <stem>_alpha.png beside other visuals; --pred_suffix _alpha scores only those."""
    import numpy as np
    from PIL import Image
    from scripts.eval_matting import evaluate_dirs
    for d in ('pred', 'gt', 'tri'):
        (tmp_path / d).mkdir()
    gt = np.zeros((8, 8), np.uint8)
    gt[:, 4:] = 200
    tri = np.full((8, 8), 128, np.uint8)
    Image.fromarray(gt).save(tmp_path / 'gt' / 'x.png')
    Image.fromarray(tri).save(tmp_path / 'tri' / 'x.png')
    Image.fromarray(gt).save(tmp_path / 'pred' / 'x_alpha.png')
    Image.fromarray(255 - gt).save(tmp_path / 'pred' / 'x_composite.png')
    out = evaluate_dirs(tmp_path / 'pred', tmp_path / 'gt', tmp_path / 'tri', pred_suffix='_alpha')
    assert list(out['per_image']) == ['x'] and out['per_image']['x']['SAD'] == 0
