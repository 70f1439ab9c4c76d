"""A model's metadata: what it is (architecture, recipe, data), how well it did, and how it is calibrated.

`ModelMeta` names every key in one place.  It travels as JSON under META_KEY: in the safetensors header of a
model file (checkpoint.py, with a `.json` copy beside it), in the metadata_props of an exported ONNX file and
in the extra files of a .pt2 (export.py).  `to_dict` writes the JSON earlier versions wrote, so a model file
reads back the same; keys a newer version added are kept in `extra` and written back, not dropped.

This module imports neither torch nor numpy: the onnxruntime road (inference.OnnxBackend) reads metadata too,
without PyTorch.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import cache

from digitrec.errors import DigitrecError

META_KEY = "digitrec"  # the key the metadata's JSON is stored under, in every file format
FORMAT = 1


@dataclass(frozen=True)
class ModelMeta:
    """None means "not recorded": such a key is left out of the JSON, except test_accuracy, which every
    writer has always written (null: not measured).  The fields' order is the JSON's key order.  Frozen: make
    a changed copy with dataclasses.replace (the dicts inside are plain JSON values, not to be changed)."""

    format: int = FORMAT
    architecture: str | None = None  # a models.MODELS name, or "ensemble"
    # An ensemble's members: their architectures, file names (no folders) and test accuracies.
    members: list[str] | None = None
    member_files: list[str] | None = None
    member_test_accuracy: list[float | None] | None = None
    recipe: dict | None = None  # recipes.Recipe.to_dict() of the run; an ensemble's has only "tta"
    dataset: str = "mnist"  # a data.DATASETS name; every writer records it, "mnist" is what readers assumed
    classes: list[str] | None = None
    epoch: int | None = None  # epochs trained
    test_accuracy: float | None = None  # percent, as the model predicts (test-time shifts, calibration)
    seed: int | None = None
    precision: str | None = None  # what training ran in: fp32 or bf16
    data_sha256: dict | None = None  # data file name -> SHA-256
    # A distilled model's teacher (distill.py): {"file": its file name (no folders), "sha256": of that file}.
    teacher: dict | None = None
    # A fine-tuned model's starting weights (train(init=...)): {"file": its file name, "sha256": of that file}.
    init: dict | None = None
    # An int8 export's float source (export.quantize_int8): {"file": its file name, "sha256": of that file}.
    quantized_from: dict | None = None
    digitrec_version: str | None = None
    calibration: dict | None = None  # inference.Calibration.to_dict(); read it with Calibration.from_meta
    calibration_validation: dict | None = None  # what the calibration achieved on the validation data
    name: str | None = None  # the name the server shows (default: the model file's stem)
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept to be written back

    @property
    def uses_tta(self) -> bool:
        """Whether the model predicts with test-time shifts (its recipe's tta)."""
        return bool((self.recipe or {}).get("tta"))

    def to_dict(self) -> dict:
        """The JSON object (a deep copy: changing it leaves this metadata alone)."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**{k: v for k, v in d.items() if v is not None or k == "test_accuracy"}, **extra}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        """Metadata as stored.  A known key with a value of the wrong JSON type is refused in one line
        (code invalid_model); an unknown key goes to `extra`."""
        if not isinstance(d, dict):
            raise DigitrecError(f"model metadata must be a JSON object, not {_json_type(d)}", code="invalid_model")
        accepted = _accepted_types()
        for key, value in d.items():
            if key in accepted and not _has_type(value, accepted[key]):
                expected = " or ".join(dict.fromkeys(_json_type(t) for t in accepted[key]))
                raise DigitrecError(f"model metadata {key!r} must be {expected}, not {_json_type(value)}",
                                    code="invalid_model")
        return cls(**{k: v for k, v in d.items() if k in accepted},
                   extra={k: v for k, v in d.items() if k not in accepted})

    @classmethod
    def from_json(cls, text: str, source: str | os.PathLike) -> ModelMeta:
        """Metadata as a file stores it; `source` (the file) begins the message of its error."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError:
            problem = "model metadata is not valid JSON"
        except DigitrecError as e:
            problem = str(e)
        raise DigitrecError(f"{source}: {problem}", code="invalid_model")


@cache
def _accepted_types() -> dict[str, tuple[type, ...]]:
    """field -> the Python types its annotation allows at the top level (`list[str] | None` -> list,
    NoneType), read from the dataclass so that a new field needs no second list here."""
    hints = typing.get_type_hints(ModelMeta)  # `from __future__ import annotations` leaves them as strings
    accepted = {}
    for f in fields(ModelMeta):
        if f.name == "extra":
            continue
        hint = hints[f.name]
        arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        accepted[f.name] = tuple(typing.get_origin(arm) or arm for arm in arms)
    return accepted


def _has_type(value, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true/false is no number, though Python's bool is an int
        return bool in accepted
    if isinstance(value, int) and float in accepted:  # JSON does not tell 99 from 99.0
        return True
    return isinstance(value, accepted)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false", int: "an integer",
               float: "a number", type(None): "null"}


def _json_type(value_or_type) -> str:
    """The JSON name of a Python type, or of a value's type."""
    t = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return _JSON_TYPES.get(t, t.__name__)
