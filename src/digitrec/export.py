"""Export for deployment: ONNX (one file, free batch axis) and torch.export (.pt2).

An exported model takes float32 [N, 1, 28, 28] in [0, 1], exactly as training saw the data (normalisation,
where a model has it, is inside the graph) and returns the 10 logits.  Right after writing, the file is run on
the whole MNIST test set and compared with the PyTorch model.  `OnnxModel` runs an .onnx file with
onnxruntime alone: no PyTorch in the inference path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import DigitrecError, missing_dependency

META_KEY = "digitrec"
MAX_LOGIT_DIFF = 1e-4


def backend_of(path: Path, backend: str | None) -> str:
    """Which runtime a model file needs: .onnx -> onnxruntime, anything else -> torch."""
    is_onnx = Path(path).suffix == ".onnx"
    if backend not in (None, "torch", "onnxruntime"):
        raise DigitrecError(f"unknown backend {backend!r}; use torch or onnxruntime")
    if is_onnx and backend == "torch":
        raise DigitrecError(f"{path} is an ONNX model: use --backend onnxruntime")
    if not is_onnx and backend == "onnxruntime":
        raise DigitrecError("--backend onnxruntime needs an .onnx model: make one with "
                            "`digitrec export MODEL --format onnx`")
    return "onnxruntime" if is_onnx else "torch"


class OnnxModel:
    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_dependency("onnxruntime", "export") from None
        if not Path(path).is_file():
            raise DigitrecError(f"model file {path} not found", code="not_found")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise DigitrecError(f"{path} is not a loadable ONNX model ({type(e).__name__})", code="invalid_model") from None
        custom = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(custom[META_KEY]) if META_KEY in custom else {}
        self.input = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x.astype(np.float32)})[0]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)


def export(model_path: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
           data_dir: str | os.PathLike | None = "data", log=None) -> dict:
    """Write the model as `fmt` (onnx | pt2); verify on the MNIST test set unless data_dir is None.
    Returns {"path", "format", "test_images", "same_predictions", "max_abs_logit_diff"}."""
    import torch

    from .checkpoint import load_model, resolve_model_path
    from .data import say

    log = log or say
    if fmt not in ("onnx", "pt2"):
        raise DigitrecError(f"unknown export format {fmt!r}; use onnx or pt2")
    source = resolve_model_path(model_path)
    model, meta = load_model(source, "cpu")
    out = Path(out) if out else source.with_suffix(f".{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    if fmt == "onnx":
        try:
            import onnx
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ModuleNotFoundError as e:
            raise missing_dependency(e.name or "onnx", "export") from None

        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                    dynamic_shapes={"x": {0: batch}}, verbose=False)
        proto = program.model_proto
        onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
        onnx.save_model(proto, str(out), save_as_external_data=False)
        run = OnnxModel(out).logits
    else:
        program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(out), extra_files={f"{META_KEY}.json": json.dumps(meta)})
        loaded = torch.export.load(str(out)).module()
        run = lambda x: loaded(torch.from_numpy(x)).detach().numpy()
    result = {"path": str(out), "format": fmt}
    if data_dir is not None:
        result.update(verify(model, run, meta.get("dataset", "mnist"), data_dir))
        log(f"verified {out} on {result['test_images']} test images: same predictions "
            f"{result['same_predictions']}, max |logit difference| {result['max_abs_logit_diff']:.2e}")
        if not result["same_predictions"] or result["max_abs_logit_diff"] >= MAX_LOGIT_DIFF:
            raise DigitrecError(f"exported model disagrees with PyTorch (max |logit difference| "
                                f"{result['max_abs_logit_diff']:.2e}); {out} is not to be trusted", code="internal")
    return result


def verify(model, run, dataset: str, data_dir: str | os.PathLike, batch_size: int = 1000) -> dict:
    """Run the whole test split through both and compare logits."""
    import torch

    from .data import batches, load_split

    same, worst, n = True, 0.0, 0
    with torch.no_grad():
        for images, _ in batches(load_split(dataset, data_dir, train=False), batch_size):
            expected = model(images).numpy()
            got = run(images.numpy())
            same &= bool((expected.argmax(1) == got.argmax(1)).all())
            worst = max(worst, float(np.abs(expected - got).max()))
            n += len(images)
    return {"test_images": n, "same_predictions": same, "max_abs_logit_diff": worst}
