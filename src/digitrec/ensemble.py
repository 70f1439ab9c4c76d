"""`digitrec ensemble`: several trained models as one model file that averages their probabilities, calibrated
like any model on the validation split (the held-out carve of the training images, data.split_validation)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from .calibration import calibrate
from .checkpoint import MODEL_FILE, load_model, resolve_model_path, save_model
from .data import load_split, say, split_validation
from .errors import DigitrecError
from .inference import select_device
from .models import Ensemble

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
    datasets = {meta.get("dataset", "mnist") for _, meta in loaded}
    if len(datasets) > 1:
        raise DigitrecError(f"the models were trained on different data sets: {', '.join(sorted(datasets))}")
    if any(meta.get("architecture") == "ensemble" for _, meta in loaded):
        raise DigitrecError("ensembles of ensembles are not supported: list their member models instead")
    first = loaded[0][1]
    dataset = first.get("dataset", "mnist")
    meta = {"format": 1, "architecture": "ensemble", "members": [m["architecture"] for _, m in loaded],
            "member_files": [resolve_model_path(p).name for p in paths],
            "member_test_accuracy": [m.get("test_accuracy") for _, m in loaded],
            "recipe": {"tta": all(m.get("recipe", {}).get("tta", False) for _, m in loaded)},
            "dataset": dataset, "classes": first.get("classes"), "data_sha256": first.get("data_sha256"),
            "test_accuracy": None}
    model = Ensemble([m for m, _ in loaded]).eval()
    # The members' own validation carve (the same seeded carve for every recipe of one size); members that
    # held none out are calibrated on a carve they trained on, and the metadata says so.
    train_split = load_split(dataset, data_dir, train=True)
    sizes = {m.get("recipe", {}).get("validation", 0) for _, m in loaded}
    size = sizes.pop() if len(sizes) == 1 and 0 not in sizes else min(VALIDATION, len(train_split) // 5)
    _, validation = split_validation(train_split, size)
    calibration, summary = calibrate(model, meta, validation.to(dev), device=dev)
    seen = [str(p) for p, (_, m) in zip(paths, loaded) if m.get("recipe", {}).get("validation", 0) != size]
    if seen:
        calibration = replace(calibration, fitted_on=f"{calibration.fitted_on} (seen in training by {', '.join(seen)})")
    # The members' own not-a-digit thresholds carry over only as their most cautious one.
    threshold = max((m.get("calibration") or {}).get("not_a_digit_below", 0.0) for _, m in loaded)
    meta.update(calibration={**calibration.to_dict(), "not_a_digit_below": threshold}, calibration_validation=summary)
    log(f"ensemble of {len(paths)}: temperature {calibration.temperature:.3f}, validation ECE "
        f"{summary['ece_before']:.2%} -> {summary['ece']:.2%}")
    return save_model(Path(out) / MODEL_FILE, model, meta)
