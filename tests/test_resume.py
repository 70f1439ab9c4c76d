"""Resuming `fast` and `best` (one-cycle per batch, EMA of weights, augmentation, test-time shifts) ends with
the bits of an uninterrupted run.  Small versions of the recipes on the small split: 3 epochs, so the
one-cycle schedule, the EMA and the augmentation draws all change within the resumed epochs."""

import pytest
import torch

from digitrec.modelfile import last_checkpoint_dir
from digitrec.training.checkpoint import load_checkpoint
from digitrec.training.recipes import RECIPES
from digitrec.training.train import train

quiet = lambda line: None

SMALL = {
    # fast: Adam one-cycle stepping every batch, label smoothing, 70% of each epoch's permutation.
    "fast": RECIPES["fast"].with_overrides(epochs=3, batch_size=64, validation=200),
    # best: wide network, SGD one-cycle, augmentation, EMA, test-time shifts; a quarter of each epoch.
    "best": RECIPES["best"].with_overrides(epochs=3, batch_size=64, validation=200, train_fraction=0.25),
}


class Interrupted(Exception):
    pass


def _stop_after_epoch_1(line):
    if line.startswith("Epoch [1/3]"):
        raise Interrupted


def _assert_same_tensors(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def _without_timing(history):
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")} for row in history]


@pytest.mark.mnist
@pytest.mark.parametrize("name", ["fast", pytest.param("best", marks=pytest.mark.slow)])
def test_resumed_recipe_ends_with_the_weights_and_ema_of_an_uninterrupted_run(name, small_data, tmp_path):
    recipe = SMALL[name]
    reference = train(recipe, data_dir=small_data, out=tmp_path / "ref", seed=4, device="cpu", log=quiet)
    with pytest.raises(Interrupted):
        train(recipe, data_dir=small_data, out=tmp_path / "cut", seed=4, device="cpu", log=_stop_after_epoch_1)
    assert last_checkpoint_dir(tmp_path / "cut").name == "epoch-001"
    _, _, state = load_checkpoint(last_checkpoint_dir(tmp_path / "cut"))
    assert ("ema" in state) == (recipe.ema_decay > 0)

    lines = []
    resumed = train(None, data_dir=small_data, out=tmp_path / "cut", resume=True, device="cpu",
                    log=lines.append)
    assert lines[0].startswith("resuming") and lines[1].startswith("Epoch [2/3]")

    # The learning rate moved within the resumed epochs: a schedule restarted from step 0 would differ.
    lrs = [row["lr"] for row in reference.history]
    assert len(set(lrs)) == 3, lrs
    # The saved model: the EMA (buffers and its count of averaged steps included) for best, the net for fast.
    _assert_same_tensors(reference.model.state_dict(), resumed.model.state_dict(), "final model")
    _assert_same_tensors(dict(reference.model.named_parameters()), dict(resumed.model.named_parameters()), "params")
    assert _without_timing(reference.history) == _without_timing(resumed.history)
    assert reference.test_accuracy == resumed.test_accuracy

    # The training state at the end (the raw weights and the EMA's own state, optimizer moments) too.
    _, _, ref_state = load_checkpoint(last_checkpoint_dir(tmp_path / "ref"))
    _, _, cut_state = load_checkpoint(last_checkpoint_dir(tmp_path / "cut"))
    ref_weights, _, _ = load_checkpoint(last_checkpoint_dir(tmp_path / "ref"))
    cut_weights, _, _ = load_checkpoint(last_checkpoint_dir(tmp_path / "cut"))
    _assert_same_tensors(ref_weights, cut_weights, "raw weights")
    if recipe.ema_decay > 0:
        _assert_same_tensors(ref_state["ema"], cut_state["ema"], "EMA state")
        assert int(ref_state["ema"]["n_averaged"]) > 0
    assert ref_state["scheduler"] == cut_state["scheduler"]
    for ref_moment, cut_moment in zip(ref_state["optimizer"]["state"].values(),
                                      cut_state["optimizer"]["state"].values()):
        _assert_same_tensors(ref_moment, cut_moment, "optimizer state")
