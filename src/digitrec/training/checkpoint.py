"""Resumable training checkpoints: `checkpoints/epoch-NNN/` holds the model file (modelfile.py) plus
`state.pt` (optimizer, scheduler, history), read with `torch.load(weights_only=True)`.  A checkpoint folder
is renamed into place only once complete, so a process killed at any moment leaves the previous one intact."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from digitrec.errors import DigitrecError
from digitrec.files import atomic_write
from digitrec.meta import ModelMeta
from digitrec.modelfile import CHECKPOINTS, MODEL_FILE, epoch_dirs, read_meta, save_model

STATE_FILE = "state.pt"


def save_checkpoint(run_dir: str | os.PathLike, epoch: int, model: nn.Module, meta: ModelMeta, state: dict) -> Path:
    """Write checkpoints/epoch-NNN atomically, then drop older checkpoints."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:03d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-epoch-{epoch:03d}-"))
    try:
        save_model(tmp / MODEL_FILE, model, meta)
        atomic_write(tmp / STATE_FILE, lambda p: torch.save(state, p))
        if final.exists():  # left by a run killed after this rename but before the clean-up below
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in epoch_dirs(Path(run_dir)):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelMeta, dict]:
    """(model state_dict, metadata, training state) of one checkpoint folder."""
    checkpoint_dir = Path(checkpoint_dir)
    meta = read_meta(checkpoint_dir / MODEL_FILE)
    weights = load_file(str(checkpoint_dir / MODEL_FILE))
    try:
        state = torch.load(checkpoint_dir / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = type(e).__name__
        raise DigitrecError(f"{checkpoint_dir / STATE_FILE}: not a loadable training state ({reason})",
                             code="invalid_model") from None
    return weights, meta, state
