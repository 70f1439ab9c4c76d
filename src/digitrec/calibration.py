"""Calibration: make a probability mean what it says, and choose where "not a digit" begins.

Networks trained with label smoothing, weight averaging and test-time shifts are under-confident (the shipped
model of the last release was right 99.7% of the time while saying 91% on average); plain ones are often
over-confident.  One temperature T, fitted after training on the validation split by minimising the negative
log-likelihood, fixes most of it (Guo et al., 2017: "On Calibration of Modern Neural Networks").

The not-a-digit threshold is the top probability below which a prediction is called `not_a_digit`, the
uncertain threshold the one below which it is flagged `uncertain`.  Both are chosen on the validation split
too, by the same rule: the largest threshold under which at most a fixed share of the real digits held out there
fall (REJECT_DIGITS, FLAG_DIGITS: a fifth of what the trust issue allows on real digits, 1% and 3%, kept
as margin for digits less like MNIST's).  The test set is never looked at here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inference import UNCERTAIN_BELOW, Calibration
from .meta import ModelMeta

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


def calibrate(network, meta: ModelMeta, validation, outliers=None, device="cpu", log=None,
              seen: bool = False) -> tuple[Calibration, dict]:
    """Fit the temperature on the validation digits, then the not-a-digit and uncertain thresholds; return the
    calibration and what it achieved on the validation data (for the model's metadata and the training log).

    network: the trained model (before test-time shifts and temperature); meta: its metadata (recipe.tta).
    validation: a data.Split of held-out digits; outliers: uint8 [M, 28, 28] held-out non-digits, or None.
    seen: the digits are ones the model trained on (a recipe without a held-out split); said in `fitted_on`.
    """
    from .data import to_float
    from .inference import logits_of, predictive_model

    module = predictive_model(network, meta, temperature=1.0)
    logits = logits_of(module, to_float(validation.images), device=device)
    labels = validation.labels.cpu()
    temperature = fit_temperature(logits, labels)
    probabilities = (logits / temperature).softmax(1)
    digit_tops = probabilities.max(1).values
    threshold = not_a_digit_threshold(digit_tops) if outliers is not None else 0.0
    flag_below = uncertain_threshold(digit_tops)
    summary = {"validation_images": len(labels), **calibration_report(probabilities, labels),
               "ece_before": expected_calibration_error(logits.softmax(1), labels),
               "digits_flagged": (digit_tops < flag_below).double().mean().item()}
    if outliers is not None:
        top = (logits_of(module, to_float(outliers), device=device) / temperature).softmax(1).max(1).values
        summary.update(outliers=len(outliers), outliers_not_a_digit=(top < threshold).double().mean().item(),
                       outliers_uncertain_or_not=(top < flag_below).double().mean().item())
    fitted_on = f"{len(labels)} held-out training digits" + \
        (f" and {len(outliers)} held-out synthetic non-digits" if outliers is not None else "") + \
        (" (seen in training: no held-out split)" if seen else "")
    return Calibration(temperature, threshold, flag_below, fitted_on=fitted_on), summary


def calibration_digits(train_split, validation: int):
    """The digits a model is calibrated on (a data.Split): the carve of `validation` images its recipe held out
    (data.split_validation) from `train_split`, the data set's whole training split; for recipes that trained
    on every image (validation 0), the same stratified carve of min(5000, a fifth) of the images they trained
    on (calibrate(..., seen=True) says so in the metadata)."""
    from .data import Split, split_validation, validation_indices

    if validation:
        return split_validation(train_split, validation)[1]
    index = validation_indices(train_split.labels.cpu(), min(5000, len(train_split) // 5))
    index = index.to(train_split.labels.device)
    return Split(train_split.images[index], train_split.labels[index])


def held_out_non_digits(data_dir, digits: int, log=None) -> torch.Tensor:
    """The held-out synthetic non-digits (outliers.py's "val" bank, never trained on) that go with `digits`
    validation digits: half as many, at most the bank's size.  uint8 [M, 28, 28]."""
    from .data import say
    from .outliers import VAL_BANK, outlier_bank

    return torch.from_numpy(outlier_bank(data_dir, "val", min(VAL_BANK, digits // 2), log=log or say))


def recalibrate(model, out, data_dir="data", device="auto", log=None):
    """Fit a trained model's calibration again, on the held-out data its training used, and write the same
    weights with the new calibration to OUT/model.safetensors.  For models trained before a change to the
    rules here: retraining would give the same calibration, in twenty minutes instead of seconds."""
    from dataclasses import replace
    from pathlib import Path

    from .checkpoint import MODEL_FILE, load_model, save_model
    from .data import load_split, say
    from .errors import DigitrecError
    from .inference import select_device

    log = log or say
    dev = select_device(device)
    network, meta = load_model(model, dev)
    if meta.architecture == "ensemble":
        raise DigitrecError("an ensemble is calibrated when it is built: run `digitrec ensemble` again with its "
                            "members", code="invalid_model")
    recipe = meta.recipe or {}
    digits = calibration_digits(load_split(meta.dataset, data_dir, train=True), recipe.get("validation", 0))
    non_digits = held_out_non_digits(data_dir, len(digits), log) if recipe.get("outliers") else None
    calibration, summary = calibrate(network, meta, digits.to(dev), non_digits, dev,
                                     seen=not recipe.get("validation", 0))
    before = Calibration.from_meta(meta)
    log(f"calibrated on {calibration.fitted_on}: temperature {before.temperature:.3f} -> "
        f"{calibration.temperature:.3f}, not a digit below {before.not_a_digit_below:.3f} -> "
        f"{calibration.not_a_digit_below:.3f}, uncertain below {before.uncertain_below:.3f} -> "
        f"{calibration.uncertain_below:.3f} (validation digits flagged: {summary['digits_flagged']:.2%})")
    meta = replace(meta, calibration=calibration.to_dict(), calibration_validation=summary)
    return save_model(Path(out) / MODEL_FILE, network, meta)
