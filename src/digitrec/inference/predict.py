"""Digits in people's own images: `predict` (one digit per image) and `read` (a line of digits per image).

Both take image bytes through `preprocess`, batch the 28x28 results through one `Predictor`, and return plain
dicts (the JSON records of the CLI and the server).  A bad image gets an `error` in its record; the others
are still processed.
"""

from __future__ import annotations

import copy
import glob
import itertools
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
from digitrec.imaging.prepare import Prepared, prepare, to_png
from digitrec.inference.calibration import describe, number_confidence, softmax
from digitrec.inference.records import NO_INK, DigitReading, LineReading, NumberReading, Prediction, Reading

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def default_model_path() -> Path:
    """The model that ships with the package (docs/model-card.md: how it was trained)."""
    return Path(str(resources.files("digitrec") / "weights" / "default.safetensors"))


def default_reader_path() -> Path:
    """The sequence reader that ships with the package (`digitrec train-reader`; its ONNX export): what `read`
    and the server use for numbers whose digits may touch."""
    return Path(str(resources.files("digitrec") / "weights" / "reader.onnx"))


def load_reader(path: str | os.PathLike | None = None, threads: int | None = None):
    """The sequence reader (inference.backends.SequenceBackend: an .onnx file run by onnxruntime, which the
    serve and export extras install), or None when there is no file or no onnxruntime: touching digits are
    then cut, as `read --cut-only` does."""
    import importlib.util

    from digitrec.inference.backends import SequenceBackend

    path = Path(path) if path else default_reader_path()
    if not path.is_file() or importlib.util.find_spec("onnxruntime") is None:
        return None
    return SequenceBackend(path, threads)


def default_int8_path() -> Path:
    """The shipped model's int8 export (`digitrec export ... --quantize int8`; docs/model-card.md): what
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

    def answering(self, max_error: float | None = None, coverage: float | None = None,
                  sets: bool = False) -> Predictor:
        """This predictor as one request asks to be answered (inference.Calibration.answering): answers flagged
        uncertain under the threshold that keeps at most `max_error` of the validation digits' answers wrong,
        and prediction sets (`sets`, or a `coverage`).  Shares the loaded model (and its lock); this one is
        unchanged."""
        view = copy.copy(self)
        view.calibration = self.calibration.answering(max_error, coverage, sets)
        return view

    def describe(self, probs: np.ndarray, topk: int = 3) -> dict:
        """digit, confidence, topk, uncertain, verdict for one image's probabilities."""
        return describe(probs, self.calibration, topk)


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
               save_preprocessed: str | os.PathLike | None, include_image: bool, first_index: int) -> list[Prediction]:
    """Names and their _prepared_digit results -> records: one model call for the digits among them."""
    where = [i for i, (digit, _, _) in enumerate(prepared) if digit is not None]
    records: list[Prediction] = [Prediction.failed(name, DigitrecError(error, code)) if digit is None else None
                                 for name, (digit, error, code) in zip(names, prepared)]
    digits = [prepared[i][0] for i in where]
    for i, probs, digit in zip(where, predictor.probabilities(digits), digits):
        records[i] = Prediction.of(names[i], probs, predictor.calibration, topk,
                                   image=to_png(digit) if include_image else None)
        if save_preprocessed:
            out = Path(save_preprocessed)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{first_index + i:05d}-{Path(names[i]).stem or 'stdin'}.png").write_bytes(to_png(digit))
    return records


