"""The shipped model as a reader people can rely on: calibrated on MNIST's test set, "not a digit" for things that
are not digits, and other people's handwriting read as digits.  Small versions of `make bench-trust`'s sets
(benchmarks/wild.py: handwriting fonts and doodles digitrec never trained on)."""

import numpy as np
import pytest
from conftest import run_cli

from benchmarks.wild import handwriting_fonts, wild_digits, wild_non_digits
from digitrec.data.datasets import load_split
from digitrec.data.outliers import make_outliers
from digitrec.inference.backends import evaluate_split, predictive_model
from digitrec.inference.predict import Predictor, default_model_path, predict_images, read_images
from digitrec.inference.records import as_dicts
from digitrec.inference.reliability import expected_calibration_error
from digitrec.modelfile import load_model

needs_fonts = pytest.mark.skipif(not handwriting_fonts(), reason="handwriting fonts not installed (make fonts)")


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


@pytest.mark.mnist
@pytest.mark.slow
def test_shipped_model_is_accurate_and_calibrated_on_the_test_set(mnist_dir):
    network, meta = load_model(default_model_path())
    ev = evaluate_split(predictive_model(network, meta), load_split("mnist", mnist_dir, train=False))
    assert ev.accuracy >= 99.6  # docs/model-card.md's figure for the shipped model (99.66%), less a little for other CPUs
    assert expected_calibration_error(ev.probabilities, ev.labels) <= 0.005
    assert meta.calibration["temperature"] != 1.0 and meta.calibration["not_a_digit_below"] > 0.1


@needs_fonts
@pytest.mark.slow
def test_things_that_are_not_digits_are_not_confident_digits(predictor, mnist_dir):
    fashion = load_split("fashion-mnist", mnist_dir, train=False).images.numpy()
    others = wild_non_digits(np.random.default_rng(11), 2, 4, 40, fashion)
    records = as_dicts(predict_images(others, predictor))
    verdicts = [r["verdict"] for r in records]
    assert verdicts.count("digit") <= 0.2 * len(records), verdicts  # the model before outlier exposure: 32%
    assert verdicts.count("not_a_digit") >= 0.6 * len(records), verdicts
    assert all(r["digit"] is None for r in records if r["verdict"] == "not_a_digit")


@needs_fonts
@pytest.mark.slow
def test_digits_in_other_hands_are_read_and_rarely_rejected(predictor):
    digits = wild_digits(np.random.default_rng(12), 1)
    records = as_dicts(predict_images([(font, data) for _, font, data in digits], predictor))
    right = np.mean([r["digit"] == label for r, (label, _, _) in zip(records, digits)])
    rejected = np.mean([r["verdict"] == "not_a_digit" for r in records])
    assert right >= 0.95 and rejected <= 0.03, (right, rejected)


@pytest.mark.mnist
def test_held_out_outliers_are_called_not_a_digit(predictor, mnist_dir):
    """Outliers from the held-out ("val") bank, through the model as it predicts."""
    bank = make_outliers(40, mnist_dir, "val", seed=5, log=lambda m: None)
    probs = predictor.probabilities([b.astype(np.float32) / 255 for b in bank])
    verdicts = [predictor.describe(p)["verdict"] for p in probs]
    assert verdicts.count("not_a_digit") >= 28 and verdicts.count("digit") <= 4, verdicts


