"""Lines of validation digits, read through the whole `read` path: how the line-reading settings are chosen
without looking at the trust benchmark's lines (those are evaluation data).  The digits are the 5,000 training
images every recipe holds out (data.split_validation), 3-8 to a line, drawn on paper by tests/synth.line in four
kinds: spaced as people write them; touching (the digits' ink boxes meeting or overlapping by up to 3 of their
28 pixels); spaced with each digit, by a chance of one in three, drawn 1.2-1.6x wider (a wide 0, a 5 with a
long flag), which a reader that cuts too eagerly splits in two; and spaced with one mark that is not a digit
among the digits (one of the held-out synthetic non-digits calibration uses, outliers.py's "val" bank, but not
its pairs of digits), to be read as "?", which a reader that cuts too eagerly reads as two digits.

    python -m benchmarks.validation_lines MODEL [MODEL ...] [--lines 200] [--too-wide 1.25 1.1 ...]
                                          [--split-cost 0 0.1 ...]

Every pair of --too-wide (segment.TOO_WIDE: a piece wider than this x the line's height is read by recognition)
and --split-cost (predict.SPLIT_COST: what a reading pays per digit it adds) is measured.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from digitrec.data.datasets import Split, load_split, split_validation
from digitrec.data.outliers import KINDS, VAL_BANK, outlier_bank
from digitrec.errors import DigitrecError
from digitrec.imaging import segment
from digitrec.inference import predict
from digitrec.inference.predict import Predictor, read_images
from digitrec.inference.records import as_dicts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synth import line  # noqa: E402


def make_lines(validation: Split, non_digits: np.ndarray, count: int,
               seed: int = 31) -> dict[str, list[tuple[str, bytes]]]:
    """kind -> [(text, PNG bytes)], count lines of each kind; non_digits: uint8 [N, 28, 28] marks, ink high."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, list[tuple[str, bytes]]] = {"spaced": [], "touching": [], "wide digits": [], "a non-digit": []}
    for kind, out in kinds.items():
        for _ in range(count):
            n = int(rng.integers(3, 9))
            picks = rng.choice(len(validation), n, replace=False)
            digits = [validation.images[i].numpy() for i in picks]
            text = "".join(str(int(validation.labels[i])) for i in picks)
            if kind == "touching":
                image = line(digits, rng, gaps=[int(g) for g in rng.integers(-3, 1, n - 1)])
            elif kind == "a non-digit":
                k = int(rng.integers(n))
                digits[k] = non_digits[rng.integers(len(non_digits))]
                text = text[:k] + "?" + text[k + 1:]
                image = line(digits, rng)
            elif kind == "wide digits":
                stretch = [float(rng.uniform(1.2, 1.6)) if rng.random() < 1 / 3 else 1.0 for _ in range(n)]
                image = line(digits, rng, stretch=stretch)
            else:
                image = line(digits, rng)
            out.append((text, image))
    return kinds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--lines", type=int, default=200, help="lines of each kind")
    p.add_argument("--too-wide", type=float, nargs="+", default=[segment.TOO_WIDE])
    p.add_argument("--split-cost", type=float, nargs="+", default=[predict.SPLIT_COST])
    a = p.parse_args()
    if a.lines < 1:
        p.error("--lines must be at least 1")
    predictors = {model: Predictor(model) for model in a.models}  # a missing model stops it before any work
    _, validation = split_validation(load_split("mnist", a.data_dir, train=True), 5000)
    bank = outlier_bank(a.data_dir, "val", VAL_BANK)
    # Not the bank's pairs of MNIST digits side by side: in a line, those are two digits.  (make_outliers draws
    # the kinds in turn, retrying a rejected draw as the same kind, so item i is of kind KINDS[i % len(KINDS)].)
    marks = bank[[i for i in range(len(bank)) if KINDS[i % len(KINDS)] != "pairs"]]
    kinds = make_lines(validation, marks, a.lines)
    shipped = segment.TOO_WIDE, predict.SPLIT_COST
    try:
        for model, predictor in predictors.items():
            for segment.TOO_WIDE, predict.SPLIT_COST in itertools.product(a.too_wide, a.split_cost):
                figures = []
                for kind, lines in kinds.items():
                    read = as_dicts(read_images([(str(i), data) for i, (_, data) in enumerate(lines)], predictor))
                    exact = np.mean([r["text"] == text for (text, _), r in zip(lines, read)])
                    right_count = np.mean([len(r["digits"]) == len(text) for (text, _), r in zip(lines, read)])
                    figures.append(f"{kind} {exact:.1%} exact ({right_count:.1%} right count)")
                print(f"{model}, TOO_WIDE {segment.TOO_WIDE}, SPLIT_COST {predict.SPLIT_COST}: "
                      + "; ".join(figures), flush=True)
    finally:
        segment.TOO_WIDE, predict.SPLIT_COST = shipped


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as e:  # a missing or unreadable model, no data: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
