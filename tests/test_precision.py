"""--precision: auto's choice follows the hardware, and both fp32 and bf16 train and evaluate."""

import pytest
import torch

from digitrec.errors import DigitrecError
from digitrec.inference import bf16_in_hardware, resolve_precision
from digitrec.recipes import RECIPES
from digitrec.train import train

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