@needs_fonts
def test_read_marks_a_non_digit_with_a_question_mark(predictor, tmp_path):
    """A line '4', star, '7': the star keeps its box and reads as '?'."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = handwriting_fonts()
    font = ImageFont.truetype(next((f for f in fonts if "Humor" in f), fonts[0]), 90)  # digits taller than the star
    image = Image.new("L", (420, 160), 255)
    draw = ImageDraw.Draw(image)
    draw.text((30, 20), "4", font=font, fill=0)
    star = [(210 + 32 * np.sin(k * 4 * np.pi / 5), 75 - 32 * np.cos(k * 4 * np.pi / 5)) for k in range(6)]
    draw.line(star, fill=0, width=7)
    draw.text((320, 20), "7", font=font, fill=0)
    image.save(tmp_path / "line.png")
    record = as_dicts(read_images([("line", (tmp_path / "line.png").read_bytes())], predictor))[0]
    assert record["text"] == "4?7" and len(record["digits"]) == 3
    assert record["digits"][1]["verdict"] == "not_a_digit" and record["digits"][1]["digit"] is None
    result = run_cli("read", str(tmp_path / "line.png"))
    assert result.returncode == 0 and "4?7" in result.stdout


def test_hollow_augmentation_draws_outlines_of_the_strokes():
    """augment.hollow: a filled bar becomes its outline (ink at the edges, none in the middle) for the share of
    images asked, and the other images are left as they were."""
    import torch

    from digitrec.training.augment import random_affine
    from digitrec.training.recipes import Augment

    bars = torch.zeros(200, 1, 28, 28)
    bars[:, :, 6:22, 10:18] = 1.0
    torch.manual_seed(0)
    out = random_affine(bars, Augment(hollow=0.5))
    hollow = out[:, 0, 14, 14] == 0  # the bar's middle emptied
    assert 70 <= int(hollow.sum()) <= 130
    assert (out[hollow][:, 0, 14, 9] == 1).all() and (out[hollow][:, 0, 14, 18] == 1).all()  # its edges inked
    assert torch.allclose(out[~hollow], bars[~hollow], atol=1e-5)  # (an identity grid_sample, not bit-exact)


def test_felt_tip_small_capture_and_skipped_strokes_change_their_share_of_the_images():
    """augment.felt widens a 2 px bar to 6 px, augment.lowres softens it (and leaves no pixel above 1), and
    augment.breaks cuts gaps into it; each for about the share asked, the other images unchanged."""
    import torch

    from digitrec.training.augment import random_affine
    from digitrec.training.recipes import Augment

    bars = torch.zeros(300, 1, 28, 28)
    bars[:, :, 6:22, 13:15] = 1.0
    for field, changed in (("felt", lambda out: (out[:, 0, 14] > 0.5).sum(1) == 6),
                           ("lowres", lambda out: ((out > 0.05) & (out < 0.95)).flatten(1).any(1)),
                           ("breaks", lambda out: (out[:, 0, 6:22, 13:15] < 0.5).flatten(1).any(1))):
        torch.manual_seed(4)
        out = random_affine(bars, Augment(**{field: 0.5}))
        hit = changed(out)
        assert 110 <= int(hit.sum()) <= 190, field
        assert torch.allclose(out[~hit], bars[~hit], atol=1e-5) and out.max() <= 1 and out.min() >= 0, field
    torch.manual_seed(4)
    broken = random_affine(bars, Augment(breaks=1.0))
    lost = bars.sum((1, 2, 3)) - broken.sum((1, 2, 3))
    assert (lost > 0).all() and (lost < 0.8 * bars.sum((1, 2, 3))).all()  # gaps, never the whole stroke


def test_pen_signs_are_drawn_as_ink_and_none_is_a_one():
    from digitrec.data.outliers import PEN_SIGNS, _looks_like_a_one, draw_pen_sign, to_digit_space

    rng = np.random.default_rng(5)
    signs = [to_digit_space(draw_pen_sign(rng, int(rng.integers(56, 129)))) for _ in range(10 * len(PEN_SIGNS))]
    assert all(d is not None and d.max() > 200 for d in signs)
    assert sum(_looks_like_a_one(d) for d in signs) <= 0.05 * len(signs)


def test_icon_outliers_are_ink_and_not_one_thin_bar():
    """Every family of the `icons` outliers draws something the preprocessing keeps, and no family is a 1."""
    from digitrec.data.outliers import _looks_like_a_one, draw_icon, to_digit_space

    rng = np.random.default_rng(3)
    for family in range(5):
        digits = [to_digit_space(draw_icon(rng, 96, family)) for _ in range(20)]
        assert all(d is not None and d.max() > 200 for d in digits), family
        assert sum(_looks_like_a_one(d) for d in digits) <= 2, family


def test_aspect_augmentation_changes_the_width_alone():
    """augment.aspect: a square's width varies both ways within 1/(1+aspect)..1+aspect; its height does not."""
    import torch

    from digitrec.training.augment import random_affine
    from digitrec.training.recipes import Augment

    squares = torch.zeros(300, 1, 28, 28)
    squares[:, :, 10:18, 10:18] = 1.0
    torch.manual_seed(1)
    out = random_affine(squares, Augment(aspect=0.5))
    width, height = (out[:, 0] > 0.5).any(1).sum(1).float(), (out[:, 0] > 0.5).any(2).sum(1).float()
    assert (height == 8).all()
    assert width.min() <= 6 and width.max() >= 11 and (width >= 8 / 1.5 - 1).all() and (width <= 8 * 1.5 + 1).all()


def test_shear_augmentation_slants_a_bar_both_ways_and_keeps_its_height():
    """augment.shear: an upright bar leans, left in some images and right in others, by at most shear x its
    height; its height is unchanged."""
    import torch

    from digitrec.training.augment import random_affine
    from digitrec.training.recipes import Augment

    bars = torch.zeros(300, 1, 28, 28)
    bars[:, :, 6:22, 13:15] = 1.0
    torch.manual_seed(2)
    out = random_affine(bars, Augment(shear=0.4))[:, 0]
    columns = torch.arange(28.0)
    centre = lambda row: (out[:, row] * columns).sum(1) / out[:, row].sum(1)
    lean = centre(7) - centre(20)  # top minus bottom, over 13 rows
    assert ((out > 0.5).any(2).sum(1) == 16).all()
    assert lean.min() < -3 and lean.max() > 3 and lean.abs().max() <= 0.4 * 13 + 0.5


