import os
import pickle

import pytest
import torch

from digitrec.errors import DigitrecError
from digitrec.meta import ModelMeta
from digitrec.modelfile import last_checkpoint_dir, load_model, read_meta, save_model
from digitrec.models import FastCNN, SeedCNN
from digitrec.training.checkpoint import load_checkpoint, save_checkpoint


class Payload:
    """Unpickling this creates a file: proof that the loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_model_round_trip_keeps_weights_and_metadata(tmp_path):
    model = SeedCNN()
    model.conv3[1].running_var.fill_(2.5)  # buffers travel too
    meta = ModelMeta(architecture="seed", epoch=3, test_accuracy=99.1)
    save_model(tmp_path / "m.safetensors", model, meta)
    loaded, loaded_meta = load_model(tmp_path / "m.safetensors")
    assert loaded_meta == meta == read_meta(tmp_path / "m.safetensors")
    assert (tmp_path / "m.json").is_file()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert not loaded.training


def test_a_pickle_planted_as_a_model_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.safetensors", "wb") as f:
        pickle.dump(Payload(marker), f)
    with pytest.raises(DigitrecError, match="not a digitrec model"):
        load_model(tmp_path / "evil.safetensors")
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's remark on the planted pickle
def test_a_pickle_planted_as_training_state_is_refused_and_never_run(tmp_path):
    checkpoint = save_checkpoint(tmp_path, 1, SeedCNN(), ModelMeta(architecture="seed"), {"epoch": 1})
    marker = tmp_path / "pwned"
    with open(checkpoint / "state.pt", "wb") as f:
        pickle.dump(Payload(marker), f)
    with pytest.raises(DigitrecError, match="not a loadable training state"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_architecture_mismatch_is_one_clear_error(tmp_path):
    save_model(tmp_path / "m.safetensors", FastCNN(), ModelMeta(architecture="seed"))
    with pytest.raises(DigitrecError, match="do not match architecture 'seed'"):
        load_model(tmp_path / "m.safetensors")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(DigitrecError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(DigitrecError, match="not a digitrec model"):
        load_model(tmp_path / "text.safetensors")
    with pytest.raises(DigitrecError, match="no model.safetensors and no checkpoint"):
        load_model(tmp_path)


def test_checkpoints_replace_each_other_and_keep_state(tmp_path):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, SeedCNN(), ModelMeta(architecture="seed", epoch=epoch),
                        {"epoch": epoch, "history": [{"loss": 0.5}]})
    last = last_checkpoint_dir(tmp_path)
    assert last.name == "epoch-002" and [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-002"]
    weights, meta, state = load_checkpoint(last)
    assert meta.epoch == 2 and state == {"epoch": 2, "history": [{"loss": 0.5}]}
    assert load_model(tmp_path)[1].epoch == 2  # a run folder without a final model: its last checkpoint
