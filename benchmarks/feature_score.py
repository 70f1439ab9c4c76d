"""Would a score on the network's features say "not a digit" better than its probabilities?  (Tried for the
trust issue; not used, see docs/model-card.md, trust.)

Mahalanobis distance (Lee et al. 2018) from a 28x28's penultimate features (the `wide` networks' pooled
features) to the nearest class mean of the training digits, with one covariance shared by the classes.  Its
threshold is a quantile of the 5,000 held-out validation digits' scores; the sets it is then read on are the
held-out synthetic non-digits and the trust benchmark's own (benchmarks/wild.py), each prepared as `predict`
prepares an image.  Printed: the share of each set called "not a digit" by the probability threshold the model
ships with, by the feature score, and by either.

    python -m benchmarks.feature_score [--model M] [--data-dir data]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import machine
from benchmarks.wild import wild_digits, wild_non_digits
from digitrec.data.datasets import load_split, split_validation, to_float
from digitrec.data.outliers import VAL_BANK, outlier_bank
from digitrec.errors import DigitrecError
from digitrec.imaging.prepare import prepare
from digitrec.inference.predict import default_model_path
from digitrec.modelfile import load_model


@torch.no_grad()
def features_and_logits(network, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float [N, 1, 28, 28] -> (penultimate features [N, D] in float64, logits [N, 10])."""
    features = torch.cat([network.features(images[i:i + 1000]).flatten(1) for i in range(0, len(images), 1000)])
    return features.double(), network.out(features)


def prepared(items: list[bytes]) -> torch.Tensor:
    """Image files -> the 28x28s `predict` would give the model (an image with no ink: a blank 28x28)."""
    digits = [prepare(data).digits for data in items]
    return torch.from_numpy(np.stack([d[0] if len(d) else np.zeros((28, 28), np.float32) for d in digits]))[:, None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--data-dir", default="data")
    a = p.parse_args()
    network, meta = load_model(a.model)
    if not hasattr(network, "features"):
        raise SystemExit(f"{meta.architecture}: no `features` stage to score (the `wide` networks have one)")
    network.eval()
    calibration = meta.calibration or {}
    temperature, below = calibration.get("temperature", 1.0), calibration.get("not_a_digit_below", 0.0)
    print(f"machine: {machine()}\nmodel: {a.model} ({meta.architecture}); not a digit below {below:.2f}")

    train, validation = split_validation(load_split("mnist", a.data_dir, train=True), 5000)
    features, _ = features_and_logits(network, to_float(train.images))
    means = torch.stack([features[train.labels == c].mean(0) for c in range(10)])
    centred = features - means[train.labels]
    covariance = centred.T @ centred / len(features)
    precision = torch.linalg.inv(covariance + 1e-6 * covariance.diagonal().mean() * torch.eye(len(covariance)))

    def score(f: torch.Tensor) -> torch.Tensor:  # squared distance to the nearest class mean
        d = f[:, None, :] - means[None]
        return torch.einsum("nkd,de,nke->nk", d, precision, d).min(1).values

    rng = np.random.default_rng(2026)  # the trust benchmark's sets, drawn in its order
    fonts = wild_digits(rng, 6)
    fashion = load_split("fashion-mnist", a.data_dir, train=False).images.numpy()
    others = wild_non_digits(rng, 8, 20, 200, fashion)
    kinds = np.array([k if k in ("letter", "clothing") else "doodle" for k, _ in others])
    sets = {"validation digits": to_float(validation.images),
            "held-out synthetic non-digits": torch.from_numpy(outlier_bank(a.data_dir, "val", VAL_BANK))[:, None]
            .float() / 255,
            "handwriting-font digits (wild)": prepared([data for _, _, data in fonts]),
            "non-digits (wild)": prepared([data for _, data in others])}
    scored = {}
    for name, images in sets.items():
        f, logits = features_and_logits(network, images)
        scored[name] = (score(f), (logits / temperature).softmax(1).max(1).values < below)
    print("\nshare called not a digit: probability threshold alone | feature score alone | either")
    for q in (0.995, 0.998, 0.999):
        threshold = scored["validation digits"][0].quantile(q).item()
        print(f"\nfeature threshold: the {q:.1%} quantile of the validation digits ({threshold:.0f})")
        for name, (s, by_probability) in scored.items():
            by_score = s > threshold
            print(f"  {name:32s} {by_probability.double().mean():6.1%} | {by_score.double().mean():6.1%} | "
                  f"{(by_probability | by_score).double().mean():6.1%}")
        s, by_probability = scored["non-digits (wild)"]
        either = (by_probability | (s > threshold)).numpy()
        print("  non-digits (wild) by kind, either: " +
              ", ".join(f"{k} {either[kinds == k].mean():.1%}" for k in ("letter", "doodle", "clothing")))


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as e:  # a missing or unreadable model: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
