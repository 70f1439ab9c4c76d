"""Inference: one road from a trained network to the probabilities people see, for every command and export.

    network logits  ->  test-time shifts (recipes with tta: mean logits over the image and its 1-px shifts,
    one batched call)  ->  divided by the calibration temperature  ->  softmax  ->  verdict

`predictive_model(model, meta)` builds that road as one nn.Module, so `evaluate`, `predict`, `read`, `serve`
and the exported ONNX / pt2 graphs all compute the same thing; `TorchBackend` and `OnnxBackend` run it on
numpy batches.  Device and precision choice live here too, because training and evaluation both need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.errors import DigitrecError, missing_dependency
from digitrec.inference.calibration import Calibration
from digitrec.meta import META_KEY, ModelMeta

# Test-time shifts: the image and its 1-pixel shifts (dy, dx); logits averaged.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


# ---------------------------------------------------------------------------------------------------
# Devices and precision (PyTorch from here on; the onnxruntime backend below never imports it).

def select_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise DigitrecError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DigitrecError("--device cuda asked for, but PyTorch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DigitrecError("--device mps asked for, but PyTorch sees no Apple GPU")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")


def bf16_in_hardware(device) -> bool:
    """Whether bf16 matrix work runs in hardware here: CUDA's bf16 support, or on a CPU oneDNN's own check
    (AVX512-BF16 or AMX instructions), the check PyTorch itself uses to pick bf16 kernels."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device) -> str:
    """auto -> bf16 autocast where the hardware has bf16, else fp32 (recipes whose math must stay exact, like
    the seed recipe, say fp32 themselves).  bf16 asked for on hardware without it is refused, not emulated."""
    if precision not in PRECISIONS:
        raise DigitrecError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_in_hardware(device) else "fp32"
    if precision == "bf16" and not bf16_in_hardware(device):
        raise DigitrecError(f"--precision bf16: this {device.type} has no bf16 in hardware (use fp32 or auto)")
    return precision


def inference_precision(precision: str, device, trained_in: str | None) -> str:
    """The precision a model predicts in.  auto -> bf16 where the hardware has it and the model was trained in
    bf16 (it predicts in the precision it learnt in: measured by `make bench-infer`, the shipped model's 10,000
    MNIST test digits give all but a digit or two the same answer and verdict as in fp32, at 4-5x the images/s
    in bulk on an AMX CPU), fp32 otherwise (a seed model's math stays exact)."""
    if precision == "auto":
        return "bf16" if trained_in == "bf16" and bf16_in_hardware(device) else "fp32"
    return resolve_precision(precision, device)


def autocast(device, precision: str):
    """The context that runs a forward pass in `precision` (bf16 autocast, or nothing)."""
    import torch

    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------------------------------------------
# The predictive model: network (+ shifts) + temperature, as one module.

def predictive_model(model, meta: ModelMeta, temperature: float | None = None):
    """The network as it predicts: with its recipe's test-time shifts and its calibration temperature (or the
    one given).  Outputs logits whose softmax is the probability every command reports."""
    from digitrec.models import Calibrated, ShiftAveraged

    network = ShiftAveraged(model, TTA_SHIFTS) if meta.uses_tta else model
    t = Calibration.from_meta(meta).temperature if temperature is None else temperature
    return Calibrated(network, t).eval()


def logits_of(module, images, batch_size: int = 1000, device=None):
    """Float images [N, 1, 28, 28] (a tensor on any device) -> module outputs [N, C] on the CPU, in batches."""
    import torch

    device = device or images.device
    out = []
    module.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            out.append(module(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


@dataclass
class Evaluation:
    loss: float  # mean negative log-likelihood
    accuracy: float  # percent
    predictions: object  # int64 tensor [N]
    probabilities: object  # float tensor [N, C]
    labels: object

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum())


def evaluate_split(module, split, batch_size: int = 1000, device="cpu") -> Evaluation:
    """Run `module` (a network, or a predictive_model) over a data split: loss, accuracy, probabilities."""
    import torch
    import torch.nn.functional as F

    from digitrec.data.datasets import to_float

    n = len(split)
    probs = [logits_of(module, to_float(split.images[s:s + batch_size]), batch_size, device).softmax(1)
             for s in range(0, n, batch_size)]
    probabilities = torch.cat(probs) if probs else torch.empty(0, 10)
    labels = split.labels.cpu()
    if not n:
        return Evaluation(float("nan"), float("nan"), labels, probabilities, labels)
    loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), labels).item()
    predictions = probabilities.argmax(1)
    accuracy = 100.0 * (predictions == labels).sum().item() / n
    return Evaluation(loss, accuracy, predictions, probabilities, labels)


