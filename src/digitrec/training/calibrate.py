"""Fitting a trained model's calibration on the held-out data of its training (inference/reliability.py has
the rules: temperature by NLL, thresholds by the share of validation digits under them), and `recalibrate`
for a model file trained before a change to those rules.  The test set is never looked at here."""

from __future__ import annotations

from dataclasses import replace

import torch

from digitrec.inference.calibration import Calibration
from digitrec.inference.reliability import (
    calibration_report,
    conformal_p_true,
    coverage_at_error,
    expected_calibration_error,
    fit_temperature,
    not_a_digit_threshold,
    risk_table,
    uncertain_threshold,
)
from digitrec.meta import ModelMeta


def calibrate(network, meta: ModelMeta, validation, outliers=None, device="cpu", log=None,
              seen: bool = False) -> tuple[Calibration, dict]:
    """Fit the temperature on the validation digits, then the not-a-digit and uncertain thresholds, the risk table
    of `--max-error` and the conformal scores of `--sets`; return the calibration and what it achieved on the
    validation data (for the model's metadata and the training log).

    network: the trained model (before test-time shifts and temperature); meta: its metadata (recipe.tta).
    validation: a data.Split of held-out digits; outliers: uint8 [M, 28, 28] held-out non-digits, or None.
    seen: the digits are ones the model trained on (a recipe without a held-out split); said in `fitted_on`.
    """
    from digitrec.data.datasets import to_float
    from digitrec.inference.backends import logits_of, predictive_model

    module = predictive_model(network, meta, temperature=1.0)
    logits = logits_of(module, to_float(validation.images), device=device)
    labels = validation.labels.cpu()
    temperature = fit_temperature(logits, labels)
    probabilities = (logits / temperature).softmax(1)
    digit_tops = probabilities.max(1).values
    threshold = not_a_digit_threshold(digit_tops) if outliers is not None else 0.0
    flag_below = uncertain_threshold(digit_tops)
    correct = probabilities.argmax(1) == labels
    summary = {"validation_images": len(labels), **calibration_report(probabilities, labels),
               "ece_before": expected_calibration_error(logits.softmax(1), labels),
               "digits_flagged": (digit_tops < flag_below).double().mean().item(),
               "coverage_at_0.1%_error": coverage_at_error(digit_tops, correct, 0.001),
               "coverage_at_1%_error": coverage_at_error(digit_tops, correct, 0.01)}
    if outliers is not None:
        top = (logits_of(module, to_float(outliers), device=device) / temperature).softmax(1).max(1).values
        summary.update(outliers=len(outliers), outliers_not_a_digit=(top < threshold).double().mean().item(),
                       outliers_uncertain_or_not=(top < flag_below).double().mean().item())
    fitted_on = f"{len(labels)} held-out training digits" + \
        (f" and {len(outliers)} held-out synthetic non-digits" if outliers is not None else "") + \
        (" (seen in training: no held-out split)" if seen else "")
    calibration = Calibration(temperature, threshold, flag_below, fitted_on=fitted_on)
    if not seen:  # (digits the model trained on would promise more than it keeps)
        risk = tuple(tuple(row) for row in risk_table(digit_tops, correct, threshold))
        calibration = replace(calibration, risk=risk, conformal_p_true=tuple(conformal_p_true(probabilities, labels)),
                              conformal_n=len(labels))
    return calibration, summary


def calibration_digits(train_split, validation: int):
    """The digits a model is calibrated on (a data.Split): the carve of `validation` images its recipe held out
    (data.split_validation) from `train_split`, the data set's whole training split; for recipes that trained
    on every image (validation 0), the same stratified carve of min(5000, a fifth) of the images they trained
    on (calibrate(..., seen=True) says so in the metadata)."""
    from digitrec.data.datasets import Split, split_validation, validation_indices

    if validation:
        return split_validation(train_split, validation)[1]
    index = validation_indices(train_split.labels.cpu(), min(5000, len(train_split) // 5))
    index = index.to(train_split.labels.device)
    return Split(train_split.images[index], train_split.labels[index])


def held_out_non_digits(data_dir, digits: int, log=None) -> torch.Tensor:
    """The held-out synthetic non-digits (outliers.py's "val" bank, never trained on) that go with `digits`
    validation digits: half as many, at most the bank's size.  uint8 [M, 28, 28]."""
    from digitrec.data.datasets import say
    from digitrec.data.outliers import VAL_BANK, outlier_bank

    return torch.from_numpy(outlier_bank(data_dir, "val", min(VAL_BANK, digits // 2), log=log or say))


def recalibrate(model, out, data_dir="data", device="auto", log=None):
    """Fit a trained model's calibration again, on the held-out data its training used, and write the same
    weights with the new calibration to OUT/model.safetensors.  For models trained before a change to the
    rules here: retraining would give the same calibration, in twenty minutes instead of seconds."""
    from pathlib import Path

    from digitrec.data.datasets import load_split, say
    from digitrec.errors import DigitrecError
    from digitrec.inference.backends import select_device
    from digitrec.modelfile import MODEL_FILE, load_model, save_model

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
