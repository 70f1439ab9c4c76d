"""--precision: auto's choice follows the hardware, and both fp32 and bf16 train and evaluate."""

import json

import pytest
import torch

from digitrec.errors import DigitrecError
from digitrec.inference.backends import bf16_in_hardware, inference_precision, resolve_precision
from digitrec.training.recipes import RECIPES
from digitrec.training.train import train

CPU = torch.device("cpu")


def test_auto_picks_bf16_exactly_where_the_hardware_has_it(monkeypatch):
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) == ("bf16" if bf16_in_hardware(CPU) else "fp32")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    with pytest.raises(DigitrecError, match="no bf16 in hardware"):
        resolve_precision("bf16", CPU)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    with pytest.raises(DigitrecError, match="unknown precision"):
        resolve_precision("fp16", CPU)


def test_the_seed_recipe_stays_fp32_under_auto():
    assert RECIPES["seed"].precision == "fp32" and RECIPES["best"].precision == "auto"


@pytest.mark.mnist
def test_precision_auto_as_an_override_keeps_the_recipes_own(small_data, tmp_path, monkeypatch):
    """`digitrec train --recipe seed --precision auto` is the seed recipe as it is: fp32, also where the hardware
    has bf16 (the CLI passes precision="auto"); only fp32 or bf16 override the recipe's precision."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    seed = RECIPES["seed"].with_overrides(epochs=1, train_fraction=0.25)
    result = train(seed, data_dir=small_data, out=tmp_path / "run", device="cpu", precision="auto",
                   log=lambda line: None)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert result.meta.precision == config["precision"] == "fp32"
    assert config["recipe"]["precision"] == "fp32"


def test_with_precision_overrides_the_recipe_only_with_fp32_or_bf16():
    from digitrec.training.train import with_precision

    seed, best = RECIPES["seed"], RECIPES["best"]
    assert with_precision(seed, "auto") is seed and with_precision(seed, None) is seed
    assert with_precision(best, "auto").precision == "auto"
    assert with_precision(seed, "bf16").precision == "bf16" and with_precision(best, "fp32").precision == "fp32"
    with pytest.raises(DigitrecError):
        with_precision(seed, "fp16")


@pytest.mark.mnist
@pytest.mark.skipif(not bf16_in_hardware(CPU), reason="this CPU has no bf16 in hardware")
def test_fp32_and_bf16_both_train_and_evaluate(small_data, tmp_path):
    recipe = RECIPES["fast"].with_overrides(validation=200, train_fraction=1.0, epochs=2)
    results = {}
    for precision in ("fp32", "bf16"):
        results[precision] = train(recipe, data_dir=small_data, out=tmp_path / precision, device="cpu",
                                   precision=precision, log=lambda line: None)
        assert results[precision].meta.precision == precision
        assert f'"precision": "{precision}"' in (tmp_path / precision / "config.json").read_text()
    # Same seed, same data: the two runs differ only by rounding, so they learn about as well.
    assert results["fp32"].test_accuracy > 85 and abs(results["fp32"].test_accuracy - results["bf16"].test_accuracy) < 4
    assert not torch.equal(results["fp32"].model.out.weight, results["bf16"].model.out.weight)


def test_a_model_predicts_in_bf16_under_auto_only_if_it_was_trained_in_bf16_and_the_hardware_has_it(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert inference_precision("auto", CPU, "bf16") == "bf16"
    assert inference_precision("auto", CPU, "fp32") == "fp32"  # a seed model's math stays exact
    assert inference_precision("auto", CPU, None) == "fp32"  # (models from before precision was recorded)
    assert inference_precision("fp32", CPU, "bf16") == "fp32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert inference_precision("auto", CPU, "bf16") == "fp32"
    with pytest.raises(DigitrecError, match="no bf16 in hardware"):
        inference_precision("bf16", CPU, "bf16")


@pytest.mark.mnist
@pytest.mark.skipif(not bf16_in_hardware(CPU), reason="this CPU has no bf16 in hardware")
def test_the_shipped_model_predicts_the_same_digits_and_verdicts_in_bf16(mnist_dir):
    """What `predict --precision auto` does on this CPU, checked against fp32 on 2,000 MNIST test digits."""
    import numpy as np

    from digitrec.data.datasets import load_split, to_float
    from digitrec.inference.predict import Predictor

    test = load_split("mnist", mnist_dir, train=False)
    digits = list(to_float(test.images[:2000]).numpy()[:, 0])  # [28, 28] each
    fp32, bf16 = Predictor(precision="fp32"), Predictor(precision="auto")
    assert (fp32.runner.precision, bf16.runner.precision) == ("fp32", "bf16")
    p32, p16 = fp32.probabilities(digits), bf16.probabilities(digits)
    assert p16.dtype == np.float32 and np.abs(p32 - p16).max() < 0.05
    assert (p32.argmax(1) == p16.argmax(1)).mean() >= 0.999
    verdicts = [(fp32.describe(a)["verdict"], bf16.describe(b)["verdict"]) for a, b in zip(p32, p16)]
    assert sum(a != b for a, b in verdicts) <= 2
    assert (p16.argmax(1) == test.labels[:2000].numpy()).mean() >= 0.99


def test_an_onnx_model_refuses_bf16(tmp_path):
    from digitrec.inference.backends import load_backend

    with pytest.raises(DigitrecError, match="runs PyTorch models"):
        load_backend(tmp_path / "model.onnx", None, "cpu", "bf16")
