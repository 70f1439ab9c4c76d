"""Knowledge distillation (Hinton et al. 2015): `digitrec distill TEACHER` trains one model of shippable size on
the soft targets of a bigger teacher, usually an ensemble (`digitrec ensemble`).

The training loop is train.train's, given `teacher=`; this module holds what distillation adds to it: the
teacher, checked and fingerprinted once, and the loss on its soft targets.

The soft targets come from the teacher's raw network output (for an ensemble, the log of its members' mean
probability), not from its calibrated predictions: the calibration temperature was fitted for the teacher's
own confidence on held-out data, while the distillation temperature is a training setting of the student's
recipe (distill_temperature), and dividing twice would only blur the two.  No test-time shifts either: the
teacher sees the same augmented images as the student, one network call each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.errors import DigitrecError
from digitrec.files import sha256_file
from digitrec.modelfile import load_model, resolve_model_path


@dataclass(frozen=True)
class ModelFile:
    """A model file another run starts from or learns from (resolved from a run folder) and that file's SHA-256.
    The fingerprint goes into config.json and the new model's metadata."""

    path: Path
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> ModelFile:
        path = resolve_model_path(path)  # a run folder's model.safetensors (else its last checkpoint)
        try:
            return cls(path, sha256_file(path))
        except OSError as e:
            raise DigitrecError(f"cannot read {path}: {e.strerror or e}", code="not_found") from None

    def to_dict(self) -> dict:
        """As recorded: the file name only (folders differ between machines; the SHA-256 names the file)."""
        return {"file": self.path.name, "sha256": self.sha256}


class Teacher(ModelFile):
    """Which model teaches.  A resumed run must name the same teacher (check_resumed)."""

    def load(self, dataset: str, device: torch.device) -> nn.Module:
        """The teacher in eval mode on `device`, refused in one line unless it knows `dataset`'s classes."""
        model, meta = load_model(self.path, device)
        if meta.dataset != dataset:
            raise DigitrecError(f"teacher {self.path} was trained on {meta.dataset}, not {dataset}: "
                                "a student learns only from a teacher of its own data set")
        for p in model.parameters():
            p.requires_grad_(False)
        return model.to(memory_format=torch.channels_last)


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) per image, times T^2 so that its gradients keep the
    size of the hard-label loss's whatever T (Hinton et al. 2015, section 2)."""
    return F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def check_resumed(recorded: dict | None, teacher: Teacher | None, run_dir: Path) -> None:
    """A resumed run continues with the teacher it was started with (or with none, if none)."""
    if recorded is None and teacher is None:
        return
    if recorded is None:
        raise DigitrecError(f"{run_dir} was trained without a teacher; resume it with `digitrec train --resume`")
    if teacher is None:
        raise DigitrecError(f"{run_dir} is distilled from {recorded['file']}: resume it with "
                            f"`digitrec distill {recorded['file']} --resume {run_dir}`")
    if teacher.sha256 != recorded["sha256"]:
        raise DigitrecError(f"{run_dir} is distilled from {recorded['file']} (SHA-256 {recorded['sha256'][:12]}...), "
                            f"not from {teacher.path} ({teacher.sha256[:12]}...): resume it with the same teacher")
