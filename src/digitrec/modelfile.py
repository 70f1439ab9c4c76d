"""Model files: safetensors (no pickle, so loading one cannot run code) whose header carries the metadata
(architecture, recipe, epoch, test accuracy, data hashes), with a `.json` copy of that metadata beside it for
people and tools.  A run folder names its final model, else its last checkpoint (training/checkpoint.py
writes those); every file is written to a temporary name and renamed (files.atomic_write).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from digitrec.errors import DigitrecError
from digitrec.files import atomic_write, atomic_write_text
from digitrec.memory import keep_freed_memory
from digitrec.meta import META_KEY, ModelMeta
from digitrec.models import build_model

MODEL_FILE = "model.safetensors"
CHECKPOINTS = "checkpoints"


def save_model(path: str | os.PathLike, model: nn.Module, meta: ModelMeta) -> Path:
    """Write weights + metadata (`path` ends in .safetensors) and the metadata's .json copy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {META_KEY: meta.to_json()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    atomic_write_text(path.with_suffix(".json"), meta.to_json(indent=2) + "\n")
    return path


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A model file, or a run folder (its final model, else its last checkpoint)."""
    path = Path(path)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        last = last_checkpoint_dir(path)
        if last is not None:
            return last / MODEL_FILE
        raise DigitrecError(f"{path} holds no {MODEL_FILE} and no checkpoint", code="not_found")
    if not path.exists():
        raise DigitrecError(f"model file {path} not found", code="not_found")
    return path


def read_meta(path: str | os.PathLike) -> ModelMeta:
    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DigitrecError(f"{path} is not a digitrec model (not a readable safetensors file: {e})",
                             code="invalid_model") from None
    if META_KEY not in header:
        raise DigitrecError(f"{path} is a safetensors file without digitrec metadata", code="invalid_model")
    return ModelMeta.from_json(header[META_KEY], path)


def build_from_meta(meta: ModelMeta) -> nn.Module:
    if meta.architecture == "ensemble":
        from digitrec.models import Ensemble

        return Ensemble([build_model(name) for name in meta.members or []])
    return build_model(meta.architecture or "")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Load any digitrec model file (or run folder) in eval mode, ready to run; returns (model, metadata)."""
    keep_freed_memory()
    path = resolve_model_path(path)
    meta = read_meta(path)
    model = build_from_meta(meta)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DigitrecError(f"{path}: weights do not match architecture {meta.architecture!r} ({first})",
                             code="invalid_model") from None
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------------
# Training checkpoints.

def epoch_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-"))


def last_checkpoint_dir(run_dir: str | os.PathLike) -> Path | None:
    dirs = epoch_dirs(Path(run_dir))
    return dirs[-1] if dirs else None
