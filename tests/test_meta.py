"""Model metadata (digitrec.meta.ModelMeta): it reads and writes the JSON model files carry, key for key, keeps
keys it does not know, and refuses a malformed header in one line."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from digitrec.errors import DigitrecError
from digitrec.inference.predict import default_model_path
from digitrec.meta import META_KEY, ModelMeta
from digitrec.modelfile import load_model, read_meta, save_model
from digitrec.models import FastCNN

# A model file's metadata as train.py wrote it before ModelMeta (a checkpoint: no test run, no calibration yet).
OLD_STYLE = {"format": 1, "architecture": "fast", "recipe": {"name": "fast", "tta": False, "validation": 5000},
             "dataset": "mnist", "classes": [str(d) for d in range(10)], "epoch": 1, "test_accuracy": None,
             "seed": 0, "precision": "fp32", "data_sha256": {"t10k-images-idx3-ubyte": "ab" * 32},
             "digitrec_version": "0.1.0"}


def header_of(path) -> str:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()[META_KEY]


def write_raw(path, header: str):
    """A model file whose metadata JSON is exactly `header`, written without digitrec's own code."""
    save_file({k: v.contiguous() for k, v in FastCNN().state_dict().items()}, str(path), metadata={META_KEY: header})
    return path


def test_the_shipped_models_metadata_round_trips_to_the_same_json():
    path = default_model_path()
    meta = read_meta(path)
    assert meta.to_dict() == json.loads(header_of(path))
    assert meta.to_json() == header_of(path)  # byte for byte: the same keys in the same order
    assert meta.to_json(indent=2) + "\n" == path.with_suffix(".json").read_text()
    assert meta.extra == {} and meta.architecture == "wide-k5" and meta.uses_tta is False


def test_an_old_style_model_file_loads_and_reads_the_same(tmp_path):
    path = write_raw(tmp_path / "old.safetensors", json.dumps(OLD_STYLE))
    model, meta = load_model(path)
    assert isinstance(model, FastCNN) and meta.epoch == 1 and meta.test_accuracy is None
    assert meta.to_json() == json.dumps(OLD_STYLE)  # test_accuracy's null is kept: writers always wrote it
    save_model(tmp_path / "again.safetensors", model, meta)
    assert header_of(tmp_path / "again.safetensors") == json.dumps(OLD_STYLE)


def test_unknown_keys_from_a_newer_version_are_kept_and_written_back(tmp_path):
    newer = {**OLD_STYLE, "format": 2, "drift": {"psi": 0.1}, "extra": [1, 2]}
    model, meta = load_model(write_raw(tmp_path / "new.safetensors", json.dumps(newer)))
    assert meta.format == 2 and meta.extra == {"drift": {"psi": 0.1}, "extra": [1, 2]}
    save_model(tmp_path / "again.safetensors", model, meta)
    assert json.loads(header_of(tmp_path / "again.safetensors")) == newer


def test_none_is_left_out_of_the_json_and_a_copy_cannot_change_the_metadata():
    meta = ModelMeta(architecture="seed", recipe={"tta": True})
    assert meta.to_dict() == {"format": 1, "architecture": "seed", "recipe": {"tta": True}, "dataset": "mnist",
                              "test_accuracy": None}
    meta.to_dict()["recipe"]["tta"] = False
    assert meta.uses_tta


@pytest.mark.parametrize("header, problem", [
    ({**OLD_STYLE, "epoch": "3"}, "'epoch' must be an integer or null, not a string"),
    ({**OLD_STYLE, "calibration": [0.5]}, "'calibration' must be an object or null, not an array"),
    ({**OLD_STYLE, "test_accuracy": True}, "'test_accuracy' must be a number or null, not true or false"),
    ({**OLD_STYLE, "dataset": None}, "'dataset' must be a string, not null"),
    (["fast"], "must be a JSON object, not an array"),
])
def test_a_malformed_header_is_one_invalid_model_error(tmp_path, header, problem):
    path = write_raw(tmp_path / "bad.safetensors", json.dumps(header))
    with pytest.raises(DigitrecError, match=problem) as caught:
        read_meta(path)
    assert caught.value.code == "invalid_model" and str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_a_header_that_is_not_json_is_an_invalid_model(tmp_path):
    with pytest.raises(DigitrecError, match="not valid JSON") as caught:
        read_meta(write_raw(tmp_path / "bad.safetensors", "{'architecture': 'fast'"))
    assert caught.value.code == "invalid_model"


def test_an_ensembles_metadata_reads_back_equal(tmp_path):
    """An ensemble file as ensemble.py wrote it before ModelMeta (its own key order)."""
    ensemble = {"format": 1, "architecture": "ensemble", "members": ["fast", "fast"],
                "member_files": ["model.safetensors", "model.safetensors"], "member_test_accuracy": [98.9, None],
                "recipe": {"tta": False}, "dataset": "mnist", "classes": OLD_STYLE["classes"],
                "data_sha256": OLD_STYLE["data_sha256"], "test_accuracy": None,
                "calibration": {"temperature": 1.2, "not_a_digit_below": 0.0, "uncertain_below": 0.7,
                                "in_graph": False, "fitted_on": "200 held-out training digits"},
                "calibration_validation": {"ece": 0.01}}
    from digitrec.models import Ensemble

    members = Ensemble([FastCNN(), FastCNN()])
    save_file({k: v.contiguous() for k, v in members.state_dict().items()}, str(tmp_path / "e.safetensors"),
              metadata={META_KEY: json.dumps(ensemble)})
    model, meta = load_model(tmp_path / "e.safetensors")
    assert isinstance(model, Ensemble) and meta.to_dict() == ensemble
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
