"""Evaluation: run a model over a split, then accuracy, loss, per-class precision/recall/F1, the confusion
matrix, and the pictures (confusion.png, mistakes.png) that `digitrec evaluate` writes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, batches

# Test-time augmentation: the image and its 1-pixel shifts, probabilities averaged.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift images [N, C, H, W] by whole pixels, filling with zeros (black)."""
    if dy == dx == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Class probabilities for float images [N, 1, 28, 28] in [0, 1]."""
    model.eval()
    if not tta:
        return model(x).float().softmax(1)
    return torch.stack([model(shift(x, dy, dx)).float().softmax(1) for dy, dx in TTA_SHIFTS]).mean(0)


@dataclass
class Evaluation:
    loss: float
    accuracy: float  # percent
    predictions: torch.Tensor  # int64 [N]
    probabilities: torch.Tensor  # float [N, 10]
    labels: torch.Tensor

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum())


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split, batch_size: int = 1000, device: torch.device | str = "cpu",
                   tta: bool = False) -> Evaluation:
    probs = []
    for images, _ in batches(split, batch_size):
        with torch.autocast("cuda", torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            probs.append(predict_proba(model, images, tta).cpu())
    probabilities = torch.cat(probs) if probs else torch.empty(0, 10)
    labels = split.labels.cpu()
    loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), labels).item() if len(labels) else float("nan")
    predictions = probabilities.argmax(1)
    accuracy = 100.0 * (predictions == labels).sum().item() / len(labels) if len(labels) else float("nan")
    return Evaluation(loss, accuracy, predictions, probabilities, labels)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]"""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class_scores(confusion: torch.Tensor) -> list[dict]:
    confusion = confusion.double()
    tp = confusion.diag()
    precision = tp / confusion.sum(0).clamp_min(1)
    recall = tp / confusion.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return [{"class": c, "precision": precision[c].item(), "recall": recall[c].item(), "f1": f1[c].item(),
             "support": int(confusion[c].sum())} for c in range(len(confusion))]


def build_report(ev: Evaluation, meta: dict, classes: list[str]) -> dict:
    confusion = confusion_matrix(ev.labels, ev.predictions, len(classes))
    return {
        "model": {k: meta.get(k) for k in ("architecture", "recipe", "epoch", "test_accuracy", "data_sha256")},
        "n": len(ev.labels),
        "accuracy": ev.accuracy,
        "loss": ev.loss,
        "errors": len(ev.labels) - ev.correct,
        "classes": classes,
        "per_class": per_class_scores(confusion),
        "confusion_matrix": confusion.tolist(),
    }


def format_report(report: dict) -> str:
    lines = [f"Test Accuracy: {report['accuracy']:.2f}%  ({report['n'] - report['errors']}/{report['n']}), "
             f"mean loss {report['loss']:.4f}", "",
             f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for row, name in zip(report["per_class"], report["classes"]):
        lines.append(f"{name:>12} {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} {row['support']:8d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              "      " + "".join(f"{c:>6}" for c in range(len(report["classes"])))]
    for c, row in enumerate(report["confusion_matrix"]):
        lines.append(f"{c:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def evaluate(model_path: str | os.PathLike, data_dir: str | os.PathLike = "data", dataset: str | None = None,
             out: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 1000) -> dict:
    """Evaluate a model file or run folder on its dataset's test split; write report.json, confusion.png and
    mistakes.png into `out` (default: next to the model) and return the report."""
    from . import plots
    from .checkpoint import load_model, resolve_model_path
    from .data import dataset_spec, load_split
    from .train import select_device

    path = resolve_model_path(model_path)
    dev = select_device(device)
    model, meta = load_model(path, dev)
    dataset = dataset or meta.get("dataset", "mnist")
    classes = list(dataset_spec(dataset).classes)
    test = load_split(dataset, data_dir, train=False)
    ev = evaluate_split(model, test, batch_size, dev, tta=bool(meta.get("recipe", {}).get("tta", False)))
    report = build_report(ev, meta, classes)
    out = Path(out) if out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plots.confusion(report["confusion_matrix"], classes, out / "confusion.png")
    plots.mistakes(test.images, ev.labels, ev.predictions, ev.probabilities, classes, out / "mistakes.png")
    report["files"] = [str(out / n) for n in ("report.json", "confusion.png", "mistakes.png")]
    return report
