"""Digits in people's own images: `predict` (one digit per image) and `read` (a line of digits per image).

Both take image bytes through `preprocess`, batch the 28x28 results through one `Predictor`, and return plain
dicts (the JSON records of the CLI and the server).  A bad image gets an `error` in its record; the others
are still processed.
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from digitrec.errors import DigitrecError
from digitrec.imaging.decode import MAX_BYTES, TOO_LARGE
from digitrec.imaging.prepare import prepare, to_png
from digitrec.inference.calibration import describe, softmax

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NO_INK = "no ink found: the image is blank or uniform"


def default_model_path() -> Path:
    """The model that ships with the package (see README: how it was trained)."""
    return Path(str(resources.files("digitrec") / "weights" / "default.safetensors"))


def default_int8_path() -> Path:
    """The shipped model's int8 export (`digitrec export ... --quantize int8`; README, The shipped model): what
    `digitrec serve` runs when no model is given."""
    return Path(str(resources.files("digitrec") / "weights" / "default.int8.onnx"))


class Predictor:
    """A loaded model (PyTorch, or an exported ONNX file run by onnxruntime) that maps 28x28 images to
    calibrated probabilities over the 10 digits, and those to verdicts (inference.Calibration)."""

    def __init__(self, model: str | os.PathLike | None = None, backend: str | None = None, device: str = "cpu",
                 batch_size: int = 256, precision: str = "fp32") -> None:
        """precision: fp32, bf16 or auto (inference.inference_precision), for PyTorch models."""
        from digitrec.inference.backends import load_backend

        self.path = Path(model) if model else default_model_path()
        self.runner = load_backend(self.path, backend, device, precision)
        self.backend, self.meta, self.calibration = self.runner.name, self.runner.meta, self.runner.calibration
        self.batch_size = batch_size
        # One model call at a time: callers in several threads (the server) still decode and preprocess in
        # parallel, and the model's own intra-op threads are not oversubscribed.
        self.lock = threading.Lock()

    def probabilities(self, digits: list[np.ndarray]) -> np.ndarray:
        """[N] float32 28x28 images in [0, 1] -> [N, 10] calibrated probabilities.  Thread-safe."""
        if not digits:
            return np.zeros((0, 10), np.float32)
        with self.lock:
            return np.concatenate([softmax(self.runner.logits(np.stack(digits[s:s + self.batch_size])[:, None]
                                                              .astype(np.float32)))
                                   for s in range(0, len(digits), self.batch_size)])

    def describe(self, probs: np.ndarray, topk: int = 3) -> dict:
        """digit, confidence, topk, uncertain, verdict for one image's probabilities."""
        return describe(probs, self.calibration, topk)


def empty_record(path: str, error: str | None, code: str = "invalid_image") -> dict:
    """The record of an image with no prediction: an error (with its code), or no ink."""
    verdict = "no_ink" if code == "no_ink" else "error"
    return {"path": path, "digit": None, "confidence": 0.0, "topk": [], "uncertain": True, "verdict": verdict,
            "error": error, "error_code": code}


@dataclass
class Source:
    name: str  # what the user sees: the path, or "-" for standard input
    path: Path | None  # None: read standard input

    def read(self) -> bytes:
        if self.path is None:
            return sys.stdin.buffer.read(MAX_BYTES + 1)
        try:
            if self.path.stat().st_size > MAX_BYTES:
                raise DigitrecError(f"{TOO_LARGE} ({self.path.stat().st_size} bytes; the limit is {MAX_BYTES})",
                                    code="too_large")
            return self.path.read_bytes()
        except FileNotFoundError:
            raise DigitrecError("file not found", code="not_found") from None
        except IsADirectoryError:
            raise DigitrecError("is a directory") from None
        except PermissionError:
            raise DigitrecError("permission denied") from None


