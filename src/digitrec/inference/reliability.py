"""Calibration's arithmetic: make a probability mean what it says, and choose where "not a digit" begins.

Networks trained with label smoothing, weight averaging and test-time shifts are under-confident (the shipped
model of the last release was right 99.7% of the time while saying 91% on average); plain ones are often
over-confident.  One temperature T, fitted after training on the validation split by minimising the negative
log-likelihood, fixes most of it (Guo et al., 2017: "On Calibration of Modern Neural Networks").

The not-a-digit threshold is the top probability below which a prediction is called `not_a_digit`, the
uncertain threshold the one below which it is flagged `uncertain`.  Both are chosen on the validation split
too, by the same rule: the largest threshold under which at most a fixed share of the real digits held out there
fall (REJECT_DIGITS, FLAG_DIGITS: a fifth of what the trust issue allows on real digits, 1% and 3%, kept
as margin for digits less like MNIST's).  Fitting them is training/calibrate.py's; reading them, evaluation's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from digitrec.inference.calibration import CONFORMAL_COVERAGE, UNCERTAIN_BELOW

ECE_BINS = 15
REJECT_DIGITS = 0.002  # at most this share of validation digits may fall under the not-a-digit threshold
MAX_NOT_A_DIGIT = 0.5  # never call something with a 50% digit probability "not a digit": that is "uncertain"
FLAG_DIGITS = 0.006  # at most this share of validation digits may fall under the uncertain threshold
# The uncertain threshold stays within these: never a confident answer under 70% (the fixed threshold before
# it was fitted), and never a flag on a 99.5% answer however sure the network is of its validation digits.
UNCERTAIN_RANGE = (UNCERTAIN_BELOW, 0.99)


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


def _largest_threshold(digit_top_probabilities: torch.Tensor, share: float) -> float:
    """The largest top-probability threshold under which at most `share` of the real digits fall (strictly)."""
    k = int(share * len(digit_top_probabilities))
    return digit_top_probabilities.sort().values[k].item() if len(digit_top_probabilities) else 0.0


def not_a_digit_threshold(digit_top_probabilities: torch.Tensor) -> float:
    """The largest top-probability threshold under which at most REJECT_DIGITS of real digits fall."""
    return min(_largest_threshold(digit_top_probabilities, REJECT_DIGITS), MAX_NOT_A_DIGIT)


def uncertain_threshold(digit_top_probabilities: torch.Tensor) -> float:
    """The largest top-probability threshold under which at most FLAG_DIGITS of real digits fall, within
    UNCERTAIN_RANGE."""
    low, high = UNCERTAIN_RANGE
    return min(max(_largest_threshold(digit_top_probabilities, FLAG_DIGITS), low), high)


def fit_number_calibration(products: torch.Tensor, cut: torch.Tensor, right: torch.Tensor) -> tuple[float, ...]:
    """(a, b, c) of calibration.number_confidence: logistic regression of whether a number was read right on
    logit(product of its digits' confidences) and whether a piece of it was cut.  Newton's method with step
    halving (the negative log-likelihood is convex; a small ridge keeps it finite when the classes separate)."""
    p = products.double().clamp(1e-6, 1 - 1e-9)
    x = torch.stack([torch.log(p / (1 - p)), cut.double(), torch.ones_like(p)], 1)
    y = right.double()
    ridge = 1e-2

    def loss(w: torch.Tensor) -> float:
        z = x @ w
        return float((F.softplus(z) - y * z).sum() + ridge / 2 * (w @ w))

    w = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for _ in range(100):
        q = torch.sigmoid(x @ w)
        gradient = x.T @ (q - y) + ridge * w
        hessian = (x.T * (q * (1 - q))) @ x + ridge * torch.eye(3, dtype=torch.float64)
        step, before = torch.linalg.solve(hessian, gradient), loss(w)
        while loss(w - step) > before and step.abs().max() > 1e-12:
            step = step / 2
        w = w - step
        if step.abs().max() < 1e-9:
            break
    return float(w[0]), float(w[2]), float(w[1])


# --- Selective answers and prediction sets -------------------------------------------------------------------
# Both are fitted on the same held-out validation digits as the temperature, after it, and stored with it.


def risk_coverage(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The risk-coverage curve (Geifman & El-Yaniv 2017): answers sorted by confidence, most sure first; for the
    k most sure, (share of all answers kept, share of the kept that are wrong), k = 1 .. N."""
    order = confidence.argsort(descending=True)
    wrong = (~correct[order].bool()).double().cumsum(0)
    kept = torch.arange(1, len(order) + 1, dtype=torch.float64)
    return kept / max(len(order), 1), wrong / kept


def coverage_at_error(confidence: torch.Tensor, correct: torch.Tensor, max_error: float) -> float:
    """The largest share of answers that can be kept, most sure first, with at most `max_error` of them wrong."""
    coverage, risk = risk_coverage(confidence, correct)
    within = (risk <= max_error + 1e-12).nonzero()
    return float(coverage[within[-1]]) if len(within) else 0.0


def risk_table(confidence: torch.Tensor, correct: torch.Tensor, floor: float = 0.0) -> list[list]:
    """What `--max-error` needs of the validation digits: rows [threshold, kept, wrong], thresholds ascending from
    `floor` (the not-a-digit threshold: nothing under it is answered anyway), each further one the lowest
    confidence that keeps out one more wrong answer.  Between two rows the number wrong stays and the number kept
    falls, so the share wrong is lowest at a row's own threshold: the threshold for any max_error is one of these
    rows (Calibration.threshold_for)."""
    confidence, correct = confidence.double(), correct.bool()
    above = lambda c: float(torch.nextafter(c, torch.tensor(2.0, dtype=c.dtype)))  # noqa: E731
    cuts = sorted({floor} | {above(c) for c in confidence[~correct] if c >= floor})
    return [[t, int((confidence >= t).sum()), int(((confidence >= t) & ~correct).sum())] for t in cuts]


def conformal_p_true(probabilities: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Split conformal prediction's calibration scores for the validation digits, 1 - the probability of the
    true digit (LAC: Sadinle, Lei & Wasserman 2019, whose sets are the smallest on average for a coverage), kept
    as those probabilities, smallest first (4 significant digits keep their precision however small), only as
    many as the lowest coverage of CONFORMAL_COVERAGE needs: Calibration.set_threshold reads them.  (The
    adaptive sets of Romano et al. 2020 were measured too: on this model, whose validation probabilities are near
    1, they held 8 digits on average at 99% coverage.)"""
    p_true = probabilities.double().gather(1, labels[:, None])[:, 0]
    needed = len(labels) - math.ceil((len(labels) + 1) * CONFORMAL_COVERAGE[0]) + 1
    return [float(f"{p:.4g}") for p in p_true.sort().values[:max(needed, 1)].tolist()]
