"""The model as the server runs it.

A PyTorch model is served on onnxruntime when onnxruntime is installed and no backend was asked for: profiled
on the 2-vCPU Xeon, one served call of the model shipped then (with five test-time shifts, which today's
recipes no longer use; batch 1, one thread) took 4-6 ms on onnxruntime against 13-17 ms in PyTorch eager.  The
model is exported once (the graph is `inference.predictive_model`: shifts and temperature inside), checked
against PyTorch on the spot, and kept in a cache named by the model file's content hash, so later starts and
the other `--workers` load it in milliseconds.  `--backend torch` keeps PyTorch; an .onnx model is served as it is.

With no model named, the shipped model is served as its int8 export (weights/default.int8.onnx, made by
`digitrec export --quantize int8` from weights/default.safetensors and shipped beside it): a third of the float
graph's time a call (0.31 against 0.92 ms, one thread).  How it is made was chosen on validation data; each
shipped int8 file is checked against the trust benchmark like its float model (README, export).  Its metadata
names the float file it was made from (`quantized_from`, with its SHA-256); if that is not the shipped float
file, the int8 file is stale and the float model is served instead, with a warning.  So is it on an x86 CPU
without VNNI (AVX-512 VNNI, AVX-VNNI or AMX int8): there onnxruntime's AVX2 and AVX-512 kernels add uint8 x int8
products in pairs into 16 bits, which can saturate, and the figures measured on these machines (both kinds have
VNNI) need not hold.

Every model call runs on `threads` threads (default 1): a served call is a handful of images, a second thread
barely speeds it up, and on a busy machine the threads of one call wait on each other (PyTorch's OpenMP
threads spin; on the loaded 2 cores, 510 ms a call with 2 threads, 13 ms with 1).  With one thread the other
cores decode and preprocess the next requests meanwhile.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import numpy as np

from digitrec import __version__
from digitrec.errors import DigitrecError
from digitrec.files import sha256_file
from digitrec.inference.predict import Predictor, default_int8_path, default_model_path

log = logging.getLogger("digitrec.serve")
PARITY = 1e-4  # largest |logit difference| between the export and PyTorch on the check images


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digitrec" / "onnx"


def _installed(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _onnxruntime_installed() -> bool:
    """Whether a PyTorch model can be exported and served on onnxruntime (the `export` extra)."""
    return _installed("onnxruntime", "onnx", "onnxscript")


def cached_onnx(source: Path) -> Path | None:
    """The model file `source` exported to ONNX (once; then from the cache), or None when the export fails or
    disagrees with PyTorch (then PyTorch serves, and the log says why)."""
    target = cache_dir() / f"{sha256_file(source)[:32]}-{__version__}.onnx"
    if target.is_file():
        return target
    from digitrec.inference.backends import OnnxBackend, TorchBackend
    from digitrec.inference.export import export

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    try:
        export(source, "onnx", partial, data_dir=None, log=lambda m: None)
        # The export is checked here on images with strokes and on noise (export's own check needs MNIST).
        rng = np.random.default_rng(0)
        check = (rng.random((64, 1, 28, 28)) ** 4).astype(np.float32)
        worst = float(np.abs(TorchBackend(source).logits(check) - OnnxBackend(partial).logits(check)).max())
        if worst > PARITY:
            log.warning("serving on PyTorch: the ONNX export differs by %.1e", worst)
            partial.unlink(missing_ok=True)
            return None
        partial.replace(target)  # atomic: another worker never reads half a file
    except Exception as e:  # noqa: BLE001  (any failure to export: PyTorch serves, as it did before)
        log.warning("serving on PyTorch: could not export to ONNX (%s: %s)", type(e).__name__, str(e)[:200])
        partial.unlink(missing_ok=True)
        return None
    return target


VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # /proc/cpuinfo's names for the 8-bit dot products


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as Linux lists them (None where there is no /proc/cpuinfo to read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def int8_may_saturate(machine: str | None = None, flags: set[str] | None = None) -> bool:
    """Whether this is an x86 CPU known to lack VNNI (see the module's docstring).  Other architectures, and x86
    CPUs whose flags cannot be read, are not second-guessed."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    return machine in ("x86_64", "amd64", "i386", "i686") and flags is not None and not flags & VNNI_FLAGS


def shipped_int8() -> Predictor | None:
    """The shipped int8 export, when it loads, was made from the shipped float model and this CPU runs int8
    without saturating (else None, logged)."""
    path, source = default_int8_path(), default_model_path()
    if not path.is_file() or not source.is_file():
        return None
    if int8_may_saturate():
        log.warning("serving the float model: this x86 CPU has no VNNI, where int8 products can saturate")
        return None
    try:
        predictor = Predictor(path, "onnxruntime")
    except DigitrecError as e:  # (an onnxruntime too old for the file, a damaged installation)
        log.warning("serving the float model: %s", e)
        return None
    if (predictor.meta.quantized_from or {}).get("sha256") != sha256_file(source):
        log.warning("serving the float model: %s was not made from %s", path.name, source.name)
        return None
    return predictor


def load(model: str | None, backend: str | None, threads: int = 1) -> tuple[Predictor, Path]:
    """(the predictor that serves, the model file people gave: the shipped float file when none was named).
    See the module's docstring."""
    source = Path(model) if model else default_model_path()
    # (onnxruntime alone runs the shipped int8 file: the `serve` extra has it)
    int8 = shipped_int8() if model is None and backend != "torch" and _installed("onnxruntime") else None
    if int8 is not None:
        predictor = int8
    elif (backend is None or (backend == "onnxruntime" and model is None)) and source.suffix != ".onnx" \
            and _onnxruntime_installed():
        from digitrec.modelfile import resolve_model_path

        source = resolve_model_path(source)
        exported = cached_onnx(source)
        predictor = Predictor(exported, "onnxruntime") if exported else Predictor(source, "torch")
    else:
        predictor = Predictor(source, backend)
    if predictor.backend == "torch":
        import torch  # already loaded by the torch backend

        torch.set_num_threads(threads)
    else:
        from digitrec.inference.backends import OnnxBackend

        predictor.runner = OnnxBackend(predictor.path, threads=threads)
    return predictor, source
