"""`digitrec export --quantize int8`: onnxruntime's static quantization, checked by the test itself on the
whole MNIST test set with its own onnxruntime sessions."""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli

from digitrec.data.datasets import load_split
from digitrec.files import sha256_file
from digitrec.inference.export import export
from digitrec.inference.predict import Predictor, default_int8_path, default_model_path

pytestmark = [pytest.mark.mnist, pytest.mark.slow]


def _accuracy(path, images, labels) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predictions = np.concatenate([session.run(None, {name: images[s:s + 500]})[0].argmax(1)
                                  for s in range(0, len(images), 500)])
    return 100.0 * float((predictions == labels).mean())


def test_int8_export_is_quantized_and_within_a_tenth_of_a_point(tmp_path, mnist_dir):
    int8 = tmp_path / "default.int8.onnx"
    result = run_cli("export", str(default_model_path()), "--quantize", "int8", "--out", str(int8),
                     "--data-dir", str(mnist_dir), "--no-verify")
    assert result.returncode == 0, result.stderr
    float_onnx = export(default_model_path(), "onnx", tmp_path / "float.onnx", data_dir=None, log=lambda m: None)["path"]

    graph = onnx.load(str(int8)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [w for w in graph.initializer if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 4]
    # every convolution's weights in int8 but the first one's (export.quantize_int8: 9 weights a filter)
    assert len(weights) == sum(node.op_type == "Conv" for node in graph.node) - 1
    made = {node.output[0]: node for node in graph.node}
    first_conv = next(node for node in graph.node if node.op_type == "Conv")
    assert first_conv.input[1] not in made or made[first_conv.input[1]].op_type != "DequantizeLinear"

    test = load_split("mnist", mnist_dir, train=False)
    images = test.images.numpy().astype(np.float32)[:, None] / 255.0
    labels = test.labels.numpy()
    float_accuracy, int8_accuracy = _accuracy(float_onnx, images, labels), _accuracy(int8, images, labels)
    assert float_accuracy >= 99.0 and float_accuracy - int8_accuracy <= 0.1, (float_accuracy, int8_accuracy)

    # The metadata travels: the model's calibration (temperature inside the graph), usable by every command.
    predictor = Predictor(int8, "onnxruntime")
    assert predictor.calibration.in_graph and predictor.meta.architecture
    probabilities = predictor.probabilities(list(images[:20, 0]))
    assert (probabilities.argmax(1) == labels[:20]).mean() >= 0.95 and np.allclose(probabilities.sum(1), 1, atol=1e-4)
    assert predictor.meta.quantized_from == {"file": "default.safetensors", "sha256": sha256_file(default_model_path())}

    assert predictor.meta.test_accuracy is None  # --no-verify: the int8 model's own accuracy is not known

    # The int8 file that ships (and that `serve` runs) is this command's output: the same answers on the whole test
    # set, logits within a rounding step of each other (the calibration's ranges may differ in the last bits
    # between CPU kinds), the same metadata but the accuracy it was verified at.
    shipped = Predictor(default_int8_path(), "onnxruntime")
    assert dataclasses.replace(shipped.meta, test_accuracy=None) == predictor.meta
    ours, theirs = (np.concatenate([p.runner.logits(images[s:s + 1000]) for s in range(0, len(images), 1000)])
                    for p in (predictor, shipped))
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.999 and np.abs(ours - theirs).max() < 0.5


def test_calibration_images_are_training_images_never_the_validation_digits(mnist_dir):
    from digitrec.data.datasets import split_validation
    from digitrec.inference.export import calibration_images_of
    from digitrec.meta import ModelMeta

    _, validation = split_validation(load_split("mnist", mnist_dir, train=True), 5000)
    held_out = {v.tobytes() for v in validation.images.numpy()}
    chosen = calibration_images_of(ModelMeta(recipe={"validation": 5000}), mnist_dir, 1000)
    assert chosen.shape == (1000, 1, 28, 28)
    assert not {(np.round(c[0] * 255).astype(np.uint8)).tobytes() for c in chosen} & held_out
    everything = calibration_images_of(ModelMeta(recipe={"validation": 0}), mnist_dir, 20_000)
    assert {(np.round(c[0] * 255).astype(np.uint8)).tobytes() for c in everything} & held_out  # (the check can fail)


def test_quantize_needs_onnx(tmp_path):
    result = run_cli("export", str(default_model_path()), "--format", "pt2", "--quantize", "int8")
    assert result.returncode != 0 and "--quantize int8 needs --format onnx" in result.stderr
    assert "Traceback" not in result.stderr
