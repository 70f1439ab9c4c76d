"""Calibration: the temperature fit, ECE/NLL/Brier, the not-a-digit threshold, and that every road from a model
to a probability (evaluate, predict, export) applies the same temperature."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import run_cli

from digitrec.inference.backends import predictive_model
from digitrec.inference.calibration import Calibration, describe
from digitrec.inference.reliability import (
    brier,
    expected_calibration_error,
    fit_temperature,
    nll,
    not_a_digit_threshold,
    reliability,
    uncertain_threshold,
)
from digitrec.meta import ModelMeta
from digitrec.modelfile import load_model, read_meta, save_model
from digitrec.models import FastCNN
from digitrec.training.calibrate import recalibrate


def _calibrated_sample(n=20_000, seed=0):
    """Logits whose softmax is calibrated by construction (labels drawn from it), then scaled by 1/T_true."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 3
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def test_temperature_fit_recovers_a_known_distortion():
    logits, labels = _calibrated_sample()
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)
    assert fit_temperature(logits * 2.5, labels) == pytest.approx(2.5, rel=0.05)  # over-confident: T > 1
    assert fit_temperature(logits * 0.4, labels) == pytest.approx(0.4, rel=0.05)  # under-confident: T < 1


def test_ece_is_near_zero_when_calibrated_and_large_when_not():
    logits, labels = _calibrated_sample()
    assert expected_calibration_error(logits.softmax(1), labels) < 0.015
    assert expected_calibration_error((logits * 3).softmax(1), labels) > 0.1
    assert nll(logits.softmax(1), labels) < nll((logits * 3).softmax(1), labels)


def test_ece_brier_and_bins_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])
    bins = reliability(probs, labels, bins=5)
    # confidences 0.9, 0.6, 0.8, 0.7 fall into bins 4, 3, 4, 3 (width 0.2)
    assert [b["count"] for b in bins] == [0, 0, 0, 2, 2]
    assert bins[3]["accuracy"] == pytest.approx(0.5) and bins[4]["accuracy"] == pytest.approx(1.0)
    # ECE = 2/4 * |0.5 - 0.65| + 2/4 * |1.0 - 0.85|
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(0.15)
    assert brier(probs, labels) == pytest.approx((0.02 + 0.72 + 0.08 + 0.18) / 4)


def test_not_a_digit_threshold_rejects_at_most_the_allowed_share_of_digits():
    top = torch.linspace(0.2, 1.0, 1000)
    t = not_a_digit_threshold(top)
    assert (top < t).double().mean() <= 0.002 + 1e-9 and t > 0.2
    assert not_a_digit_threshold(torch.full((100,), 0.9)) == 0.5  # never above MAX_NOT_A_DIGIT


def test_uncertain_threshold_flags_at_most_its_share_of_digits_within_its_range():
    top = torch.linspace(0.9, 1.0, 1001)
    t = uncertain_threshold(top)
    assert (top < t).double().mean() <= 0.006 + 1e-9 < (top <= t).double().mean()  # the largest such threshold
    assert uncertain_threshold(torch.ones(500)) == 0.99  # sure of every validation digit: still flag under 99%
    assert uncertain_threshold(torch.full((500,), 0.3)) == 0.70  # unsure of them all: never confident under 70%


def test_verdicts_follow_the_thresholds():
    cal = Calibration(temperature=1.0, not_a_digit_below=0.4, uncertain_below=0.7)
    probs = np.full(10, 0.0)
    for top, verdict in [(0.95, "digit"), (0.69, "uncertain"), (0.39, "not_a_digit")]:
        probs[:] = (1 - top) / 9
        probs[3] = top
        record = describe(probs, cal)
        assert record["verdict"] == verdict and record["uncertain"] == (verdict != "digit")
        assert record["digit"] == (None if verdict == "not_a_digit" else 3)
    with pytest.raises(Exception, match="invalid calibration"):
        Calibration.from_meta(ModelMeta(calibration={"temperature": -1}))


