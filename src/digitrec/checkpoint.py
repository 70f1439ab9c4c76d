"""Model files and resumable training checkpoints.

A model file is safetensors (no pickle, so loading it cannot run code) whose header carries the metadata
(architecture, recipe, epoch, test accuracy, data hashes); a `.json` copy of that metadata sits beside it for
people and tools.  A training checkpoint is a folder `checkpoints/epoch-NNN/` holding the model file plus
`state.pt` (optimizer, scheduler, history), read with `torch.load(weights_only=True)`.  Every file is written
to a temporary name and renamed, and a checkpoint folder is renamed into place only once complete, so a
process killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .errors import DigitrecError
from .memory import keep_freed_memory
from .meta import META_KEY, ModelMeta
from .models import build_model

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CHECKPOINTS = "checkpoints"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are meant to be shared
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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
        from .models import Ensemble

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

def _epoch_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-"))


def last_checkpoint_dir(run_dir: str | os.PathLike) -> Path | None:
    dirs = _epoch_dirs(Path(run_dir))
    return dirs[-1] if dirs else None


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
    for old in _epoch_dirs(Path(run_dir)):
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
