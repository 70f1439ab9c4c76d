"""Models compared on validation digits shown as people's images: the 5,000 training images every recipe
holds out (data.split_validation), drawn as photos, scans and canvases (tests/synth.py's kinds) and read
through the whole predict path.  This is how the shipped model was chosen between candidate runs: MNIST-style
validation digits alone did not show that a candidate called one in seven real digits "not a digit".

    python -m benchmarks.validation_people MODEL [MODEL ...] [--data-dir data] [--digits 150]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from digitrec.data import load_split, split_validation
from digitrec.predict import Predictor, predict_images

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
    for model in a.models:
        records = predict_images(items, Predictor(model))
        right = np.mean([r["digit"] == y for r, y in zip(records, labels)])
        rejected = np.mean([r["verdict"] == "not_a_digit" for r in records])
        flagged = np.mean([r["verdict"] != "digit" for r in records])
        print(f"{model}: {len(records)} validation digits as people's images: right {right:.2%}, "
              f"not a digit {rejected:.2%}, flagged {flagged:.2%}")


if __name__ == "__main__":
    main()
