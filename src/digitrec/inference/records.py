"""The answers digitrec gives, as typed records built in one place (here) and serialised by whoever shows
them: the CLI's table, JSON and CSV (`format_records`), the server's JSON bodies (`to_dict`).

    Prediction   one digit per image (`predict`, /v1/predict)
    Reading      the numbers of an image (`read`, /v1/read): lines -> numbers -> digits, and separators in text

A record's `to_dict()` is the JSON the CLI and the server give, key for key.  Errors keep their code
(`error_code`); whoever turns a record into a status or a verdict reads the code, never the message.
No PyTorch here.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import numpy as np

from digitrec.errors import DigitrecError
from digitrec.inference.calibration import Calibration, describe

NO_INK = "no ink found: the image is blank or uniform"


@dataclass(frozen=True)
class Prediction:
    path: str
    digit: int | None = None
    confidence: float = 0.0
    topk: tuple[tuple[int, float], ...] = ()
    uncertain: bool = True
    verdict: str = "error"  # digit, uncertain, not_a_digit, no_ink, error (inference.calibration.VERDICTS)
    error: str | None = None
    error_code: str | None = None
    image: bytes | None = None  # the 28x28 the model saw, as PNG (asked for by the server's include_image)
    # The prediction set (asked for with --sets: Calibration.answering): the digits that hold the true one with
    # the coverage asked, most probable first; None when not asked, and then left out of the JSON.
    set: tuple[int, ...] | None = None

    @classmethod
    def of(cls, path: str, probs: np.ndarray, calibration: Calibration, topk: int = 3,
           image: bytes | None = None) -> Prediction:
        found = describe(probs, calibration, topk)
        return cls(path, found["digit"], found["confidence"], tuple(tuple(t) for t in found["topk"]),
                   found["uncertain"], found["verdict"], image=image, set=found["set"])

    @classmethod
    def failed(cls, path: str, error: DigitrecError) -> Prediction:
        """The record of an image with no prediction: an error (with its code), or no ink."""
        return cls(path, verdict="no_ink" if error.code == "no_ink" else "error", error=str(error),
                   error_code=error.code)

    def to_dict(self) -> dict:
        d = {"path": self.path, "digit": self.digit, "confidence": self.confidence,
             "topk": [list(t) for t in self.topk], "uncertain": self.uncertain, "verdict": self.verdict,
             "error": self.error, "error_code": self.error_code}
        if self.set is not None:
            d["set"] = list(self.set)
        if self.image is not None:
            d["image"] = self.image
        return d


@dataclass(frozen=True)
class DigitReading:
    digit: int | None  # None: a mark that is not a digit ("?" in the text)
    confidence: float
    verdict: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's pixels
    set: tuple[int, ...] | None = None  # as Prediction.set; the sequence reader's digits have none

    def to_dict(self) -> dict:
        d = {"digit": self.digit, "confidence": self.confidence, "verdict": self.verdict, "box": list(self.box)}
        if self.set is not None:
            d["set"] = list(self.set)
        return d


def number_verdict(digits: list[DigitReading]) -> str:
    """read: every digit read with confidence; not_a_number: no mark read as a digit; else uncertain."""
    if digits and all(d.verdict == "digit" for d in digits):
        return "read"
    if all(d.digit is None for d in digits):
        return "not_a_number"
    return "uncertain"


@dataclass(frozen=True)
class NumberReading:
    text: str  # digits, separators, "?" for a mark that is not a digit
    box: tuple[int, int, int, int]
    digits: tuple[DigitReading, ...]
    confidence: float  # the chance that the whole number is read right (calibration.number_confidence)
    cut: bool = False  # a piece of its ink was cut into several digits (touching digits): what its confidence weighs

    @property
    def verdict(self) -> str:
        return number_verdict(list(self.digits))

    def to_dict(self) -> dict:
        return {"text": self.text, "box": list(self.box), "confidence": self.confidence, "verdict": self.verdict,
                "digits": [d.to_dict() for d in self.digits]}


@dataclass(frozen=True)
class LineReading:
    numbers: tuple[NumberReading, ...]
    box: tuple[int, int, int, int]

    @property
    def text(self) -> str:
        return "  ".join(n.text for n in self.numbers)

    @property
    def confidence(self) -> float:
        return float(np.prod([n.confidence for n in self.numbers])) if self.numbers else 0.0

    def to_dict(self) -> dict:
        return {"text": self.text, "box": list(self.box), "confidence": self.confidence,
                "numbers": [n.to_dict() for n in self.numbers]}


@dataclass(frozen=True)
class Reading:
    path: str
    lines: tuple[LineReading, ...] = ()
    error: str | None = None
    error_code: str | None = None

    @classmethod
    def failed(cls, path: str, error: DigitrecError) -> Reading:
        return cls(path, error=str(error), error_code=error.code)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def digits(self) -> list[DigitReading]:
        """Every digit of the image in reading order (lines top to bottom, numbers and digits left to right)."""
        return [d for line in self.lines for n in line.numbers for d in n.digits]

    def to_dict(self) -> dict:
        return {"path": self.path, "text": self.text, "digits": [d.to_dict() for d in self.digits],
                "lines": [line.to_dict() for line in self.lines], "error": self.error, "error_code": self.error_code}


Record = Prediction | Reading


def as_dicts(records: list[Record]) -> list[dict]:
    """Records as the JSON objects the CLI and the server give."""
    return [r.to_dict() for r in records]


def failed_record(kind: str, path: str, error: DigitrecError) -> Record:
    return Prediction.failed(path, error) if kind == "predict" else Reading.failed(path, error)


# ---------------------------------------------------------------------------------------------------
# Output formats of the CLI.

COLUMNS = {"predict": ["path", "digit", "verdict", "confidence", "topk", "uncertain", "error"],
           "read": ["path", "text", "digits", "error"]}


def format_records(records: list[Record], fmt: str, kind: str) -> str:
    """Records as the CLI prints them: json, csv (COLUMNS) or a table for people."""
    dicts = [r.to_dict() for r in records]
    if fmt == "json":
        return json.dumps(dicts, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        columns = COLUMNS[kind] + (["set"] if any("set" in r for r in dicts) else [])  # (asked for: --sets)
        writer.writerow(columns)
        for r in dicts:
            writer.writerow([json.dumps(r.get(c)) if isinstance(r.get(c), list) else
                             ("" if r.get(c) is None else r.get(c)) for c in columns])
        return buffer.getvalue().rstrip("\n")
    return "\n".join(_table_line(r, kind) for r in dicts)


def _table_line(r: dict, kind: str) -> str:
    if r.get("error"):
        return f"{r['path']}: error: {r['error']}"
    if kind == "predict":
        top = "  ".join(f"{d}:{p:.3f}" for d, p in r["topk"])
        said = {"digit": "", "uncertain": "  (uncertain)", "not_a_digit": "  (not a digit)"}[r["verdict"]]
        kept = "" if "set" not in r else "  set: " + (" or ".join(map(str, r["set"])) or "none")
        return f"{r['path']}: {'-' if r['digit'] is None else r['digit']}  confidence {r['confidence']:.3f}  " \
               f"top: {top}{said}{kept}"
    confidences = " ".join(f"{d['confidence']:.2f}" for d in r["digits"])
    text = r["text"].replace("\n", " | ")  # one line per image in the table
    return f"{r['path']}: {text}  (confidences {confidences})"

