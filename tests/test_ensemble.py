"""`digitrec ensemble`: one model file whose probabilities are the mean of its members'; it loads, evaluates
and exports like any model."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from digitrec.data.datasets import load_split
from digitrec.inference.backends import evaluate_split, predictive_model
from digitrec.modelfile import load_model
from digitrec.training.recipes import RECIPES
from digitrec.training.train import train

SMALL_FAST = RECIPES["fast"].with_overrides(epochs=2, batch_size=64, validation=200)


@pytest.fixture(scope="module")
def members(small_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    for seed in (1, 2):
        train(SMALL_FAST, data_dir=small_data, out=root / f"fast-{seed}", seed=seed, device="cpu", log=lambda m: None)
    return [root / "fast-1", root / "fast-2"]


@pytest.fixture(scope="module")
def ensemble_dir(members, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble") / "ens"
    result = run_cli("ensemble", *map(str, members), "--out", str(out), "--data-dir", str(small_data))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"wrote {out / 'model.safetensors'}"
    return out


def _member_mean(members, x):
    with torch.no_grad():
        return np.mean([load_model(m)[0](x).softmax(1).numpy() for m in members], axis=0)


@pytest.mark.mnist
@pytest.mark.slow
def test_the_ensemble_predicts_the_mean_of_its_members_probabilities(members, ensemble_dir, small_data):
    model, meta = load_model(ensemble_dir)
    assert meta.architecture == "ensemble" and meta.members == ["fast", "fast"]
    assert meta.dataset == "mnist" and meta.recipe["tta"] is False
    test = load_split("mnist", small_data, train=False)
    x = test.images.float().div(255).unsqueeze(1)
    expected = _member_mean(members, x)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).softmax(1).numpy(), expected, atol=1e-6)
    temperature = meta.calibration["temperature"]
    assert temperature > 0 and meta.calibration["fitted_on"].startswith("200 held-out")
    assert np.abs(expected - _member_mean(members[:1], x)).max() > 1e-3  # the two members do differ

    accuracies = [evaluate_split(load_model(m)[0], test).accuracy for m in members]
    ensemble_accuracy = evaluate_split(predictive_model(model, meta), test).accuracy
    assert ensemble_accuracy == pytest.approx(100 * (expected.argmax(1) == test.labels.numpy()).mean())
    assert ensemble_accuracy >= min(accuracies) > 80

    result = run_cli("evaluate", str(ensemble_dir), "--data-dir", str(small_data), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 500 and report["accuracy"] == pytest.approx(ensemble_accuracy)


@pytest.mark.mnist
@pytest.mark.slow
def test_an_exported_ensemble_matches_its_members_average(members, ensemble_dir, small_data, tmp_path):
    import onnxruntime as ort

    from digitrec.inference.export import export

    result = export(ensemble_dir, "onnx", tmp_path / "ens.onnx", data_dir=small_data, log=lambda m: None)
    assert result["test_images"] == 500 and result["same_predictions"]
    session = ort.InferenceSession(str(tmp_path / "ens.onnx"), providers=["CPUExecutionProvider"])
    x = load_split("mnist", small_data, train=False).images[:7].float().div(255).unsqueeze(1)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    probs = np.exp(out - out.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    temperature = load_model(ensemble_dir)[1].calibration["temperature"]  # the graph applies it
    expected = torch.from_numpy(np.log(_member_mean(members, x)) / temperature).softmax(1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_ensemble_refuses_one_model_and_an_ensemble_of_ensembles(tmp_path):
    from digitrec.meta import ModelMeta
    from digitrec.modelfile import save_model
    from digitrec.models import Ensemble, FastCNN

    save_model(tmp_path / "a.safetensors", FastCNN(), ModelMeta(architecture="fast", dataset="mnist"))
    result = run_cli("ensemble", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "e"))
    assert result.returncode == 2 and "at least two models" in result.stderr
    save_model(tmp_path / "e2.safetensors", Ensemble([FastCNN(), FastCNN()]),
               ModelMeta(architecture="ensemble", members=["fast", "fast"], dataset="mnist"))
    result = run_cli("ensemble", str(tmp_path / "a.safetensors"), str(tmp_path / "e2.safetensors"),
                     "--out", str(tmp_path / "e"))
    assert result.returncode == 2 and "ensembles of ensembles" in result.stderr
    save_model(tmp_path / "f.safetensors", FastCNN(), ModelMeta(architecture="fast", dataset="fashion-mnist"))
    result = run_cli("ensemble", str(tmp_path / "a.safetensors"), str(tmp_path / "f.safetensors"),
                     "--out", str(tmp_path / "e"))
    assert result.returncode == 2 and "different data sets" in result.stderr
    assert not (tmp_path / "e").exists()
