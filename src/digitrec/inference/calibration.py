"""Calibration applied: how a model's probabilities become verdicts (digit, uncertain, not_a_digit), and the
fields of a prediction.  No PyTorch here: the onnxruntime road uses it too."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from digitrec.errors import DigitrecError
from digitrec.meta import ModelMeta

# A (calibrated) probability under this is flagged uncertain for models whose metadata has no threshold of its
# own; fitted thresholds never fall below it (calibration.UNCERTAIN_RANGE).
UNCERTAIN_BELOW = 0.70
VERDICTS = ("digit", "uncertain", "not_a_digit", "no_ink", "error")


@dataclass(frozen=True)
class Calibration:
    """How logits become probabilities and verdicts; stored in every model's metadata ("calibration").

    temperature: logits are divided by it before the softmax (fitted on the validation split: NLL).
    not_a_digit_below: a top probability under this means "not a digit" (chosen on the validation split so that
        almost no real digit falls under it; 0 = never).  Networks trained with outlier exposure give near-uniform
        probabilities to things that are not digits, so the top probability separates the two.
    uncertain_below: a top probability under this (and not under not_a_digit_below) is "uncertain".
    in_graph: the temperature is already applied inside an exported graph (its runtime must not apply it again).
    """

    temperature: float = 1.0
    not_a_digit_below: float = 0.0
    uncertain_below: float = UNCERTAIN_BELOW
    in_graph: bool = False
    fitted_on: str | None = None

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> Calibration:
        c = meta.calibration or {}
        known = {k: c[k] for k in ("temperature", "not_a_digit_below", "uncertain_below", "in_graph", "fitted_on")
                 if k in c}
        cal = cls(**known)
        if not (cal.temperature > 0 and 0 <= cal.not_a_digit_below <= cal.uncertain_below <= 1):
            raise DigitrecError(f"model metadata has an invalid calibration {c}", code="invalid_model")
        return cal

    def to_dict(self) -> dict:
        return asdict(self)

    def verdict(self, top_probability: float) -> str:
        if top_probability < self.not_a_digit_below:
            return "not_a_digit"
        if top_probability < self.uncertain_below:
            return "uncertain"
        return "digit"


def describe(probs: np.ndarray, calibration: Calibration, topk: int = 3) -> dict:
    """[10] probabilities -> the fields of a prediction record: digit (None when not a digit), confidence,
    topk, uncertain, verdict."""
    order = np.argsort(-probs)[:topk]
    confidence = float(probs[order[0]])
    verdict = calibration.verdict(confidence)
    return {"digit": None if verdict == "not_a_digit" else int(order[0]), "confidence": confidence,
            "topk": [[int(d), float(probs[d])] for d in order], "uncertain": verdict != "digit",
            "verdict": verdict}


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


# A number's confidence: the chance that all of it is read right.  The product of its digits' calibrated
# confidences misses what cutting touching digits and finding separators get wrong, so it is mapped through
# sigmoid(a * logit(product) + b + c * [a piece of it was cut or read whole by the sequence reader]), fitted on
# numbers drawn from the validation digits and read as `read` reads them, sequence reader included
# (`python -m benchmarks.read_calibration`, the shipped model).
NUMBER_CALIBRATION = (0.6480, -1.5560, 1.7212)


def number_confidence(digit_confidences: list[float], cut: bool,
                      fitted: tuple[float, float, float] = NUMBER_CALIBRATION) -> float:
    if not digit_confidences:
        return 0.0
    product = float(np.clip(np.prod(digit_confidences), 1e-6, 1 - 1e-9))
    a, b, c = fitted
    z = a * np.log(product / (1 - product)) + b + c * cut
    return float(1 / (1 + np.exp(-np.clip(z, -50, 50))))