def read_images(items: list[tuple[str, bytes]], predictor: Predictor, annotate: str | os.PathLike | None = None,
                first_index: int = 0, several: bool | None = None, digits_only: bool = False,
                reader=None) -> list[Reading]:
    """[(name, image bytes of a sheet of numbers)] -> one Reading each.  annotate draws the lines, numbers and
    digits into that file, or into OUT-<first_index + n>.png when there are several inputs.  digits_only: the
    text leaves the separators out.  reader: a sequence reader (load_reader) for the numbers whose digits may
    touch; without one they are cut into digits."""
    several = len(items) > 1 if several is None else several
    records = []
    for index, (name, data) in enumerate(items):
        try:
            prepared = prepare(data, line=True, keep_grey=bool(annotate), strips=reader is not None)
            if not len(prepared.digits) and not prepared.plan:
                raise DigitrecError(NO_INK, code="no_ink")
        except DigitrecError as e:
            records.append(Reading.failed(name, e))
            continue
        probs = predictor.probabilities(list(prepared.digits))
        strips = reader.read(list(prepared.strips)) if reader is not None and prepared.strips else None
        reading = Reading(name, read_plan(prepared, probs, predictor.calibration, digits_only, strips))
        records.append(reading)
        if annotate:
            target = Path(annotate)
            if several:
                target = target.with_name(f"{target.stem}-{first_index + index}{target.suffix or '.png'}")
            draw_reading(prepared.grey, prepared.scale, reading, target)
    return records


def read_plan(prepared: Prepared, probs: np.ndarray, calibration, digits_only: bool = False,
              strips: list | None = None) -> tuple[LineReading, ...]:
    """A prepared sheet and its candidates' probabilities -> its lines of numbers.  strips: the sequence
    reader's digits of each of prepared.strips (SequenceBackend.read); without them such runs are cut."""
    log_top = np.log(np.maximum(probs.max(1), 1e-12)) if len(probs) else np.zeros(0)
    plan = prepared.plan or ((tuple(range(len(prepared.readings))),),)

    def digit(i: int) -> DigitReading:
        found = describe(probs[i], calibration, 1)
        return DigitReading(found["digit"], found["confidence"], found["verdict"], tuple(prepared.boxes[i]),
                            found["set"])

    def cut_of(pieces: tuple) -> list[tuple[int | None, float]]:  # the digits the cutter reads in these pieces
        kept = [i for piece in pieces for i in best_reading(log_top, prepared.readings[piece])]
        return [(None if calibration.verdict(float(probs[i].max())) == "not_a_digit" else int(probs[i].argmax()),
                 float(probs[i].max())) for i in kept]

    lines = []
    for numbers in plan:
        read_numbers = []
        for parts in numbers:
            parts = _runs_read_whole(parts, strips, cut_of, calibration.not_a_digit_below)
            parts = _undo_slashes(parts, prepared, log_top, probs, strips)
            text, found, boxes, cut = "", [], [], False
            for part in parts:
                if _read_whole(part):  # a run the sequence reader read whole
                    cut = True
                    for d in _strip_digits(prepared.strips[part[1]], strips[part[1]], part[3], calibration):
                        found.append(d)
                        text += str(d.digit)
                        boxes.append(d.box)
                elif isinstance(part, int):
                    cut |= len(prepared.readings[part]) > 1  # a wide piece: touching digits, maybe
                    for i in best_reading(log_top, prepared.readings[part]):
                        found.append(digit(i))
                        text += "?" if found[-1].digit is None else str(found[-1].digit)
                        boxes.append(found[-1].box)
                else:
                    text += "" if digits_only else part[0]
                    boxes.append(tuple(part[1]))
            if boxes:
                confidence = number_confidence([d.confidence for d in found], cut)
                read_numbers.append(NumberReading(text, _union(boxes), tuple(found), confidence, cut))
        if read_numbers:
            lines.append(LineReading(tuple(read_numbers), _union([n.box for n in read_numbers])))
    return tuple(lines)


# The sequence reader's probability for a digit it is sure of.  Its probabilities are not calibrated, and the
# rule must not move with a request's --max-error, so this is fixed: about the shipped classifier's own
# uncertain threshold (0.905).
READER_SURE = 0.9