def test_the_temperature_in_the_metadata_reaches_the_probabilities(tmp_path):
    torch.manual_seed(0)
    net = FastCNN().eval()
    x = torch.rand(5, 1, 28, 28)
    meta = ModelMeta(architecture="fast", recipe={"tta": False}, calibration={"temperature": 2.0})
    path = save_model(tmp_path / "m.safetensors", net, meta)
    loaded, meta = load_model(path)
    assert read_meta(path).calibration["temperature"] == 2.0
    with torch.no_grad():
        assert torch.allclose(predictive_model(loaded, meta)(x), net(x) / 2.0, atol=1e-6)
        tta = predictive_model(loaded, replace(meta, recipe={"tta": True}))(x)
        shifted = [net(torch.roll(torch.nn.functional.pad(x, (1, 1, 1, 1)), (dy, dx), (2, 3))[..., 1:29, 1:29])
                   for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
        assert torch.allclose(tta, torch.stack(shifted).mean(0) / 2.0, atol=1e-5)
    assert json.loads((tmp_path / "m.json").read_text())["calibration"]["temperature"] == 2.0


def test_exported_graphs_carry_the_shifts_and_the_temperature(tmp_path, tta=True):
    """The ONNX and pt2 files compute predictive_model's output (temperature 2.5, with and without shifts),
    checked here with the test's own onnxruntime session and torch.export.load on batches of 1, 7 and 64."""
    import onnxruntime as ort

    from digitrec.inference.backends import OnnxBackend
    from digitrec.inference.export import export

    torch.manual_seed(1)
    net = FastCNN().eval()
    meta = ModelMeta(architecture="fast", recipe={"tta": tta},
                     calibration={"temperature": 2.5, "not_a_digit_below": 0.3})
    path = save_model(tmp_path / "m.safetensors", net, meta)
    reference = predictive_model(*load_model(path))
    onnx_file = export(path, "onnx", tmp_path / "m.onnx", data_dir=None)["path"]
    pt2_file = export(path, "pt2", tmp_path / "m.pt2", data_dir=None)["path"]
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    program = torch.export.load(pt2_file).module()
    for n in (1, 7, 64):
        x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            expected = reference(x).numpy()
            got_pt2 = program(x).numpy()
        got_onnx = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got_onnx - expected).max() < 1e-4 and np.abs(got_pt2 - expected).max() < 1e-5
    backend = OnnxBackend(onnx_file)  # the runtime does not apply the temperature a second time
    assert backend.calibration.in_graph and backend.calibration.not_a_digit_below == 0.3
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        assert np.abs(backend.logits(x) - reference(torch.from_numpy(x)).numpy()).max() < 1e-4


@pytest.mark.mnist
def test_calibrate_refits_a_saved_model_and_keeps_its_weights(tmp_path, mnist_dir):
    """The shipped model's temperature and uncertain threshold were fitted at the end of its training run, by the
    code `digitrec calibrate` runs: fitting them again on the same held-out digits gives the same values and
    leaves the weights bit for bit.  (A copy whose
    recipe says it had no non-digits, so that the synthetic non-digit bank need not be drawn here: then there is
    no not-a-digit threshold.)"""
    from safetensors.torch import load_file

    from digitrec.inference.predict import default_model_path

    network, meta = load_model(default_model_path())
    shipped = meta.calibration
    stale = replace(meta, recipe={**meta.recipe, "outliers": 0},
                    calibration={**shipped, "temperature": 1.0, "uncertain_below": 0.7})
    copy = save_model(tmp_path / "stale" / "model.safetensors", network, stale)
    out = recalibrate(copy, tmp_path / "again", mnist_dir, "cpu", log=lambda line: None)
    fitted = read_meta(out).calibration
    assert fitted["temperature"] == pytest.approx(shipped["temperature"], rel=1e-4)
    assert fitted["uncertain_below"] == pytest.approx(shipped["uncertain_below"], abs=1e-4)
    assert fitted["uncertain_below"] > 0.7 and fitted["not_a_digit_below"] == 0.0
    assert read_meta(out).calibration_validation["digits_flagged"] <= 0.006
    before, after = load_file(str(default_model_path())), load_file(str(out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_calibrate_refuses_an_ensemble_and_a_missing_model_in_one_line(tmp_path):
    from digitrec.models import Ensemble

    path = save_model(tmp_path / "ens.safetensors", Ensemble([FastCNN(), FastCNN()]),
                      ModelMeta(architecture="ensemble", members=["fast", "fast"], recipe={"tta": False}))
    for model in (path, tmp_path / "missing.safetensors"):
        result = run_cli("calibrate", str(model), "--out", str(tmp_path / "out"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "out").exists()
    assert "digitrec ensemble" in run_cli("calibrate", str(path), "--out", str(tmp_path / "out")).stderr
