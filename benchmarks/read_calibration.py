"""Fit the number confidence of `read` (inference/calibration.py NUMBER_CALIBRATION) for a model, on numbers
drawn from the validation digits (data/sheets.py: dates, phone numbers, decimals, times, plain; a third with
touching digits), and show how well it holds on numbers drawn apart from those it was fitted on.

    python -m benchmarks.read_calibration --data-dir data [--model FILE] [--count 1200]
"""

import argparse

import numpy as np
import torch

from digitrec.data.datasets import load_split, split_validation
from digitrec.data.sheets import make_numbers
from digitrec.inference.calibration import number_confidence
from digitrec.inference.predict import Predictor, load_reader, read_images
from digitrec.inference.reliability import fit_number_calibration
from benchmarks.common import machine


def numbers(predictor, reader, images, labels, count: int, seed: int):
    """(product of digit confidences, cut, read right) per drawn number."""
    items = make_numbers(images, labels, count * 2 // 3, seed) + \
        make_numbers(images, labels, count // 3, seed + 1, kinds=("plain",), overlap=3)
    rows = []
    for record, (text, _) in zip(read_images(items, predictor, reader=reader), items):
        found = [n for line in record.lines for n in line.numbers]
        for n in found:
            product = float(np.prod([d.confidence for d in n.digits])) if n.digits else 0.0
            rows.append((product, n.cut, record.text == text))
    return np.array(rows, dtype=np.float64)


def report(name, confidence, right) -> None:
    print(f"{name}: {len(right)} numbers, {right.mean():.1%} read right")
    for at in (0.9, 0.99):
        kept = confidence >= at
        print(f"  answers at >= {at}: {kept.mean():.1%} of numbers, {right[kept].mean():.1%} right")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--model")
    p.add_argument("--count", type=int, default=1200, help="numbers to fit on (as many again to check)")
    args = p.parse_args()
    print(f"machine: {machine()}")
    _, validation = split_validation(load_split("mnist", args.data_dir, train=True), 5000)
    images, labels = validation.images.numpy(), validation.labels.numpy()
    # The two halves of the validation digits draw the fitting and the checking numbers.
    half = len(labels) // 2
    predictor, reader = Predictor(args.model), load_reader()  # as `read` runs
    fit = numbers(predictor, reader, images[:half], labels[:half], args.count, seed=31)
    check = numbers(predictor, reader, images[half:], labels[half:], args.count, seed=41)
    a, b, c = fit_number_calibration(*(torch.from_numpy(fit[:, k]) for k in range(3)))
    print(f"NUMBER_CALIBRATION = ({a:.4f}, {b:.4f}, {c:.4f})", flush=True)
    for name, rows in (("fitted on", fit), ("checked on", check)):
        before = rows[:, 0]
        after = np.array([number_confidence([q], bool(cut), (a, b, c)) for q, cut, _ in rows])
        report(f"{name}, product of digit confidences", before, rows[:, 2].astype(bool))
        report(f"{name}, calibrated", after, rows[:, 2].astype(bool))


if __name__ == "__main__":
    main()