def _runs_read_whole(parts: tuple, strips: list | None, cut_of: Callable[[tuple], list[tuple[int | None, float]]],
                     not_a_digit_below: float) -> tuple:
    """A run the sequence reader read (("*", strip, pieces, box)) is read whole where the reader's digits differ
    from the cutter's (cut_of(pieces): each cut digit, None for not a digit, and its calibrated confidence),
    none is under the not-a-digit threshold and the product of their probabilities is the higher (a rough
    comparison: the reader's are not calibrated); where the cutter calls some of its ink not a digit at all,
    only when the reader is sure of every digit (READER_SURE: a star or a scribble is not made digits; a
    touching pair, which the classifier learnt is no digit, is).  Else, and without strips, the run is read by
    its pieces: the classifier's digits, with their calibrated confidences and sets."""
    def whole(part) -> bool:
        read = strips[part[1]] if strips is not None else []
        cut = cut_of(part[2]) if read else []
        if not read or [d for d, _, _ in read] == [d for d, _ in cut]:
            return False
        cut_p, read_p = np.array([c for _, c in cut]), np.array([c for _, c, _ in read])
        if any(d is None for d, _ in cut):  # (cut_of's None: under the not-a-digit threshold)
            return bool((read_p >= READER_SURE).all())
        return bool((read_p >= not_a_digit_below).all()
                    and np.log(read_p).sum() > np.log(np.maximum(cut_p, 1e-12)).sum())

    return tuple(q for part in parts for q in (part[2] if _read_whole(part) and not whole(part) else (part,)))


def _read_whole(part) -> bool:
    return not isinstance(part, int) and part[0] == "*"


def _strip_digits(strip: np.ndarray, read: list, box: tuple, calibration) -> list[DigitReading]:
    """The sequence reader's digits of a run, each with its verdict (the model's calibration thresholds) and a
    box: the columns it was read at, brought from the strip back to the run's box in the image."""
    inked = np.flatnonzero(strip.max(0) > 0)
    c0, c1 = (int(inked[0]), int(inked[-1]) + 1) if len(inked) else (0, strip.shape[1])
    x0, y0, x1, y1 = box
    to_image = lambda c: round(x0 + (min(max(c, c0), c1) - c0) * (x1 - x0) / max(c1 - c0, 1))  # noqa: E731
    return [DigitReading(digit, confidence, calibration.verdict(confidence), (to_image(a), y0, to_image(b), y1))
            for digit, confidence, (a, b) in read]


MAX_LEANING = 10  # leaning marks in one number tried as slashes (dd/mm/yyyy has 10 marks): 55 ways at most


def _undo_slashes(parts: tuple, prepared: Prepared, log_top: np.ndarray, probs: np.ndarray,
                  strips: list | None) -> tuple:
    """Leaning marks (layout._is_slash) are slashes only where they make the number a date (d/m, dd/mm/yy,
    dd/mm/yyyy); the others are 1s leaning hard, or digits, and read as such.  A hard-leaning 1 inside a date
    is one of the leaning marks, so every way of taking one or two of them as slashes is tried (a mark the model
    reads as a confident digit other than 1 is never one); of the ways that make a date, the one with the
    most parts wins, then one whose day and month can be a day and a month, then the one whose slashes the
    model is least sure are digits.  A number with another separator (a phone number) is no date."""
    leaning = {k for k, part in enumerate(parts) if _is_separator(part) and part[0] == "/" and part[2] >= 0}
    if not leaning:
        return parts
    as_digits = tuple(part[2] if k in leaning else part for k, part in enumerate(parts))
    if any(_is_separator(part) and part[0] != "/" for part in parts) or len(leaning) > MAX_LEANING:
        return as_digits
    possible = [k for k in sorted(leaning) if not (int(probs[_alt(parts[k], prepared)].argmax()) != 1
                                           and probs[_alt(parts[k], prepared)].max() > 0.9)]
    best, best_key = as_digits, None
    for size in (1, 2):  # a date has one slash or two
        for chosen in itertools.combinations(possible, size):
            taken = tuple(part if k in chosen else part[2] if k in leaning else part for k, part in enumerate(parts))
            groups = _digit_groups(taken, prepared, log_top, probs, strips)
            if _is_date(groups):
                key = (len(groups), _day_and_month(groups), -sum(log_top[_alt(parts[k], prepared)] for k in chosen))
                if best_key is None or key > best_key:
                    best, best_key = taken, key
    return best


