"""Export: ONNX (onnxruntime, no PyTorch in the inference path) and torch.export, each checked against PyTorch
on the whole MNIST test set."""

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from conftest import run_cli
from test_serve import start_server

from digitrec.inference.backends import OnnxBackend
from digitrec.inference.export import export
from digitrec.inference.predict import default_model_path


@pytest.fixture(scope="module")
def onnx_model(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "default.onnx"
    result = export(default_model_path(), "onnx", out, data_dir=mnist_dir, log=lambda m: None)
    return out, result


BATCHES = (1, 7, 256)


def _real_batches(mnist_dir):
    """Real MNIST test images in batches of 1, 7 and 256, float32 [N, 1, 28, 28] in [0, 1] as export() documents."""
    from digitrec.data.datasets import load_split

    images = load_split("mnist", mnist_dir, train=False).images[:sum(BATCHES)].float().div(255).unsqueeze(1)
    starts = np.cumsum((0,) + BATCHES)
    return [images[a:b].numpy() for a, b in zip(starts[:-1], starts[1:])]


def _pytorch_outputs(x: np.ndarray) -> np.ndarray:
    """What digitrec.inference.export documents as the exported output: the model as digitrec predicts with it (its
    test-time shifts if any, divided by its calibration temperature), written out here from the metadata."""
    import torch

    from digitrec.modelfile import load_model

    model, meta = load_model(default_model_path())
    assert not meta.uses_tta  # the shipped model predicts without shifts
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy() / meta.calibration["temperature"]


def _assert_same_outputs(got: np.ndarray, expected: np.ndarray):
    assert got.shape == expected.shape and got.dtype == np.float32
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()


@pytest.mark.mnist
@pytest.mark.slow
def test_onnx_matches_pytorch_on_the_whole_test_set(onnx_model):
    path, result = onnx_model
    assert result["test_images"] == 10_000 and result["same_predictions"] is True
    assert result["max_abs_logit_diff"] < 1e-4
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # one self-contained file, no external data
    assert OnnxBackend(path).meta.architecture == "wide-k5"


@pytest.mark.mnist
@pytest.mark.slow
def test_onnx_parity_checked_by_its_own_onnxruntime_session(onnx_model, mnist_dir):
    """Not export()'s own verify(): a fresh InferenceSession, real digits, batch sizes 1, 7 and 256."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_model[0]), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.shape[1:] == [1, 28, 28] and not isinstance(given.shape[0], int)  # a free batch axis
    for x in _real_batches(mnist_dir):
        (got,) = session.run(None, {given.name: x})
        _assert_same_outputs(got, _pytorch_outputs(x))


@pytest.mark.mnist
@pytest.mark.slow
def test_pt2_parity_checked_by_torch_export_load(mnist_dir, tmp_path):
    import torch

    result = export(default_model_path(), "pt2", tmp_path / "m.pt2", data_dir=None, log=lambda m: None)
    assert result == {"path": str(tmp_path / "m.pt2"), "format": "pt2"}  # no verification asked for
    module = torch.export.load(str(tmp_path / "m.pt2")).module()
    for x in _real_batches(mnist_dir):
        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        _assert_same_outputs(got, _pytorch_outputs(x))


@pytest.mark.mnist
@pytest.mark.slow
def test_predict_with_onnxruntime_never_imports_torch(onnx_model, tmp_path, mnist_dir):
    from test_predict import png

    from digitrec.data.datasets import load_split

    test = load_split("mnist", mnist_dir, train=False)
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png(test.images[i].numpy()))
    code = ("import sys, json; from digitrec.cli import main; "
            f"rc = main(['predict', {str(tmp_path)!r}, '--model', {str(onnx_model[0])!r}, '--format', 'json']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    *records, marker = result.stdout.strip().rsplit("\n", 1)
    assert marker == "NO-TORCH"
    assert [r["digit"] for r in json.loads(records[0])] == test.labels[:3].tolist()


@pytest.mark.mnist
@pytest.mark.slow
def test_serve_with_onnxruntime(onnx_model, mnist_dir):
    from test_predict import png

    from digitrec.data.datasets import load_split

    test = load_split("mnist", mnist_dir, train=False)
    proc, url = start_server("--model", str(onnx_model[0]), "--backend", "onnxruntime")
    try:
        assert httpx.get(f"{url}/v1/model").json()["backend"] == "onnxruntime"
        body = httpx.post(f"{url}/v1/predict", content=png(test.images[0].numpy()),
                          headers={"Content-Type": "image/png"}).json()
        assert body["digit"] == int(test.labels[0])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_refuses_bad_models_and_backends(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"\x80\x04K\x01.")  # a pickle
    result = run_cli("export", str(tmp_path / "m.safetensors"), "--no-verify")
    assert result.returncode == 2 and "not a digitrec model" in result.stderr
    result = run_cli("predict", "x.png", "--model", str(tmp_path / "m.safetensors"), "--backend", "onnxruntime")
    assert result.returncode == 2 and "needs an .onnx model" in result.stderr
    (tmp_path / "fake.onnx").write_bytes(b"not onnx")
    result = run_cli("predict", "x.png", "--model", str(tmp_path / "fake.onnx"))
    assert result.returncode == 2 and "not a loadable ONNX model" in result.stderr
