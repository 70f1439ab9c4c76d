"""Models compared on validation digits shown as people's images: the 5,000 training images every recipe
holds out (data.split_validation), drawn as photos, scans and canvases (tests/synth.py's kinds) and read
through the whole predict path.  This is how the shipped model was chosen between candidate runs: MNIST-style
validation digits alone did not show that a candidate called one in seven real digits "not a digit".  A second
line shows 1,000 other validation digits written a third wider (dark on light, 76x56): MNIST's writers drew
narrow digits, other people round ones, and a network taught that loops can be non-digits may reject round 0s.  A third line:
the held-out synthetic non-digits (outliers.py's "val" bank, the one calibration uses), as the model answers them;
a fourth: 2,000 held-out digits in printed fonts (outliers.make_printed_digits, part "val"), a stand-in
on validation data for digits of shapes MNIST lacks (the same glyphs as the training bank under other random
draws: close to what a recipe with `printed` trains on).

    python -m benchmarks.validation_people MODEL [MODEL ...] [--data-dir data] [--digits 150]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec.data.datasets import load_split, split_validation
from digitrec.data.outliers import VAL_BANK, outlier_bank, printed_digit_bank
from digitrec.inference.predict import Predictor, predict_images

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synth import variants  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--digits", type=int, default=150)
    a = p.parse_args()
    _, validation = split_validation(load_split("mnist", a.data_dir, train=True), 5000)
    rng = np.random.default_rng(99)
    items, labels = [], []
    for i in rng.choice(len(validation), a.digits, replace=False):
        for kind, data in variants(validation.images[i].numpy(), rng).items():
            items.append((kind, data))
            labels.append(int(validation.labels[i]))
    wide, wide_labels = [], []
    for i in rng.choice(len(validation), 1000, replace=False):
        buffer = io.BytesIO()
        Image.fromarray(255 - validation.images[i].numpy()).resize((76, 56), Image.Resampling.BICUBIC).save(
            buffer, "PNG")
        wide.append(("wide", buffer.getvalue()))
        wide_labels.append(int(validation.labels[i]))
    bank = outlier_bank(a.data_dir, "val", VAL_BANK)
    printed, printed_labels = printed_digit_bank(a.data_dir, "val", 2000)
    for model in a.models:
        predictor = Predictor(model)
        verdicts = [predictor.describe(p)["verdict"] for p in predictor.probabilities(list(bank / np.float32(255)))]
        print(f"{model}: {len(bank)} held-out synthetic non-digits: not a digit "
              f"{verdicts.count('not_a_digit') / len(bank):.1%}, "
              f"confident digit {verdicts.count('digit') / len(bank):.1%}")
        records = [predictor.describe(p) for p in predictor.probabilities(list(printed / np.float32(255)))]
        right = np.mean([r["digit"] == y for r, y in zip(records, printed_labels)])
        print(f"{model}: {len(records)} held-out printed digits: right {right:.2%}, not a digit "
              f"{np.mean([r['verdict'] == 'not_a_digit' for r in records]):.2%}, flagged "
              f"{np.mean([r['verdict'] != 'digit' for r in records]):.2%}")
        for what, images, truth in (("as people's images", items, labels), ("written a third wider", wide,
                                                                              wide_labels)):
            records = predict_images(images, predictor)
            right = np.mean([r["digit"] == y for r, y in zip(records, truth)])
            rejected = np.mean([r["verdict"] == "not_a_digit" for r in records])
            flagged = np.mean([r["verdict"] != "digit" for r in records])
            zeros = [r["verdict"] != "digit" for r, y in zip(records, truth) if y == 0]
            print(f"{model}: {len(records)} validation digits {what}: right {right:.2%}, not a digit "
                  f"{rejected:.2%}, flagged {flagged:.2%} (0s flagged "
                  f"{f'{np.mean(zeros):.1%}' if zeros else 'n/a: no 0 drawn'})")


if __name__ == "__main__":
    main()
