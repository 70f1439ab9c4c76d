"""`digitrec ensemble`: several trained models as one model file that averages their probabilities, calibrated
like any model on the validation split (the held-out carve of the training images, data.split_validation)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from digitrec.data.datasets import load_split, say
from digitrec.errors import DigitrecError
from digitrec.inference.backends import select_device
from digitrec.inference.calibration import Calibration
from digitrec.meta import ModelMeta
from digitrec.modelfile import MODEL_FILE, load_model, resolve_model_path, save_model
from digitrec.models import Ensemble
from digitrec.training.calibrate import calibrate, calibration_digits

VALIDATION = 5000  # the default validation carve of the recipes


def build_ensemble(paths: list[str | os.PathLike], out: str | os.PathLike, data_dir: str | os.PathLike = "data",
                   device: str = "auto", log=say) -> Path:
    """Combine models of the same data set into one Ensemble model file; every command that takes a model
    takes it.  Its temperature is fitted on the validation split (said in its metadata when a member trained on
    those images)."""
    if len(paths) < 2:
        raise DigitrecError("an ensemble needs at least two models")
    dev = select_device(device)
    loaded = [load_model(p, dev) for p in paths]
    metas = [meta for _, meta in loaded]
    datasets = {meta.dataset for meta in metas}
    if len(datasets) > 1:
        raise DigitrecError(f"the models were trained on different data sets: {', '.join(sorted(datasets))}")
    if any(meta.architecture == "ensemble" for meta in metas):
        raise DigitrecError("ensembles of ensembles are not supported: list their member models instead")
    first = metas[0]
    meta = ModelMeta(architecture="ensemble", members=[m.architecture for m in metas],
                     member_files=[resolve_model_path(p).name for p in paths],
                     member_test_accuracy=[m.test_accuracy for m in metas],
                     recipe={"tta": all(m.uses_tta for m in metas)}, dataset=first.dataset, classes=first.classes,
                     data_sha256=first.data_sha256)
    model = Ensemble([m for m, _ in loaded]).eval()
    # The members' own validation carve (the same seeded carve for every recipe of one size); members that
    # held none out are calibrated on a carve they trained on, and the metadata says so.
    train_split = load_split(meta.dataset, data_dir, train=True)
    held_out = [(m.recipe or {}).get("validation", 0) for m in metas]
    sizes = set(held_out)
    size = sizes.pop() if len(sizes) == 1 and 0 not in sizes else min(VALIDATION, len(train_split) // 5)
    validation = calibration_digits(train_split, size)
    calibration, summary = calibrate(model, meta, validation.to(dev), device=dev)
    seen = [str(p) for p, n in zip(paths, held_out) if n != size]
    if seen:
        calibration = replace(calibration, fitted_on=f"{calibration.fitted_on} (seen in training by {', '.join(seen)})")
    # The members' own not-a-digit thresholds carry over only as their most cautious one.
    threshold = max(Calibration.from_meta(m).not_a_digit_below for m in metas)
    meta = replace(meta, calibration=replace(calibration, not_a_digit_below=threshold).to_dict(),
                   calibration_validation=summary)
    log(f"ensemble of {len(paths)}: temperature {calibration.temperature:.3f}, validation ECE "
        f"{summary['ece_before']:.2%} -> {summary['ece']:.2%}")
    return save_model(Path(out) / MODEL_FILE, model, meta)
