"""Calibration: make a probability mean what it says, and choose where "not a digit" begins.

Networks trained with label smoothing, weight averaging and test-time shifts are under-confident (the shipped
model of the last release was right 99.7% of the time while saying 91% on average); plain ones are often
over-confident.  One temperature T, fitted after training on the validation split by minimising the negative
log-likelihood, fixes most of it (Guo et al., 2017: "On Calibration of Modern Neural Networks").

The not-a-digit threshold is the top probability below which a prediction is called `not_a_digit`.  It is
chosen on the validation split too: the largest threshold that rejects at most REJECT_DIGITS of the real
digits held out there.  The test set is never looked at here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inference import UNCERTAIN_BELOW, Calibration
from .meta import ModelMeta

ECE_BINS = 15
REJECT_DIGITS = 0.002  # at most this share of validation digits may fall under the not-a-digit threshold
MAX_NOT_A_DIGIT = 0.5  # never call something with a 50% digit probability "not a digit": that is "uncertain"


def nll(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    return F.nll_loss(probabilities.clamp_min(1e-12).log(), labels).item()


def brier(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean squared distance between the probability vector and the one-hot label (sum over classes)."""
    onehot = F.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)
    return ((probabilities - onehot) ** 2).sum(1).mean().item()


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin: count, mean confidence, accuracy."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).double()
    index = torch.clamp((confidence * bins).long(), max=bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": n,
                     "confidence": confidence[inside].double().mean().item() if n else None,
                     "accuracy": correct[inside].mean().item() if n else None})
    return rows


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of (share of samples) x |accuracy - mean confidence| (a fraction)."""
    n = len(labels)
    return sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in reliability(probabilities, labels, bins)
               if r["count"])


def calibration_report(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"ece": expected_calibration_error(probabilities, labels), "nll": nll(probabilities, labels),
            "brier": brier(probabilities, labels),
            "mean_confidence": probabilities.max(1).values.double().mean().item()}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises NLL(softmax(logits / T)).  NLL is convex in 1/T, so a search over a log grid
    and a finer one around its best point finds the minimum without an optimiser's settings to tune."""
    logits = logits.double()

    def loss(t: torch.Tensor) -> torch.Tensor:  # t: [K] temperatures -> [K] mean NLL
        scaled = logits[None] / t[:, None, None]
        return F.cross_entropy(scaled.flatten(0, 1), labels.repeat(len(t)), reduction="none").view(len(t), -1).mean(1)

    grid = torch.logspace(-2, 1.5, 141, dtype=torch.float64)  # 0.01 .. 31.6
    best = grid[loss(grid).argmin()]
    fine = best * torch.logspace(-0.03, 0.03, 61, dtype=torch.float64)
    return float(fine[loss(fine).argmin()])


def not_a_digit_threshold(digit_top_probabilities: torch.Tensor) -> float:
    """The largest top-probability threshold under which at most REJECT_DIGITS of real digits fall."""
    k = int(REJECT_DIGITS * len(digit_top_probabilities))
    threshold = digit_top_probabilities.sort().values[k].item() if len(digit_top_probabilities) else 0.0
    return min(threshold, MAX_NOT_A_DIGIT)


def calibrate(network, meta: ModelMeta, validation, outliers=None, device="cpu", log=None) -> tuple[Calibration, dict]:
    """Fit the temperature on the validation digits, then the not-a-digit threshold; return the calibration and
    what it achieved on the validation data (for the model's metadata and the training log).

    network: the trained model (before test-time shifts and temperature); meta: its metadata (recipe.tta).
    validation: a data.Split of held-out digits; outliers: uint8 [M, 28, 28] held-out non-digits, or None.
    """
    from .data import to_float
    from .inference import logits_of, predictive_model

    module = predictive_model(network, meta, temperature=1.0)
    logits = logits_of(module, to_float(validation.images), device=device)
    labels = validation.labels.cpu()
    temperature = fit_temperature(logits, labels)
    probabilities = (logits / temperature).softmax(1)
    threshold = not_a_digit_threshold(probabilities.max(1).values) if outliers is not None else 0.0
    summary = {"validation_images": len(labels), **calibration_report(probabilities, labels),
               "ece_before": expected_calibration_error(logits.softmax(1), labels)}
    if outliers is not None:
        top = (logits_of(module, to_float(outliers), device=device) / temperature).softmax(1).max(1).values
        summary.update(outliers=len(outliers), outliers_not_a_digit=(top < threshold).double().mean().item(),
                       outliers_uncertain_or_not=(top < UNCERTAIN_BELOW).double().mean().item())
    fitted_on = f"{len(labels)} held-out training digits" + \
        (f" and {len(outliers)} held-out synthetic non-digits" if outliers is not None else "")
    return Calibration(temperature, threshold, UNCERTAIN_BELOW, fitted_on=fitted_on), summary
