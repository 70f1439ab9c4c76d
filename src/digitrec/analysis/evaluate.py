"""Evaluation: run a model as it predicts (inference.predictive_model: test-time shifts and calibration) over a
test split, then accuracy, loss, calibration (ECE, NLL, Brier), per-class precision/recall/F1, the confusion
matrix, and the pictures (confusion.png, mistakes.png, reliability.png) that `digitrec evaluate` writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from digitrec.inference.backends import Evaluation
from digitrec.inference.calibration import DEFAULT_COVERAGE, Calibration
from digitrec.inference.reliability import calibration_report, coverage_at_error, reliability, risk_coverage
from digitrec.meta import ModelMeta


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


def build_report(ev: Evaluation, meta: ModelMeta, classes: list[str]) -> dict:
    confusion = confusion_matrix(ev.labels, ev.predictions, len(classes))
    calibration = calibration_report(ev.probabilities, ev.labels)
    return {
        "model": {k: getattr(meta, k) for k in ("architecture", "recipe", "epoch", "test_accuracy", "calibration",
                                                 "precision", "data_sha256")},
        "n": len(ev.labels),
        "accuracy": ev.accuracy,
        "loss": ev.loss,
        "ece": calibration["ece"],  # a fraction, 15 equal-width bins
        "nll": calibration["nll"],
        "brier": calibration["brier"],
        "mean_confidence": calibration["mean_confidence"],
        "reliability": reliability(ev.probabilities, ev.labels),
        "errors": len(ev.labels) - ev.correct,
        **selective_report(ev.probabilities, ev.labels, Calibration.from_meta(meta)),
        "classes": classes,
        "per_class": per_class_scores(confusion),
        "confusion_matrix": confusion.tolist(),
    }


def selective_report(probabilities: torch.Tensor, labels: torch.Tensor, calibration: Calibration,
                     coverages: tuple[float, ...] = (DEFAULT_COVERAGE,)) -> dict:
    """Selective answers on a labelled split: the share of answers that can be kept, most sure first, with at most
    0.1% and 1% of them wrong; and, when the calibration has the tables (fitted on the validation digits), what
    `--max-error` 0.001 and 0.01 and prediction sets of the given coverages give here."""
    confidence, correct = probabilities.max(1).values, probabilities.argmax(1) == labels
    out: dict = {"coverage_at_error": {str(e): coverage_at_error(confidence, correct, e) for e in (0.001, 0.01)}}
    if calibration.risk:
        out["max_error"] = {}
        for e in (0.001, 0.01):
            kept = confidence >= calibration.answering(max_error=e).uncertain_below
            out["max_error"][str(e)] = {"kept": kept.double().mean().item(),
                                        "wrong_among_kept": (~correct[kept]).double().mean().nan_to_num().item()}
    if calibration.conformal_p_true:
        out["sets"] = {}
        for coverage in coverages:
            inside = torch.from_numpy(calibration.answering(coverage=coverage).in_sets(probabilities.numpy()))
            size = inside.sum(1).double()
            out["sets"][str(coverage)] = {"coverage": inside.gather(1, labels[:, None]).double().mean().item(),
                                          "mean_size": size.mean().item(), "empty": (size == 0).double().mean().item(),
                                          "several": (size > 1).double().mean().item()}
    return out


def format_report(report: dict) -> str:
    lines = [f"Test Accuracy: {report['accuracy']:.2f}%  ({report['n'] - report['errors']}/{report['n']}), "
             f"mean loss {report['loss']:.4f}",
             f"Calibration: ECE {report['ece']:.2%} (15 bins), NLL {report['nll']:.4f}, Brier {report['brier']:.4f}, "
             f"mean confidence {report['mean_confidence']:.2%}",
             "Selective answers: kept at 0.1% wrong {:.2%}, at 1% wrong {:.2%} (risk_coverage.png)".format(
                 *report["coverage_at_error"].values())]
    for e, row in report.get("max_error", {}).items():
        lines.append(f"  --max-error {e}: {row['kept']:.2%} answered, {row['wrong_among_kept']:.3%} of them wrong")
    for coverage, row in report.get("sets", {}).items():
        lines.append(f"  --sets --coverage {coverage}: the true digit in {row['coverage']:.2%} of the sets, "
                     f"{row['mean_size']:.3f} digits a set on average")
    lines += ["",
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
    from digitrec import plots
    from digitrec.data.datasets import dataset_spec, load_split
    from digitrec.inference.backends import evaluate_split, predictive_model, select_device
    from digitrec.modelfile import load_model, resolve_model_path

    path = resolve_model_path(model_path)
    dev = select_device(device)
    model, meta = load_model(path, dev)
    dataset = dataset or meta.dataset
    classes = list(dataset_spec(dataset).classes)
    test = load_split(dataset, data_dir, train=False)
    ev = evaluate_split(predictive_model(model, meta), test, batch_size, dev)
    report = build_report(ev, meta, classes)
    out = Path(out) if out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plots.confusion(report["confusion_matrix"], classes, out / "confusion.png")
    plots.mistakes(test.images, ev.labels, ev.predictions, ev.probabilities, classes, out / "mistakes.png")
    plots.reliability_diagram(report["reliability"], report["ece"], out / "reliability.png",
                              f"{meta.architecture} on the {dataset} test set")
    coverage, risk = risk_coverage(ev.probabilities.max(1).values, ev.predictions == ev.labels)
    plots.risk_coverage(coverage.tolist(), risk.tolist(),
                        {f"at {float(e):.1%} wrong": c for e, c in report["coverage_at_error"].items()},
                        out / "risk_coverage.png", f"{meta.architecture} on the {dataset} test set")
    report["files"] = [str(out / n) for n in ("report.json", "confusion.png", "mistakes.png", "reliability.png",
                                              "risk_coverage.png")]
    return report