def test_european_strokes_flag_the_ones_cross_the_sevens_and_leave_the_rest():
    """augment.euro: with share 1 every 1 gains a flag (ink left of the stem's top, below it), about a third of
    them a foot too (ink right of the stem at its bottom), and no other ink on the right; every 7 a crossbar
    through its stem at mid height; other digits, and share 0, change nothing."""
    import torch

    from digitrec.training.augment import european_strokes

    x = torch.zeros(90, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0  # an upright stem: a 1 (and, labelled 4, some other digit's)
    labels = torch.tensor([1, 7, 4] * 30)
    x[1::3, :, 4:6, 6:15] = 1.0  # the 7s: a top bar ending at the stem
    torch.manual_seed(3)
    out = european_strokes(x, labels, 1.0)
    added = out - x
    assert torch.equal(out[2::3], x[2::3])
    ones, sevens = added[0::3, 0], added[1::3, 0]
    assert (ones[:, 6:16, :12].sum((1, 2)) > 3).all()  # the flag: below the top, left of the stem
    assert (ones[:, :21, 16:].sum((1, 2)) == 0).all()  # nothing to the right of the stem above its foot
    feet = ones[:, 21:, 16:].sum((1, 2)) > 1
    assert 4 <= int(feet.sum()) <= 17
    assert (sevens[:, 12:17, :12].sum((1, 2)) > 1).all() and (sevens[:, 12:17, 16:].sum((1, 2)) > 1).all()
    assert (sevens[:, 18:, :].sum((1, 2)) == 0).all()  # the bar is at mid height, not at the foot
    assert torch.equal(european_strokes(x, labels, 0.0), x)

    # A stem leaning right (23 degrees): the flag still falls to the stem's left, at most 50 degrees from
    # vertical on a bare stem (a flatter one is a 7) and at most 70 with a foot.  A stem leaning 60 degrees
    # gets no flag at all (one could not fall to its left).
    from digitrec.training.augment import _strokes

    def stem(top, bottom):
        return _strokes(28, 28, torch.tensor([top] * 60), torch.tensor([bottom] * 60), torch.full((60,), 2.0))[:, None]

    leaning, ones60 = stem((18.0, 4.0), (10.0, 23.0)), torch.ones(60, dtype=torch.long)
    torch.manual_seed(4)
    added = (european_strokes(leaning, ones60, 1.0) - leaning)[:, 0]
    rows, columns = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    rows, columns = rows.expand(60, 28, 28), columns.expand(60, 28, 28)
    flag = ((added > 0.5) & (rows < 20)).float()  # above any foot
    assert (flag.sum((1, 2)) > 0).all()
    dx = (flag * (18 - columns)).sum((1, 2)) / flag.sum((1, 2))  # the flag's centre, from the stem's top
    dy = (flag * (rows - 4)).sum((1, 2)) / flag.sum((1, 2))
    degrees = torch.rad2deg(torch.atan2(dx, dy))  # from straight down, positive to the left
    footed = (added[:, 21:, 13:] > 0.5).any(2).any(1)  # a foot reaches right of the stem's bottom (column 10)
    assert footed.any() and (~footed).any()
    assert (degrees > 23 + 10).all()  # to the left of the stem, by the 20 degrees or more it is drawn at
    assert (degrees[~footed] <= 50 + 8).all() and (degrees[footed] <= 70 + 8).all()  # (+ the new ink's lean left)
    steep = european_strokes(stem((24.0, 6.0), (4.0, 17.5)), ones60, 1.0)
    assert torch.equal(steep, stem((24.0, 6.0), (4.0, 17.5)))


def test_training_fonts_need_every_printed_family_and_name_the_missing_package():
    """A bank made without one of the three printed font families would differ from everyone else's: refused,
    with the Debian package to install."""
    from unittest.mock import patch

    from digitrec.data.outliers import TRAINING_FONTS, training_fonts
    from digitrec.errors import DigitrecError

    fonts = training_fonts()
    assert {f.split("/")[-2] for f in fonts} == {"dejavu", "liberation2", "freefont"}
    assert not any("Math" in f for f in fonts)  # the maths face draws Cyrillic letters as boxes
    with patch.dict(TRAINING_FONTS, {"fonts-liberation2": ("/nonexistent/Liberation*.ttf",)}):
        with pytest.raises(DigitrecError, match=r"apt-get install fonts-liberation2\)$") as caught:
            training_fonts()
    assert caught.value.code == "not_found"


def test_printed_digits_are_labelled_balanced_and_look_like_their_label(tmp_path):
    """The printed-digit bank: every label ten times in 100, each image ink in MNIST's form, cached and read
    back the same; the shipped model reads most of them as their label (they are digits, in printed fonts)."""
    from unittest.mock import patch

    from digitrec.data.outliers import PRINTED_VERSION, printed_digit_bank

    images, labels = printed_digit_bank(tmp_path, "val", 100, log=lambda m: None)
    assert images.shape == (100, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [10] * 10
    assert all(image.max() == 255 for image in images)
    cached = tmp_path / "outliers" / f"printed-val-v{PRINTED_VERSION}-100.npy"
    assert cached.is_file()
    with patch("digitrec.data.outliers.make_printed_digits", side_effect=AssertionError("made again")):
        again_images, again_labels = printed_digit_bank(tmp_path, "val", 100)
    assert np.array_equal(again_images, images) and np.array_equal(again_labels, labels)
    probs = Predictor().probabilities(list(images / np.float32(255)))
    assert (probs.argmax(1) == labels).mean() >= 0.85
