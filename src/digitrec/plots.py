"""Pictures people would rather see than read: training curves, confusion matrix, gallery of mistakes."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def curves(history: list[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch, for whichever of the train, validation and test splits the rows have."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys in ((ax_loss, ("train_loss", "val_loss", "test_loss")), (ax_acc, ("val_accuracy", "test_accuracy"))):
        for key in keys:
            points = [(row["epoch"], row[key]) for row in history if key in row]
            if points:
                split = key.split("_")[0]
                ax.plot(*zip(*points), "o-", label={"val": "validation"}.get(split, split),
                        color={"train": "C0", "val": "C2", "test": "C1"}[split])
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion(matrix: list[list[int]], classes: list[str], path: str | os.PathLike) -> None:
    m = torch.tensor(matrix, dtype=torch.float64)
    off = m.clone().fill_diagonal_(0)  # colour the errors; the diagonal would swamp them
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(off, cmap="Reds")
    n = len(classes)
    for i in range(n):
        for j in range(n):
            value = int(m[i, j])
            if value:
                dark = i != j and off[i, j] > 0.6 * off.max()
                ax.text(j, i, value, ha="center", va="center", fontsize=7, weight="bold" if i == j else "normal",
                        color="tab:blue" if i == j else "white" if dark else "black")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
           title="confusion matrix (colour: errors only)")
    ax.set_xticklabels(classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
    ax.set_yticklabels(classes)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mistakes(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, probabilities: torch.Tensor,
             classes: list[str], path: str | os.PathLike, limit: int = 100) -> None:
    """Misclassified images, most confident mistakes first, titled `true→predicted (confidence)`."""
    wrong = (predictions != labels).nonzero().flatten()
    total = len(wrong)
    confidence = probabilities.max(1).values
    wrong = wrong[confidence[wrong].argsort(descending=True)][:limit]
    cols = 10
    rows = max(1, (len(wrong) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{classes[labels[i]]}→{classes[predictions[i]]} ({confidence[i]:.2f})", fontsize=7)
    shown = f"the {len(wrong)} most confident of {total}" if total > len(wrong) else f"all {total}"
    fig.suptitle(f"{shown} misclassified test images (true→predicted, confidence)"
                 if total else "no misclassified test images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_diagram(bins: list[dict], ece: float, path: str | os.PathLike, title: str = "") -> None:
    """Accuracy against confidence per bin (calibration.reliability), with the share of predictions per bin:
    a calibrated model's bars sit on the diagonal."""
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["upper"] - bins[0]["lower"]
    filled = [b for b in bins if b["count"]]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy in bin")
    ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="C3", ms=4,
            label="(mean confidence, accuracy)")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title=f"{title}  ECE {ece:.2%}".strip())
    ax.legend(loc="upper left", fontsize=8)
    total = sum(b["count"] for b in bins)
    ax_count.bar([b["lower"] for b in bins], [b["count"] / total for b in bins], width=width, align="edge",
                 edgecolor="black", color="C2")
    ax_count.set(xlabel="confidence (top probability)", ylabel="share", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def risk_coverage(coverage: list[float], risk: list[float], marks: dict[str, float], path: str | os.PathLike,
                  title: str = "") -> None:
    """The share wrong among the answers kept against the share kept, most sure first (reliability.risk_coverage);
    `marks`: label -> a coverage to draw as a vertical line (e.g. the coverage at 0.1% error)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(coverage, [100 * r for r in risk], color="C0", label="share wrong among the answers kept")
    for k, (label, x) in enumerate(marks.items()):
        ax.axvline(x, ls="--", color=f"C{k + 1}", label=f"{label}: {x:.1%} kept")
    ax.set(xlabel="share of answers kept (most sure first)", ylabel="wrong among the kept (%)", xlim=(0.8, 1.0),
           ylim=(0, max(0.5, 100 * max(risk, default=0) * 1.1)), title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
