"""TensorBoard event files for a training run (`digitrec train --tensorboard`, `digitrec ablate --tensorboard`).

A hook for train(on_epoch=...): per epoch the losses, accuracies, learning rate, images per second and conv1's
filters as an image; after the last epoch the recipe and seed as hparams with the final metrics, so
`tensorboard --logdir runs` compares runs side by side.  The events go into the run folder itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from digitrec.errors import missing_dependency

# metrics row key -> TensorBoard tag
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/validation", "test_loss": "loss/test",
           "val_accuracy": "accuracy/validation", "test_accuracy": "accuracy/test", "lr": "lr",
           "images_per_second": "images_per_second"}


def require_tensorboard() -> None:
    """One line naming the extra when TensorBoard is not installed (checked before any training starts)."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs the package)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise missing_dependency("tensorboard", "learn") from None


class TensorBoardLog:
    def __init__(self, run_dir: str | os.PathLike) -> None:
        require_tensorboard()
        self.run_dir = Path(run_dir)
        self.writer = None  # opened at the first epoch, when train() has made the folder

    def on_epoch(self, row: dict, model: nn.Module) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is None:
            self.writer = SummaryWriter(log_dir=str(self.run_dir))
        epoch = row["epoch"]
        for key, tag in SCALARS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], epoch)
        self.writer.add_image("conv1_filters", conv1_filter_grid(model), epoch)
        config = json.loads((self.run_dir / "config.json").read_text())
        if epoch == config["recipe"]["epochs"]:
            self._hparams(config, row)
        self.writer.flush()

    def _hparams(self, config: dict, row: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = {"seed": config["seed"], "dataset": config["dataset"]}
        for key, value in config["recipe"].items():
            if isinstance(value, dict):  # augment
                params.update({f"{key}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
                               for k, v in value.items()})
            else:
                params[key] = value
        metrics = {f"hparam/{k}": row[k] for k in ("val_accuracy", "test_accuracy", "train_loss") if k in row}
        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def conv1_filter_grid(model: nn.Module, cell: int = 20) -> torch.Tensor:
    """The first convolution's filters side by side as one [3, H, W] image, each filter scaled to [0, 1] on its
    own and enlarged `cell`/kernel times so a 5x5 kernel is visible."""
    from torchvision.utils import make_grid

    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    w = conv.weight.detach().float().cpu()[:, :1]  # [C_out, 1, k, k]: the first input channel
    lo, hi = w.amin((1, 2, 3), keepdim=True), w.amax((1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    w = torch.nn.functional.interpolate(w, scale_factor=max(1, cell // w.shape[-1]), mode="nearest")
    return make_grid(w, nrow=8, padding=2, pad_value=0.5)
