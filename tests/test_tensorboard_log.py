import json

import pytest

from digitrec.cli import main

pytest.importorskip("tensorboard", reason="the learn extra: pip install 'digitrec[learn]'")


@pytest.mark.mnist
@pytest.mark.slow
def test_train_tensorboard_writes_scalars_filters_and_hparams_into_the_run_folder(small_data, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(small_data), "--out", str(out), "--device", "cpu", "--progress", "lines",
                 "--epochs", "2", "--set", "validation=500", "--tensorboard"]) == 0
    assert list(out.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/validation"),
                     ("val_accuracy", "accuracy/validation"), ("test_accuracy", "accuracy/test"), ("lr", "lr"),
                     ("images_per_second", "images_per_second")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2], tag
        assert [e.value for e in logged] == pytest.approx([r[key] for r in rows], rel=1e-5), tag
    filters = events.Images("conv1_filters")
    assert [e.step for e in filters] == [1, 2] and filters[0].width > 16 * 5  # 16 enlarged 5x5 filters
    assert events.Scalars("hparam/test_accuracy")[0].value == pytest.approx(rows[-1]["test_accuracy"], rel=1e-5)
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams and "_hparams_/experiment" in hparams
    assert b"step_size" in hparams["_hparams_/session_start_info"]  # the recipe's fields are the hparams
