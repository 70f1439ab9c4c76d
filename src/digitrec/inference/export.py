"""Export for deployment: ONNX (one file, free batch axis) and torch.export (.pt2).

An exported model takes float32 [N, 1, 28, 28] in [0, 1], exactly as training saw the data (normalisation,
where a model has it, is inside the graph) and returns 10 calibrated logits: the graph is
`inference.predictive_model`, so the recipe's test-time shifts and the calibration temperature are inside it
and softmax(output) is the probability every digitrec command reports.  The metadata (with
`calibration.in_graph = true`) travels in the file.  Right after writing, the file is run on the whole test set
and compared with the PyTorch model.  `inference.OnnxBackend` runs an .onnx file with onnxruntime alone: no
PyTorch in the inference path.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from digitrec.errors import DigitrecError, missing_dependency
from digitrec.inference.backends import OnnxBackend
from digitrec.inference.calibration import Calibration
from digitrec.meta import META_KEY

MAX_LOGIT_DIFF = 1e-4


def export(model_path: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
           data_dir: str | os.PathLike | None = "data", log=None) -> dict:
    """Write the model as `fmt` (onnx | pt2); verify on the MNIST test set unless data_dir is None.
    Returns {"path", "format", "test_images", "same_predictions", "max_abs_logit_diff"}."""
    import torch

    from digitrec.data.datasets import say
    from digitrec.modelfile import load_model, resolve_model_path

    log = log or say
    if fmt not in ("onnx", "pt2"):
        raise DigitrecError(f"unknown export format {fmt!r}; use onnx or pt2")
    from digitrec.inference.backends import predictive_model

    source = resolve_model_path(model_path)
    network, meta = load_model(source, "cpu")
    model = predictive_model(network, meta)  # shifts and temperature inside the graph
    meta = replace(meta, calibration=replace(Calibration.from_meta(meta), in_graph=True).to_dict())
    out = Path(out) if out else source.with_suffix(f".{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    run = (_write_onnx if fmt == "onnx" else _write_pt2)(model, example, batch, meta, out)
    result = {"path": str(out), "format": fmt}
    if data_dir is not None:
        result.update(verify(model, run, meta.dataset, data_dir))
        log(f"verified {out} on {result['test_images']} test images: same predictions "
            f"{result['same_predictions']}, max |logit difference| {result['max_abs_logit_diff']:.2e}")
        if not result["same_predictions"] or result["max_abs_logit_diff"] >= MAX_LOGIT_DIFF:
            raise DigitrecError(f"exported model disagrees with PyTorch (max |logit difference| "
                                f"{result['max_abs_logit_diff']:.2e}); {out} is not to be trusted", code="internal")
    return result


def _write_onnx(model, example, batch, meta, out: Path):
    """The model as one .onnx file (torch.onnx's dynamo exporter, batch axis `batch`) at `out`, its metadata in the file
    -> a function that runs the file with onnxruntime, numpy in and out."""
    import torch

    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ModuleNotFoundError as e:
        raise missing_dependency(e.name or "onnx", "export") from None

    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                dynamic_shapes={"x": {0: batch}}, verbose=False)
    proto = program.model_proto
    # The exporter annotates every node with the Python stack that made it (this checkout's paths and line
    # numbers): dropped, so that a file depends only on the model, and a shipped one shows no local paths.
    for node in [*proto.graph.node, *(n for f in proto.functions for n in f.node)]:
        del node.metadata_props[:]
    onnx.helper.set_model_props(proto, {META_KEY: meta.to_json()})
    onnx.save_model(proto, str(out), save_as_external_data=False)
    return OnnxBackend(out).logits


def _write_pt2(model, example, batch, meta, out: Path):
    """The model as a torch.export program (batch axis `batch`) at `out`, its metadata as an extra file in the
    archive -> a function that runs the program loaded back from the file, numpy in and out."""
    import torch

    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(out), extra_files={f"{META_KEY}.json": meta.to_json()})
    loaded = torch.export.load(str(out)).module()
    return lambda x: loaded(torch.from_numpy(x)).detach().numpy()


def verify(model, run, dataset: str, data_dir: str | os.PathLike, batch_size: int = 1000) -> dict:
    """Run the whole test split through both and compare logits."""
    import torch

    from digitrec.data.datasets import batches, load_split

    same, worst, n = True, 0.0, 0
    with torch.no_grad():
        for images, _ in batches(load_split(dataset, data_dir, train=False), batch_size):
            expected = model(images).numpy()
            got = run(images.numpy())
            same &= bool((expected.argmax(1) == got.argmax(1)).all())
            worst = max(worst, float(np.abs(expected - got).max()))
            n += len(images)
    return {"test_images": n, "same_predictions": same, "max_abs_logit_diff": worst}


# ---------------------------------------------------------------------------------------------------
# int8: onnxruntime's static quantization of an exported float graph.

QUANTIZE_MAX_DROP = 0.1  # accuracy points the int8 model may lose against the float one on the test set
CALIBRATION_IMAGES = 1000


def calibration_images_of(meta, data_dir: str | os.PathLike, n: int = CALIBRATION_IMAGES,
                          seed: int = 0) -> np.ndarray:
    """float32 [n, 1, 28, 28] in [0, 1]: a seeded sample of the training images the model trained on, not its
    validation digits (the recipe's carve, data.split_validation), on which int8 variants are compared."""
    from digitrec.data.datasets import load_split, split_validation

    train = load_split(meta.dataset, data_dir, train=True)
    held_out = (meta.recipe or {}).get("validation", 0)
    if held_out:
        train, _ = split_validation(train, held_out)
    order = np.random.default_rng(seed).permutation(len(train))[:n]
    return train.images.numpy()[order].astype(np.float32)[:, None] / 255.0


def image_convolutions(graph) -> list[str]:
    """The convolutions that see the one-channel image (each network's first; an ensemble has one per member):
    they stay in float.  Each of their filters has only kernel x kernel weights (9 for `wide`'s 3x3), too few
    for int8 steps.  Measured on validation data (docs/benchmarks.md, export): with the shipped model's first convolution in
    int8, validation digits drawn as people's images were 99.51% right and 0.31% called not a digit (float:
    99.69%, 0.06%); with it in float, 99.76% and 0.00%, at no measurable cost (0.5% of the multiply-adds)."""
    one_channel = {w.name for w in graph.initializer if len(w.dims) == 4 and w.dims[1] == 1}
    return [node.name for node in graph.node if node.op_type == "Conv" and node.input[1] in one_channel
            and all(a.name != "group" or a.i == 1 for a in node.attribute)]


def quantize_int8(float_onnx: str | os.PathLike, out: str | os.PathLike, data_dir: str | os.PathLike = "data",
                  calibration_images: int = CALIBRATION_IMAGES, verify_on_test: bool = True, seed: int = 0,
                  source: str | os.PathLike | None = None, log=None) -> dict:
    """Static int8 quantization (onnxruntime.quantization: QDQ format, per-channel int8 weights, uint8
    activations) of an exported float .onnx, all but the convolutions on the image (image_convolutions).
    Activation ranges are calibrated on `calibration_images` of the model's training images
    (calibration_images_of; never the test set).  The metadata records what it was made from, `quantized_from`
    (name and SHA-256 of `source`, the model file the float graph was exported from, else of the float graph),
    and the int8 model's own test accuracy (None unless verified).  With verify_on_test, both models run on the
    whole test set: the int8 one must be within QUANTIZE_MAX_DROP accuracy points of the float one, or the file
    is refused.
    Returns {"path", "format": "onnx-int8", "float_accuracy", "int8_accuracy", "test_images"}."""
    _require_quantization()
    import onnx

    from digitrec.data.datasets import say
    from digitrec.files import sha256_file
    from digitrec.meta import ModelMeta

    log = log or say
    source_graph = onnx.load(str(float_onnx))
    props = {p.key: p.value for p in source_graph.metadata_props}
    meta = ModelMeta.from_json(props[META_KEY], float_onnx) if META_KEY in props else ModelMeta()
    images = calibration_images_of(meta, data_dir, calibration_images, seed)
    # Which float model this int8 file stands for (the marker `serve` reads as "int8"); its test accuracy is its
    # own, measured below, or not known.
    made_from = Path(source if source is not None else float_onnx)
    meta = replace(meta, quantized_from={"file": made_from.name, "sha256": sha256_file(made_from)},
                   test_accuracy=None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _quantize_static(float_onnx, out, _calibration_reader(images, source_graph.graph.input[0].name))
    result = {"path": str(out), "format": "onnx-int8", "calibration_images": len(images)}
    if verify_on_test:
        result.update(_verify_int8(float_onnx, out, meta.dataset, data_dir, log))
        meta = replace(meta, test_accuracy=result["int8_accuracy"])
    quantized = onnx.load(str(out))
    onnx.helper.set_model_props(quantized, {**props, META_KEY: meta.to_json()})  # the metadata travels
    onnx.save_model(quantized, str(out))
    return result


def _require_quantization() -> None:
    """onnx and onnxruntime's quantization tools can be imported, else missing_dependency (the `export` extra)."""
    try:
        import onnx  # noqa: F401
        from onnxruntime.quantization import (  # noqa: F401
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: F401
    except ModuleNotFoundError as e:
        raise missing_dependency(e.name or "onnxruntime", "export") from None


def _calibration_reader(images: np.ndarray, name: str):
    """An onnxruntime CalibrationDataReader that feeds `images` as the graph input `name`, 100 at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.batches = iter([{name: images[s:s + 100]} for s in range(0, len(images), 100)])

        def get_next(self):
            return next(self.batches, None)

    return Reader(name)


def _quantize_static(float_onnx: str | os.PathLike, out: Path, reader) -> None:
    """onnxruntime's static quantization of the float graph into `out`, activation ranges from `reader`: QDQ,
    per-channel int8 weights, uint8 activations, the convolutions on the image left in float."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shapes inferred and constants folded: what the quantizer needs
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=False)
        quantize_static(str(prepared), str(out), reader,
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=image_convolutions(onnx.load(str(prepared)).graph))


def _verify_int8(float_onnx: str | os.PathLike, out: Path, dataset: str, data_dir: str | os.PathLike,
                 log) -> dict:
    """Both models on the whole test set -> {"float_accuracy", "int8_accuracy", "test_images"}; the int8 file is
    deleted, and refused, when it loses more than QUANTIZE_MAX_DROP accuracy points."""
    from digitrec.data.datasets import load_split

    test = load_split(dataset, data_dir, train=False)
    x = test.images.numpy().astype(np.float32)[:, None] / 255.0
    labels = test.labels.numpy()
    accuracy = {}
    for name, path in (("float", float_onnx), ("int8", out)):
        run = OnnxBackend(path).logits
        predictions = np.concatenate([run(x[s:s + 1000]).argmax(1) for s in range(0, len(x), 1000)])
        accuracy[name] = 100.0 * float((predictions == labels).mean())
    log(f"int8 {out}: {accuracy['int8']:.2f}% on {len(x)} test images (float {accuracy['float']:.2f}%)")
    if accuracy["float"] - accuracy["int8"] > QUANTIZE_MAX_DROP:
        out.unlink()
        raise DigitrecError(f"int8 model loses {accuracy['float'] - accuracy['int8']:.2f} accuracy points "
                            f"(more than {QUANTIZE_MAX_DROP}); not written", code="internal")
    return {"float_accuracy": accuracy["float"], "int8_accuracy": accuracy["int8"], "test_images": len(x)}


def export_reader(weights: str | os.PathLike, out: str | os.PathLike, strips: list[np.ndarray]) -> float:
    """The sequence reader (its .safetensors, training/sequence.py) as an .onnx file that onnxruntime runs, with
    its width axis free; checked against PyTorch on `strips`: returns the largest |logit difference|.
    TorchScript's exporter, not the dynamo one: the latter declares the GRU's output with the example's length."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        import onnx
    except ModuleNotFoundError as e:
        raise missing_dependency(e.name or "onnx", "export") from None
    from digitrec.inference.backends import SequenceBackend, pad_strips
    from digitrec.models import SequenceReader

    with safe_open(str(weights), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    model = SequenceReader()
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    example = torch.from_numpy(pad_strips(strips[:2]))
    torch.onnx.export(model, (example,), str(out), input_names=["strips"], output_names=["logits"], dynamo=False,
                      dynamic_axes={"strips": {0: "n", 3: "width"}, "logits": {0: "n", 1: "columns"}})
    proto = onnx.load(str(out))
    onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
    onnx.save_model(proto, str(out))
    batch = pad_strips(strips)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    return float(np.abs(SequenceBackend(out).logits(batch) - expected).max())
