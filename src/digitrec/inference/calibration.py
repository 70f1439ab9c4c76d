"""Calibration applied: how a model's probabilities become verdicts (digit, uncertain, not_a_digit), and the
fields of a prediction.  No PyTorch here: the onnxruntime road uses it too."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from digitrec.errors import DigitrecError
from digitrec.meta import ModelMeta

# A (calibrated) probability under this is flagged uncertain for models whose metadata has no threshold of its
# own; fitted thresholds never fall below it (reliability.UNCERTAIN_RANGE), though `--max-error` may ask for less.
UNCERTAIN_BELOW = 0.70
VERDICTS = ("digit", "uncertain", "not_a_digit", "no_ink", "error")
# The coverages prediction sets are given for (`--coverage`): under 90% a set says little, and past 99.9% the
# 5,000 validation digits no longer tell the quantile (reliability.conformal_p_true keeps what this range needs).
CONFORMAL_COVERAGE = (0.9, 0.999)
DEFAULT_COVERAGE = 0.99  # `--sets` without `--coverage`
NOT_CALIBRATED = ("this model's metadata has no {}: they are fitted on digits held out of training, by training "
                  "with a validation split (recipe field `validation`) or by `digitrec calibrate` on a model trained so")


@dataclass(frozen=True)
class Calibration:
    """How logits become probabilities and verdicts; stored in every model's metadata ("calibration").

    temperature: logits are divided by it before the softmax (fitted on the validation split: NLL).
    not_a_digit_below: a top probability under this means "not a digit" (chosen on the validation split so that
        almost no real digit falls under it; 0 = never).  Networks trained with outlier exposure give near-uniform
        probabilities to things that are not digits, so the top probability separates the two.
    uncertain_below: a top probability under this (and not under not_a_digit_below) is "uncertain".
    in_graph: the temperature is already applied inside an exported graph (its runtime must not apply it again).
    risk: the validation digits' answers as rows (threshold, kept, wrong) (reliability.risk_table), none under
        not_a_digit_below, for `--max-error`: the uncertain threshold that keeps at most that share wrong.
    conformal_p_true, conformal_n: the smallest probabilities of the true digit among the conformal_n validation
        digits, ascending (reliability.conformal_p_true), for `--sets`.
    set_at_least: not stored; set by `answering(coverage=...)`: records then carry a prediction set, the digits
        with at least this probability.
    """

    temperature: float = 1.0
    not_a_digit_below: float = 0.0
    uncertain_below: float = UNCERTAIN_BELOW
    in_graph: bool = False
    fitted_on: str | None = None
    risk: tuple[tuple[float, int, int], ...] = ()
    conformal_p_true: tuple[float, ...] = ()
    conformal_n: int = 0
    set_at_least: float | None = None

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> Calibration:
        c = meta.calibration or {}
        known = {k: c[k] for k in ("temperature", "not_a_digit_below", "uncertain_below", "in_graph", "fitted_on")
                 if k in c}
        try:
            risk = tuple((float(t), int(k), int(w)) for t, k, w in c.get("risk", ()))
            conformal = c.get("conformal") or {}
            p_true, n = tuple(float(p) for p in conformal.get("p_true", ())), int(conformal.get("n", 0))
        except (TypeError, ValueError, AttributeError):
            raise DigitrecError("model metadata has an invalid risk table or conformal scores", code="invalid_model")
        cal = cls(**known, risk=risk, conformal_p_true=p_true, conformal_n=n)
        if not (cal.temperature > 0 and 0 <= cal.not_a_digit_below <= cal.uncertain_below <= 1):
            raise DigitrecError(f"model metadata has an invalid calibration {known}", code="invalid_model")
        if not (list(p_true) == sorted(p_true) and all(0 <= p <= 1 for p in p_true) and n >= len(p_true)):
            raise DigitrecError("model metadata has invalid conformal scores (probabilities in [0, 1], ascending, "
                                "no more than the digits counted)", code="invalid_model")
        return cal

    def to_dict(self) -> dict:
        """The metadata's "calibration" object (what `answering` set for one request is not part of it)."""
        d = asdict(self)
        del d["set_at_least"], d["risk"], d["conformal_p_true"], d["conformal_n"]
        if self.risk:
            d["risk"] = [list(row) for row in self.risk]
        if self.conformal_p_true:
            d["conformal"] = {"score": "1 - p(true digit)", "n": self.conformal_n,
                              "p_true": list(self.conformal_p_true)}
        return d

    def threshold_for(self, max_error: float) -> float:
        """The lowest confidence threshold under which answers are flagged so that at most `max_error` of the
        validation digits answered are wrong (a threshold over 1, answering nothing, if none does).  The table has
        no row under not_a_digit_below: what is not a digit stays so."""
        if not 0 <= max_error < 1:
            raise DigitrecError(f"max_error must be in [0, 1), not {max_error}", param="max_error")
        if not self.risk:
            raise DigitrecError(NOT_CALIBRATED.format("risk table for max_error"), code="not_calibrated")
        for threshold, kept, wrong in self.risk:
            if kept and wrong <= max_error * kept:
                return threshold
        return math.nextafter(1.0, 2.0)

    def set_threshold(self, coverage: float) -> float:
        """Split conformal prediction (score 1 - p(true digit)): the probability a digit needs to be in the set so
        that sets hold the true digit for at least `coverage` of images like the validation digits.  With n
        scores that is 1 - their ceil((n + 1) coverage)-th smallest: the (n + 1 - ceil((n + 1) coverage))-th
        smallest probability of the true digit."""
        low, high = CONFORMAL_COVERAGE
        if not low <= coverage <= high:
            raise DigitrecError(f"coverage must be in [{low}, {high}], not {coverage}", param="coverage")
        if not self.conformal_p_true:
            raise DigitrecError(NOT_CALIBRATED.format("conformal scores for prediction sets"), code="not_calibrated")
        index = self.conformal_n - math.ceil((self.conformal_n + 1) * coverage)  # 0-based, ascending
        if index < 0:
            raise DigitrecError(f"coverage {coverage} needs more than the {self.conformal_n} digits this model was "
                                "calibrated on", param="coverage")
        if index >= len(self.conformal_p_true):
            raise DigitrecError(f"this model's metadata keeps too few conformal scores for coverage {coverage}",
                                code="not_calibrated")
        return self.conformal_p_true[index]

    def answering(self, max_error: float | None = None, coverage: float | None = None,
                  sets: bool = False) -> Calibration:
        """This calibration as one request asks to be answered: flagged below the threshold of `max_error`
        (None: the fitted uncertain_below), with prediction sets when `sets` is asked or a `coverage` is given
        (DEFAULT_COVERAGE when only `sets` is)."""
        cal = self
        if max_error is not None:
            cal = replace(cal, uncertain_below=max(self.threshold_for(max_error), self.not_a_digit_below))
        if sets or coverage is not None:
            cal = replace(cal, set_at_least=self.set_threshold(DEFAULT_COVERAGE if coverage is None else coverage))
        return cal

    def in_sets(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities ([10] or [N, 10]) -> bools of the same shape: each digit's place in its prediction set."""
        return np.asarray(probs) >= self.set_at_least - 1e-9  # (float32 probabilities against a float64 score)

    def prediction_set(self, probs: np.ndarray) -> tuple[int, ...] | None:
        """The digits with at least set_at_least probability, most probable first (None when no sets were asked).
        Empty when no digit is that likely: at 99% coverage, about 1% of MNIST's test digits."""
        if self.set_at_least is None:
            return None
        inside = self.in_sets(probs)
        return tuple(int(d) for d in np.argsort(-probs, kind="stable") if inside[d])

    def verdict(self, top_probability: float) -> str:
        if top_probability < self.not_a_digit_below:
            return "not_a_digit"
        if top_probability < self.uncertain_below:
            return "uncertain"
        return "digit"


def describe(probs: np.ndarray, calibration: Calibration, topk: int = 3) -> dict:
    """[10] probabilities -> the fields of a prediction record: digit (None when not a digit), confidence,
    topk, uncertain, verdict, set (None unless the calibration was asked for sets: Calibration.answering)."""
    order = np.argsort(-probs)[:topk]
    confidence = float(probs[order[0]])
    verdict = calibration.verdict(confidence)
    return {"digit": None if verdict == "not_a_digit" else int(order[0]), "confidence": confidence,
            "topk": [[int(d), float(probs[d])] for d in order], "uncertain": verdict != "digit",
            "verdict": verdict, "set": calibration.prediction_set(probs)}


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


# A number's confidence: the chance that all of it is read right.  The product of its digits' calibrated
# confidences misses what cutting touching digits and finding separators get wrong, so it is mapped through
# sigmoid(a * logit(product) + b + c * [a piece of it was cut or read whole by the sequence reader]), fitted on
# numbers drawn from the validation digits and read as `read` reads them, sequence reader included
# (`python -m benchmarks.read_calibration`, the shipped model).
NUMBER_CALIBRATION = (0.6411, 0.0357, -0.2596)


def number_confidence(digit_confidences: list[float], cut: bool,
                      fitted: tuple[float, float, float] = NUMBER_CALIBRATION) -> float:
    if not digit_confidences:
        return 0.0
    product = float(np.clip(np.prod(digit_confidences), 1e-6, 1 - 1e-9))
    a, b, c = fitted
    z = a * np.log(product / (1 - product)) + b + c * cut
    return float(1 / (1 + np.exp(-np.clip(z, -50, 50))))