# ---------------------------------------------------------------------------------------------------
# Backends: numpy batches in, logits out.  Both compute predictive_model's output.

class TorchBackend:
    name = "torch"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", precision: str = "fp32") -> None:
        import torch

        from digitrec.modelfile import load_model
        from digitrec.models import fuse_conv_bn

        network, self.meta = load_model(path, device)
        self.network = network  # the bare network (explanations need its layers and gradients)
        self.device = device
        self.precision = inference_precision(precision, torch.device(device), self.meta.precision)
        self.module = predictive_model(fuse_conv_bn(network), self.meta)
        if self.precision == "bf16":  # oneDNN's bf16 convolutions want channels-last weights too
            self.module = self.module.to(memory_format=torch.channels_last)
        self.calibration = Calibration.from_meta(self.meta)

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad(), autocast(torch.device(self.device), self.precision):
            images = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            return self.module(images).float().cpu().numpy()


class OnnxBackend:
    """An exported .onnx file run by onnxruntime alone: no PyTorch in this path."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_dependency("onnxruntime", "export") from None
        if not Path(path).is_file():
            raise DigitrecError(f"model file {path} not found", code="not_found")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise DigitrecError(f"{path} is not a loadable ONNX model ({type(e).__name__})",
                                code="invalid_model") from None
        custom = self.session.get_modelmeta().custom_metadata_map
        self.meta = ModelMeta.from_json(custom[META_KEY], path) if META_KEY in custom else ModelMeta()
        self.calibration = Calibration.from_meta(self.meta)
        if not self.calibration.in_graph and self.calibration.temperature != 1.0:
            raise DigitrecError(f"{path}: exported without its calibration in the graph; export it again",
                                code="invalid_model")
        self.input = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x.astype(np.float32)})[0]


def backend_of(path: str | os.PathLike, backend: str | None) -> str:
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


def load_backend(path: str | os.PathLike, backend: str | None = None, device: str = "cpu", precision: str = "fp32"):
    if backend_of(path, backend) == "torch":
        return TorchBackend(path, device, precision)
    if precision == "bf16":
        raise DigitrecError("--precision bf16 runs PyTorch models; an ONNX model runs in fp32 (use fp32 or auto)")
    if precision not in PRECISIONS:
        raise DigitrecError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    return OnnxBackend(path)


class SequenceBackend:
    """The sequence reader (models.SequenceReader, exported to ONNX: export.export_reader) on onnxruntime, for
    the CLI and the server alike (no PyTorch): strips (imaging.ink.to_strip) -> per strip its digits, each with
    a confidence (its best column's probability) and the columns of the strip it was read at.  Best path
    decoding: the most likely class per column, repeats merged, blanks dropped."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import json

        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise missing_dependency("onnxruntime", "serve") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(props.get(META_KEY, "{}"))
        if self.meta.get("architecture") != "sequence-reader":
            raise DigitrecError(f"{path} is not a digitrec sequence reader", code="invalid_model")

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"strips": batch})[0]

    def read(self, strips: list[np.ndarray]) -> list[list[tuple[int, float, tuple[int, int]]]]:
        if not strips:
            return []
        z = self.logits(pad_strips(strips))
        probs = np.exp(z - z.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return [_best_path(p[:s.shape[1] // 4]) for p, s in zip(probs, strips)]


def pad_strips(strips: list[np.ndarray]) -> np.ndarray:
    """Strips of different widths -> one float32 batch [N, 1, 32, W_max], zero (no ink) on the right."""
    width = max(s.shape[1] for s in strips)
    batch = np.zeros((len(strips), 1, strips[0].shape[0], width), np.float32)
    for i, s in enumerate(strips):
        batch[i, 0, :, :s.shape[1]] = s
    return batch


def _best_path(probs: np.ndarray) -> list[tuple[int, float, tuple[int, int]]]:
    """[T, 11] column probabilities -> [(digit, confidence, (first column px, last column px + 4))]."""
    best = probs.argmax(1)
    out: list[tuple[int, float, tuple[int, int]]] = []
    for t, c in enumerate(best):
        if c == 0:
            continue
        if t and best[t - 1] == c:  # the same digit over several columns
            digit, confidence, (x0, _) = out[-1]
            out[-1] = (digit, max(confidence, float(probs[t, c])), (x0, 4 * t + 4))
        else:
            out.append((int(c) - 1, float(probs[t, c]), (4 * t, 4 * t + 4)))
    return out