def expand(specs: list[str]) -> list[Source]:
    """Files, folders (recursively: image files by suffix), globs, and '-' for image bytes on stdin."""
    sources = []
    for spec in specs:
        if spec == "-":
            sources.append(Source("-", None))
            continue
        matches = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
        if not matches:
            sources.append(Source(spec, Path(spec)))  # reported as "file not found"
        for match in matches:
            p = Path(match)
            if p.is_dir():
                sources += [Source(str(f), f) for f in sorted(p.rglob("*"))
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            else:
                sources.append(Source(match, p))
    return sources


def predict_images(items: list[tuple[str, bytes]], predictor: Predictor, topk: int = 3,
                   save_preprocessed: str | os.PathLike | None = None, include_image: bool = False,
                   first_index: int = 0) -> list[dict]:
    """[(name, image bytes)] -> one record per image, in order.  save_preprocessed writes what the model saw
    as DIR/<first_index + n>-<name>.png."""
    return _predicted([name for name, _ in items], [_prepared_digit(data) for _, data in items], predictor, topk,
                      save_preprocessed, include_image, first_index)


def _prepared_digit(data: bytes) -> tuple[np.ndarray | None, str | None, str | None]:
    """Image bytes -> (its 28x28, None, None), or (None, why not, error code)."""
    try:
        digits = prepare(data).digits
    except DigitrecError as e:
        return None, str(e), e.code
    return (digits[0], None, None) if len(digits) else (None, NO_INK, "no_ink")


def _predicted(names: list[str], prepared: list[tuple], predictor: Predictor, topk: int,
               save_preprocessed: str | os.PathLike | None, include_image: bool, first_index: int) -> list[dict]:
    """Names and their _prepared_digit results -> records: one model call for the digits among them."""
    records = [{"path": name} if digit is not None else empty_record(name, error, code)
               for name, (digit, error, code) in zip(names, prepared)]
    where = [i for i, (digit, _, _) in enumerate(prepared) if digit is not None]
    digits = [prepared[i][0] for i in where]
    for i, probs, digit in zip(where, predictor.probabilities(digits), digits):
        records[i].update(predictor.describe(probs, topk), error=None, error_code=None)
        if include_image:
            records[i]["image"] = to_png(digit)
        if save_preprocessed:
            out = Path(save_preprocessed)
            out.mkdir(parents=True, exist_ok=True)
            name = Path(records[i]["path"]).stem or "stdin"
            (out / f"{first_index + i:05d}-{name}.png").write_bytes(to_png(digit))
    return records


def read_images(items: list[tuple[str, bytes]], predictor: Predictor, annotate: str | os.PathLike | None = None,
                first_index: int = 0, several: bool | None = None) -> list[dict]:
    """[(name, image bytes of a line of digits)] -> [{"path", "text", "digits": [...], "error"}].  annotate
    draws the boxes into that file, or into OUT-<first_index + n>.png when there are several inputs."""
    several = len(items) > 1 if several is None else several
    records = []
    for index, (name, data) in enumerate(items):
        try:
            prepared = prepare(data, line=True, keep_grey=bool(annotate))
        except DigitrecError as e:
            records.append({"path": name, "text": "", "digits": [], "error": str(e), "error_code": e.code})
            continue
        if not len(prepared.digits):
            records.append({"path": name, "text": "", "digits": [], "error": NO_INK, "error_code": "no_ink"})
            continue
        probs = predictor.probabilities(list(prepared.digits))
        keep = best_readings(np.array([p.max() for p in probs]), prepared.readings)
        digits = []
        for p, box in zip([probs[i] for i in keep], [prepared.boxes[i] for i in keep]):
            found = predictor.describe(p, 1)
            digits.append({"digit": found["digit"], "confidence": found["confidence"], "verdict": found["verdict"],
                           "box": list(box)})
        # A mark that is not a digit keeps its box and reads as "?".
        text = "".join("?" if d["digit"] is None else str(d["digit"]) for d in digits)
        records.append({"path": name, "text": text, "digits": digits, "error": None, "error_code": None})
        if annotate:
            target = Path(annotate)
            if several:
                target = target.with_name(f"{target.stem}-{first_index + index}{target.suffix or '.png'}")
            draw_boxes(prepared.grey, prepared.scale, digits, target)
    return records


# A reading pays this much log-probability for each digit beyond its first: cutting must make the piece about 10%
# more likely read right than fewer digits do.  Chosen with segment.TOO_WIDE on lines of validation digits
# (benchmarks/validation_lines.py): 0 cut some wide single digits in two (lines with wide digits 98.5% against
# 99.0%), 0.2 lost touching lines (43% against 44.5%).
SPLIT_COST = 0.1


def best_readings(top: np.ndarray, readings: tuple[tuple[tuple[int, ...], ...], ...]) -> list[int]:
    """Which of a line's candidate digits to keep: per piece of ink, the reading whose digits are most likely all
    read right, the product of their (calibrated) top probabilities, less SPLIT_COST per extra digit.  A wide 5
    read whole (0.99) beats its body and flag read apart (0.99 x 0.1, the flag "not a digit"); two touching
    digits read whole look like the side-by-side pairs the model was taught are not digits, and lose to the two
    read apart.  top: [N] top probabilities; readings: Prepared.readings (empty: every candidate is a digit)."""
    if not readings:
        return list(range(len(top)))
    log_top = np.log(np.maximum(top, 1e-12))
    return [i for ways in readings
            for i in max(ways, key=lambda way: log_top[list(way)].sum() - SPLIT_COST * (len(way) - 1))]


def draw_boxes(grey: np.ndarray, scale: float, found: list[dict], path: Path) -> None:
    """The image (the analysed copy, brought back to the original size) with a box per digit record: the digit
    above it ("?" for not a digit), its confidence below (green: digit, orange: uncertain, red: not a digit)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB")
    if scale != 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    size = max(12, min(40, image.height // 8))
    canvas = Image.new("RGB", (image.width, image.height + 2 * size + 8), "white")
    canvas.paste(image, (0, size + 4))
    draw = ImageDraw.Draw(canvas)
    colours = {"digit": (0, 150, 0), "uncertain": (230, 110, 0), "not_a_digit": (210, 0, 0)}
    for record in found:
        (x0, y0, x1, y1), confidence = record["box"], record["confidence"]
        digit = "?" if record["digit"] is None else record["digit"]
        colour = colours[record["verdict"]]
        y0, y1 = y0 + size + 4, y1 + size + 4
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        draw.text(((x0 + x1) / 2, y0 - 2), str(digit), fill=colour, font_size=size, anchor="md")
        draw.text(((x0 + x1) / 2, y1 + 2), f"{confidence:.2f}", fill=colour, font_size=max(9, size * 2 // 3),
                  anchor="ma")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


CHUNK = 1024  # files read and predicted together: memory stays bounded for folders of any size


def _in_chunks(specs: list[str], run, failed_record) -> list[dict]:
    """Expand `specs`, read the files CHUNK at a time, run(items, offset of the chunk, whether there are several
    sources) on the readable ones; records come back in input order, an unreadable file's record made by
    failed_record(name, message, error code)."""
    sources, records = expand(specs), []
    for start in range(0, len(sources), CHUNK):
        items, slots = [], []
        for source in sources[start:start + CHUNK]:
            try:
                items.append((source.name, source.read()))
                slots.append(None)
            except DigitrecError as e:
                slots.append(failed_record(source.name, str(e), e.code))
        done = iter(run(items, start, len(sources) > 1))
        records += [slot if slot is not None else next(done) for slot in slots]
    return records


PARALLEL_FROM = 512  # images: below this one process does all (starting workers costs a second)
SUB_CHUNK = 128  # images a preparing worker reads and prepares at a time
AHEAD = 32  # sub-chunks in flight per worker (4,096 images, 13 MB each): the workers go on while PyTorch loads


def one_thread_per_call(predictor: Predictor) -> Predictor:
    """Run every model call of `predictor` on one thread, while `predict`'s preparing processes work beside it:
    their threads would otherwise fight over the cores (PyTorch's OpenMP threads spin; on 2 loaded cores a
    served call took 510 ms with 2 threads, 13 ms with 1)."""
    if predictor.backend == "torch":
        import torch  # already loaded by the torch backend

        torch.set_num_threads(1)
    else:
        from digitrec.inference.backends import OnnxBackend

        predictor.runner = OnnxBackend(predictor.path, threads=1)
    return predictor


def parallel_workers(images: int, device: str = "cpu") -> int:
    """How many preparing processes `predict` uses by default: one per core for large folders, else none."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 8) if images >= PARALLEL_FROM and cores > 1 and device == "cpu" else 1


def _prepare_sources(sources: list[Source]) -> list[tuple[np.ndarray | None, str | None, str | None]]:
    """In a preparing worker: read and prepare each source (_prepared_digit's results, in order)."""
    out = []
    for source in sources:
        try:
            out.append(_prepared_digit(source.read()))
        except DigitrecError as e:
            out.append((None, str(e), e.code))
    return out


def predict_paths(specs: list[str], predictor: Predictor | Callable[[], Predictor], topk: int = 3,
                  save_preprocessed: str | os.PathLike | None = None, workers: int = 0) -> list[dict]:
    """`digitrec predict`: paths, folders, globs or '-' -> one record per image, in order.

    `predictor` may be a function that loads one: it is then called once the preparing workers have started,
    so that loading PyTorch (two seconds) overlaps their work.  workers > 1: that many processes read and
    prepare the images (the cost of a small image is mostly preparing it: about 0.5 ms for a 56x56 PNG against
    about 0.2 ms for the shipped model in bf16 (batch 256, one thread: `make bench-infer`)), SUB_CHUNK at a
    time, while this process runs the model on one thread, then on every core once every image is prepared;
    0 (the default): one per core (up to 8) for large folders (parallel_workers).  The records, and the files
    --save-preprocessed writes (numbered by the image's place among all inputs), are the same as in one
    process."""
    sources = expand(specs)
    device = str(getattr(getattr(predictor, "runner", None), "device", "cpu"))
    workers = parallel_workers(len(sources), device) if workers == 0 else workers
    load = (lambda: predictor) if isinstance(predictor, Predictor) else predictor
    if workers <= 1 or any(source.path is None for source in sources):  # (standard input is this process's)
        model = load()
        return [record for start in range(0, len(sources), CHUNK)
                for record in _predicted([source.name for source in sources[start:start + CHUNK]],
                                         _prepare_sources(sources[start:start + CHUNK]), model, topk,
                                         save_preprocessed, False, start)]
    import collections
    import concurrent.futures
    import multiprocessing

    submitted = iter(range(0, len(sources), SUB_CHUNK))
    # spawn: a fresh interpreter per worker (forking a process whose PyTorch threads have started can hang);
    # the workers import only what preparing needs (no PyTorch).
    with concurrent.futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn")) as pool:
        pending = collections.deque()

        def submit(count: int) -> None:
            for start in itertools.islice(submitted, count):
                pending.append((start, pool.submit(_prepare_sources, sources[start:start + SUB_CHUNK])))

        model = runner_before = threads_before = None
        try:
            submit(AHEAD * workers)
            model = load()
            runner_before, threads_before = model.runner, _torch_threads(model)
            one_thread_per_call(model)
            records, cores_free = [], False
            while pending:
                start, job = pending.popleft()
                submit(1)
                if not cores_free and len(pending) < AHEAD * workers and all(j.done() for _, j in pending):
                    # Every image is prepared (the workers are idle): the rest of the model's work gets the cores.
                    cores_free = model.backend == "torch"
                    if cores_free:
                        import torch

                        torch.set_num_threads(threads_before)
                names = [source.name for source in sources[start:start + SUB_CHUNK]]
                records += _predicted(names, job.result(), model, topk, save_preprocessed, False, start)
            return records
        except concurrent.futures.process.BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            raise DigitrecError("a process preparing images died (out of memory?); try --workers 1",
                                code="internal") from None
        except BaseException:  # (a bad model file, a full disk, Ctrl-C: queued images are dropped, not waited for)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if model is not None:  # the caller's Predictor, and PyTorch's process-wide thread count, as they were
                model.runner = runner_before
                if threads_before:
                    import torch

                    torch.set_num_threads(threads_before)


def _torch_threads(predictor: Predictor) -> int | None:
    if predictor.backend != "torch":
        return None
    import torch  # already loaded by the torch backend

    return torch.get_num_threads()


def read_paths(specs: list[str], predictor: Predictor, annotate: str | os.PathLike | None = None) -> list[dict]:
    """`digitrec read`: paths, folders, globs or '-' -> one line-reading record per image, in order."""
    return _in_chunks(specs, lambda items, first, several: read_images(items, predictor, annotate, first, several),
                      lambda name, error, code: {"path": name, "text": "", "digits": [], "error": error,
                                                 "error_code": code})


# ---------------------------------------------------------------------------------------------------
# Output formats.

def format_records(records: list[dict], fmt: str, kind: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2)
    if kind == "predict":
        columns = ["path", "digit", "verdict", "confidence", "topk", "uncertain", "error"]
    else:
        columns = ["path", "text", "digits", "error"]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for r in records:
            writer.writerow([json.dumps(r.get(c)) if isinstance(r.get(c), list) else
                             ("" if r.get(c) is None else r.get(c)) for c in columns])
        return buffer.getvalue().rstrip("\n")
    lines = []
    for r in records:
        if r.get("error"):
            lines.append(f"{r['path']}: error: {r['error']}")
        elif kind == "predict":
            top = "  ".join(f"{d}:{p:.3f}" for d, p in r["topk"])
            said = {"digit": "", "uncertain": "  (uncertain)", "not_a_digit": "  (not a digit)"}[r["verdict"]]
            lines.append(f"{r['path']}: {'-' if r['digit'] is None else r['digit']}  confidence "
                         f"{r['confidence']:.3f}  top: {top}{said}")
        else:
            confidences = " ".join(f"{d['confidence']:.2f}" for d in r["digits"])
            lines.append(f"{r['path']}: {r['text']}  (confidences {confidences})")
    return "\n".join(lines)