def _is_separator(part) -> bool:
    return not isinstance(part, int) and not _read_whole(part)


def _alt(part: tuple, prepared: Prepared) -> int:
    """The candidate digit that reads a separator's mark as a digit."""
    return prepared.readings[part[2]][0][0]


def _digit_groups(parts: tuple, prepared: Prepared, log_top: np.ndarray, probs: np.ndarray,
                  strips: list | None) -> list[list[int]]:
    """The digits between a number's separators: the sequence reader's of a run it reads whole, else the
    classifier's best reading of each piece."""
    groups: list[list[int]] = [[]]
    for part in parts:
        if _is_separator(part):
            groups.append([])
        elif _read_whole(part):
            groups[-1] += [d for d, _, _ in strips[part[1]]]
        else:
            groups[-1] += [int(probs[i].argmax()) for i in best_reading(log_top, prepared.readings[part])]
    return groups


def _is_date(groups: list[list[int]]) -> bool:
    """dd/mm/yyyy, dd/mm/yy (day and month of 1-2 digits, either order), or d/m: the two alone, whose values
    must then be a day and a month (there is no year to say it is a date)."""
    if not all(1 <= len(g) <= 2 for g in groups[:2]) or len(groups) not in (2, 3):
        return False
    return len(groups[2]) in (2, 4) if len(groups) == 3 else _day_and_month(groups)


def _day_and_month(groups: list[list[int]]) -> bool:
    """The first two groups of digits are a day and a month, in either order."""
    day, month = (int("".join(map(str, g)) or 0) for g in groups[:2])
    return 1 <= min(day, month) <= 12 and max(day, month) <= 31


def _union(boxes: list) -> tuple[int, int, int, int]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


# A reading pays this much log-probability for each digit beyond its first: cutting must make the piece about 10%
# more likely read right than fewer digits do.  Chosen with segment.TOO_WIDE on lines of validation digits
# (benchmarks/validation_lines.py): 0 cut some wide single digits in two (lines with wide digits 98.5% against
# 99.0%), 0.2 lost touching lines (43% against 44.5%).
SPLIT_COST = 0.1


def best_reading(log_top: np.ndarray, ways: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """Which candidates of one piece of ink to keep: the reading whose digits are most likely all read right, the
    product of their (calibrated) top probabilities, less SPLIT_COST per extra digit.  A wide 5 read whole
    (0.99) beats its body and flag read apart (0.99 x 0.1, the flag "not a digit"); two touching digits read
    whole look like the side-by-side pairs the model was taught are not digits, and lose to the two read apart.
    log_top: [N] log top probabilities of the sheet's candidates; ways: the piece's readings (Prepared.readings)."""
    return max(ways, key=lambda way: log_top[list(way)].sum() - SPLIT_COST * (len(way) - 1))


def draw_reading(grey: np.ndarray, scale: float, reading: Reading, path: Path) -> None:
    """The image (the analysed copy, brought back to the original size) with a box per line (grey), per number
    (blue, its text above) and per digit: the digit above it ("?" for not a digit), its confidence below
    (green: digit, orange: uncertain, red: not a digit)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB")
    if scale != 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    size = max(12, min(40, min(image.height // 8, *(n.box[3] - n.box[1] for line in reading.lines
                                                   for n in line.numbers)) * 2 // 3 or 12))
    canvas = Image.new("RGB", (image.width, image.height + 2 * size + 8), "white")
    canvas.paste(image, (0, size + 4))
    draw = ImageDraw.Draw(canvas)
    shift = lambda box: (box[0], box[1] + size + 4, box[2] - 1, box[3] + size + 3)  # noqa: E731
    colours = {"digit": (0, 150, 0), "uncertain": (230, 110, 0), "not_a_digit": (210, 0, 0)}
    for line in reading.lines:
        draw.rectangle(shift(line.box), outline=(160, 160, 160), width=1)
        for number in line.numbers:
            draw.rectangle(shift(number.box), outline=(40, 90, 220), width=1)
            for d in number.digits:
                x0, y0, x1, y1 = shift(d.box)
                colour = colours[d.verdict]
                draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
                draw.text(((x0 + x1) / 2, y0 - 2), "?" if d.digit is None else str(d.digit), fill=colour,
                          font_size=size, anchor="md")
                draw.text(((x0 + x1) / 2, y1 + 2), f"{d.confidence:.2f}", fill=colour,
                          font_size=max(9, size * 2 // 3), anchor="ma")
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
        return _predict_in_process(sources, load(), topk, save_preprocessed)
    return _predict_in_workers(sources, load, topk, save_preprocessed, workers)


def _predict_in_process(sources: list[Source], model: Predictor, topk: int,
                        save_preprocessed: str | os.PathLike | None) -> list[Prediction]:
    """predict_paths in this process alone: the sources read, prepared and predicted CHUNK at a time."""
    return [record for start in range(0, len(sources), CHUNK)
            for record in _predicted([source.name for source in sources[start:start + CHUNK]],
                                     _prepare_sources(sources[start:start + CHUNK]), model, topk,
                                     save_preprocessed, False, start)]


def _predict_in_workers(sources: list[Source], load: Callable[[], Predictor], topk: int,
                        save_preprocessed: str | os.PathLike | None, workers: int) -> list[Prediction]:
    """predict_paths with `workers` preparing processes: they prepare AHEAD sub-chunks each ahead of the model,
    which load() gives once they have started, and which runs here on one thread until every image is
    prepared.  The caller's Predictor and PyTorch's thread count are left as they were."""
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
            return _predict_as_prepared(sources, pending, submit, AHEAD * workers, model, threads_before, topk,
                                        save_preprocessed)
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


def _predict_as_prepared(sources: list[Source], pending, submit: Callable[[int], None], ahead: int,
                         model: Predictor, threads_before: int | None, topk: int,
                         save_preprocessed: str | os.PathLike | None) -> list[Prediction]:
    """The records of the sub-chunks in `pending` ((start, future of _prepare_sources), in input order), each
    predicted once prepared; submit(1) queues the next sub-chunk as each is taken, keeping `ahead` in flight."""
    records, cores_free = [], False
    while pending:
        start, job = pending.popleft()
        submit(1)
        if not cores_free and len(pending) < ahead and all(j.done() for _, j in pending):
            # Every image is prepared (the workers are idle): the rest of the model's work gets the cores.
            cores_free = model.backend == "torch"
            if cores_free:
                import torch

                torch.set_num_threads(threads_before)
        names = [source.name for source in sources[start:start + SUB_CHUNK]]
        records += _predicted(names, job.result(), model, topk, save_preprocessed, False, start)
    return records


def _torch_threads(predictor: Predictor) -> int | None:
    if predictor.backend != "torch":
        return None
    import torch  # already loaded by the torch backend

    return torch.get_num_threads()


def read_paths(specs: list[str], predictor: Predictor, annotate: str | os.PathLike | None = None,
               digits_only: bool = False, reader=None) -> list[Reading]:
    """`digitrec read`: paths, folders, globs or '-' -> one Reading per image, in order."""
    return _in_chunks(specs, lambda items, first, several: read_images(items, predictor, annotate, first, several,
                                                                        digits_only, reader),
                      lambda name, error, code: Reading.failed(name, DigitrecError(error, code)))
